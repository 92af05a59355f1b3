"""``gpupass power apply | status`` (and ``record``, run by the libvirt hook)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ... import paths
from ...modelfiles import chosen_model
from .. import options


def register(commands: argparse._SubParsersAction) -> None:
    parser = options.add_command(
        commands, "power", run, "the VM follows the power source; what the dGPU and the battery do: apply | status"
    )
    power_commands = parser.add_subparsers(dest="power_command", required=True, metavar="apply | status")
    fixture = "read sysfs and gpupass's files under DIR (a fixture tree)"
    pp = power_commands.add_parser("apply", help=f"do what {paths.POWER_CONF} asks for the power source now")
    pp.add_argument("--config", metavar="FILE", help=f"settings (default: {paths.POWER_CONF})")
    options.add_root(pp, fixture)
    pp = power_commands.add_parser("status", help="AC or battery, the draw, the VM, the dGPU's power states")
    pp.add_argument("--json", action="store_true", help="as JSON, for scripts")
    options.add_root(pp, fixture)
    pp = power_commands.add_parser("record")  # run by the libvirt hook on release; not in --help
    pp.add_argument("domain")
    pp.add_argument("--delay", type=float, default=5.0, help=argparse.SUPPRESS)
    options.add_root(pp)
    for name, pp in power_commands.choices.items():
        options.add_connect(pp)
        if name != "apply":
            options.add_model(pp)


def run(args: argparse.Namespace) -> int:
    from .apply import cli_apply  # here: every gpupass command registers power
    from .status import cli_status, record

    root = Path(args.root)
    if args.power_command == "apply":
        return cli_apply(root, Path(args.config) if args.config else None, args.connect)
    model = chosen_model(args.model)
    if args.power_command == "status":
        return cli_status(model, root, args.connect, args.json)
    record(model, args.domain, root, delay=args.delay)
    return 0
