"""``gpupass doctor``: one line per check, ok / warn / fail, with the fix."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...modelfiles import chosen_model
from .. import options


def register(commands: argparse._SubParsersAction) -> None:
    parser = options.add_command(
        commands, "doctor", run, "is passthrough set up, and does the dGPU sleep while the VM is off? (ok/warn/fail)"
    )
    options.add_model(parser)
    parser.add_argument("--vm", metavar="NAME", help="the libvirt domain to check (default: the model's vm.name)")
    options.add_connect(parser)
    parser.add_argument("--json", action="store_true", help="the findings as JSON, for scripts")
    options.add_root(parser)


def run(args: argparse.Namespace) -> int:
    from .diagnose import cli  # here: every gpupass command registers doctor

    return cli(chosen_model(args.model), Path(args.root), vm_name=args.vm, uri=args.connect, as_json=args.json)
