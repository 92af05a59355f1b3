"""``gpupass check``, ``gpupass probe``, ``gpupass setup`` and ``gpupass report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...modelfiles import chosen_model
from .. import options


def register(commands: argparse._SubParsersAction) -> None:
    parser = options.add_command(
        commands, "check", run_check, "pre-flight checks: is this the laptop the model is for?"
    )
    options.add_model(parser)
    options.add_root(parser)
    parser = options.add_command(
        commands, "probe", run_probe, "read this laptop and print a model for it (TOML, each value with its source)"
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write the model to FILE instead of stdout")
    parser.add_argument("--json", action="store_true", help="JSON for tools: the model, each value's source, warnings")
    options.add_root(parser)
    parser = options.add_command(
        commands,
        "setup",
        run_setup,
        "set this laptop up: install its published model package, or build one from what probe reads (root)",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask before changing anything (for scripts)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be done and change nothing")
    options.add_root(parser)
    parser = options.add_command(
        commands, "report", run_report, "what a maintainer needs to confirm this laptop's model, to paste into an issue"
    )
    parser.add_argument("--out", metavar="FILE", help="write the report to FILE (default: stdout)")
    parser.add_argument("--json", action="store_true", help="the same facts as JSON")
    options.add_model(parser)
    parser.add_argument("--vm", metavar="NAME", help="the libvirt domain doctor checks (default: the model's vm.name)")
    options.add_connect(parser)
    options.add_root(parser)


def run_check(args: argparse.Namespace) -> int:
    from .. import preflight  # here: every gpupass command registers check and probe

    return preflight.cli(chosen_model(args.model), Path(args.root))


def run_probe(args: argparse.Namespace) -> int:
    from .. import machine
    from . import probe

    probed = probe.probe(machine.read(Path(args.root), processes=False))  # refused: nothing is written
    text = probed.json() if args.json else probed.toml()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output} (proposed model id: {probed.model_id})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    for warning in probed.warnings:
        print(f"gpupass: warning: {warning}", file=sys.stderr)
    return 0


def run_setup(args: argparse.Namespace) -> int:
    from . import setup

    return setup.run(Path(args.root), yes=args.yes, dry_run=args.dry_run)


def run_report(args: argparse.Namespace) -> int:
    from . import report

    root = Path(args.root)
    report.check_root(root)  # a wrong --root first: the model alone would not tell
    return report.cli(
        chosen_model(args.model), root, out_file=args.out, as_json=args.json, vm_name=args.vm, uri=args.connect
    )
