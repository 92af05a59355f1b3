"""``gpupass gpu status | holders | claim | release``: the dGPU between the host and the VM."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...modelfiles import chosen_model
from .. import options

FIXTURE = "read sysfs and procfs under DIR (a fixture tree)"


def register(commands: argparse._SubParsersAction) -> None:
    parser = options.add_command(
        commands, "gpu", run, "the dGPU between the host and the VM: status | holders | claim | release"
    )
    gpu_commands = parser.add_subparsers(dest="gpu_command", required=True, metavar="status | holders")
    pp = gpu_commands.add_parser("status", help="each dGPU function's driver, power state and device nodes")
    options.add_root(pp, FIXTURE)
    pp = gpu_commands.add_parser("holders", help="every process and kernel module holding the dGPU's functions")
    options.add_root(pp, FIXTURE)
    for pp in gpu_commands.choices.values():
        options.add_model(pp)


def run(args: argparse.Namespace) -> int:
    from .. import machine
    from . import holders, status

    model = chosen_model(args.model)
    root = Path(args.root)
    snapshot = machine.read(root, rebar=False, processes=False)
    found = holders.read(model, snapshot, root)
    lines = holders.report(found) if args.gpu_command == "holders" else status.report(model, snapshot, found)
    print("\n".join(lines))
    return 0
