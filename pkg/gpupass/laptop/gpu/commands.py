"""``gpupass gpu status | holders | claim | release``: the dGPU between the host and the VM."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ...errors import GpupassError
from ...modelfiles import chosen_model
from .. import options

FIXTURE = "read sysfs and procfs under DIR (a fixture tree)"


def register(commands: argparse._SubParsersAction) -> None:
    parser = options.add_command(
        commands, "gpu", run, "the dGPU between the host and the VM: status | holders | claim | release"
    )
    gpu_commands = parser.add_subparsers(
        dest="gpu_command", required=True, metavar="status | holders | claim | release"
    )
    pp = gpu_commands.add_parser("status", help="each dGPU function's driver, power state and device nodes")
    options.add_root(pp, FIXTURE)
    pp = gpu_commands.add_parser("holders", help="every process and kernel module holding the dGPU's functions")
    options.add_root(pp, FIXTURE)
    pp = gpu_commands.add_parser(
        "claim", help="(root) hand the dGPU's functions to vfio-pci, refusing while anything holds them"
    )
    options.add_root(pp, "read and write sysfs under DIR (a fixture tree)")
    pp = gpu_commands.add_parser(
        "release", help="(root) give the dGPU's functions back to the host drivers, refusing while the VM holds them"
    )
    options.add_root(pp, "read and write sysfs under DIR (a fixture tree)")
    for pp in gpu_commands.choices.values():
        options.add_model(pp)
    for name in ("claim", "release"):
        gpu_commands.choices[name].add_argument(
            "--for-domain",
            action="store_true",
            help="(the libvirt hook) read the domain's XML on stdin; act only in on-demand mode and for a"
            " domain that passes the model's dGPU through",
        )


def run(args: argparse.Namespace) -> int:
    from .. import machine
    from . import holders, hook, status, switch

    model = chosen_model(args.model)
    root = Path(args.root)
    if getattr(args, "for_domain", False) and not hook.applies(model, root, sys.stdin.read()):
        return 0
    if args.gpu_command in (switch.CLAIM, switch.RELEASE) and root == Path("/") and os.geteuid() != 0:
        raise GpupassError(f"gpupass gpu {args.gpu_command} writes to sysfs: run it as root (sudo)")
    snapshot = machine.read(root, rebar=False, processes=False)
    found = holders.read(model, snapshot, root)
    if args.gpu_command == "holders":
        lines = holders.report(found)
    elif args.gpu_command == "status":
        lines = status.report(model, snapshot, found)
    else:
        decision = switch.decide(args.gpu_command, model, snapshot, found)
        lines = switch.execute(decision, switch.SystemWriter(root))
    print("\n".join(lines))
    return 0
