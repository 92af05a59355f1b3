"""``gpupass mode [boot|on-demand]``: show or switch when the dGPU goes to vfio-pci."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ... import paths
from ...errors import GpupassError, ToolError
from ...model import MODES
from ...modelfiles import installed_model
from .. import command, options


def register(commands: argparse._SubParsersAction) -> None:
    parser = options.add_command(
        commands,
        "mode",
        run,
        "show the mode, or (root) switch it: boot (vfio-pci takes the dGPU at boot) or on-demand"
        " (the host keeps it until the VM starts); effective after a reboot",
    )
    parser.add_argument("mode", nargs="?", choices=MODES, help="the mode to switch to (none: show the current one)")
    options.add_root(parser, "read and write gpupass's files under DIR (a fixture tree); regenerates nothing")


def run(args: argparse.Namespace) -> int:
    from . import state, switch

    root = Path(args.root)
    live = root == Path("/")
    if args.mode and live and os.geteuid() != 0:
        raise GpupassError(f"gpupass mode {args.mode} writes to /etc and {paths.STATE_DIR}: run it as root (sudo)")
    model = installed_model(root)
    was = state.current(model, root)
    if not args.mode:
        print(was)
        return 0
    written = switch.apply(switch.files(model, args.mode, root))
    for path in written:
        print(f"wrote {Path('/') / path.relative_to(root)}", flush=True)
    if live:
        regenerate(model.package, " ".join(model.kernel_args_for(args.mode)))
    print(f"gpupass mode: {args.mode} (was {was}); effective after a reboot")
    return 0


def regenerate(package: str, kernel_args: str) -> None:
    """grub.cfg and the newest kernel's initramfs, by the maintainer scripts' own functions."""
    script = (
        f'. {paths.MAINTSCRIPT_FUNCTIONS}; gpupass_update_grub add "$1" && gpupass_update_initramfs'
        ' && gpupass_reboot_required "$2"'
    )
    try:
        command.stream(["sh", "-c", script, "gpupass mode", kernel_args, package], "dash")
    except ToolError as e:
        raise GpupassError(
            f"the mode's files are written, but regenerating grub.cfg or the initramfs failed ({e})",
            hint="fix what it printed above, then run the same gpupass mode command again",
        ) from e
