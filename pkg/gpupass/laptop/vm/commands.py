"""``gpupass vm define | attach | detach``: the passthrough pieces into a libvirt domain.

Standard library only; libvirt is reached through ``libvirtconn``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ... import paths
from ...model import Model
from ...modelfiles import chosen_model
from .. import machine, options
from .looking_glass import LookingGlass


def register(commands: argparse._SubParsersAction) -> None:
    parser = options.add_command(
        commands, "vm", run, "put the passthrough pieces into a libvirt domain: define | attach | detach"
    )
    options.add_model(parser)
    options.add_connect(parser)
    parser.add_argument("--record", default=str(paths.VM_RECORD), help=argparse.SUPPRESS)  # for gpupass power
    vm_commands = parser.add_subparsers(dest="vm_command", required=True, metavar="define | attach | detach")
    vp = vm_commands.add_parser("define", help="define the model's domain with your disk and installer ISO")
    vp.add_argument("name", nargs="?", help="domain name (default: the model's vm.name)")
    disk = vp.add_mutually_exclusive_group()
    disk.add_argument("--disk", metavar="PATH", help="an existing disk image")
    disk.add_argument("--disk-size", metavar="GiB", type=int, help="create a qcow2 disk of this size")
    vp.add_argument("--iso", metavar="FILE", help="the Windows installer ISO, as a CD-ROM")
    vp.add_argument(
        "--virtio-win",
        metavar="ISO",
        help="the virtio-win drivers ISO: disk and NIC become virtio, the ISO a second CD-ROM",
    )
    _looking_glass_option(vp)
    vp.add_argument("--domain-xml", default=str(paths.INSTALLED_DOMAIN), help=argparse.SUPPRESS)
    vp.add_argument("--images", default=str(paths.LIBVIRT_IMAGES), help=argparse.SUPPRESS)
    for name, what in (
        ("attach", "add exactly what passthrough needs to an existing domain (shut off)"),
        ("detach", "remove exactly what attach added"),
    ):
        vp = vm_commands.add_parser(name, help=what, description=what)
        vp.add_argument("name", help="the libvirt domain")
        vp.add_argument("--dry-run", action="store_true", help="print the change as a unified diff, change nothing")
        if name == "attach":
            _looking_glass_option(vp)


def _looking_glass_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--looking-glass",
        nargs="?",
        const="panel",
        metavar="WxH",
        help="the VM's picture in a window on this laptop (Looking Glass): shared memory sized for the"
        " model's vm.panel, or for WxH; SPICE input with virtio mouse and keyboard, no USB tablet",
    )


def run(args: argparse.Namespace) -> int:
    return cli(args, chosen_model(args.model))


def cli(args: argparse.Namespace, model: Model) -> int:
    """``gpupass vm define | attach | detach``, as ``register`` parsed them."""
    from . import attach, define, libvirtconn, record  # here: every gpupass command registers vm

    lg = LookingGlass.asked(getattr(args, "looking_glass", None), model, machine.kvmfr_devices())
    conn = libvirtconn.connect(args.connect)
    try:
        if args.vm_command == "define":
            lines = define.define(
                conn,
                model,
                name=args.name,
                disk=Path(args.disk) if args.disk else None,
                disk_size_gib=args.disk_size,
                iso=Path(args.iso) if args.iso else None,
                virtio_win=Path(args.virtio_win) if args.virtio_win else None,
                template=Path(args.domain_xml),
                images_dir=Path(args.images),
                looking_glass=lg,
            )
            record.remember_domain(args.name or model.vm.name, Path(args.record))
        elif args.vm_command == "attach":
            lines = attach.attach(conn, args.name, model, dry_run=args.dry_run, looking_glass=lg).lines(
                "passthrough attached", args.dry_run
            )
            if not args.dry_run:  # the domain gpupass power acts on, unless power.conf names one
                record.remember_domain(args.name, Path(args.record))
        else:
            lines = attach.detach(conn, args.name, dry_run=args.dry_run).lines("passthrough detached", args.dry_run)
    finally:
        conn.close()
    print("\n".join(lines))
    return 0
