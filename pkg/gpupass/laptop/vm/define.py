"""``gpupass vm define``: the package's own domain, with the user's name, disk and ISOs.

Standard library only; libvirt is reached through ``libvirtconn``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from ... import paths
from ...errors import GpupassError
from ...model import Model
from .. import command
from . import libvirtconn, xmledit
from .looking_glass import LookingGlass
from .looking_glass import apply as apply_looking_glass
from .pieces import NATIVE_ACPI_TABLE_VERSION, Context, acpi_table_paths, piece_battery_table, piece_emulator_pinning
from .xmledit import Editor

IMAGES_DIR = paths.LIBVIRT_IMAGES
# The folders of the virtio-win drivers ISO that Windows 11 (amd64) setup loads.
VIRTIO_WIN_STORAGE = "viostor\\w11\\amd64"
VIRTIO_WIN_NETWORK = "NetKVM\\w11\\amd64"


def create_disk(path: Path, size_gib: int) -> None:
    if path.exists():
        raise GpupassError(f"{path} exists already; not overwriting it", hint=f"use it with --disk {path}")
    command.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{size_gib}G"], "qemu-utils")


def define_xml(
    template: str,
    model: Model,
    *,
    name: str,
    disk: Path,
    iso: Path | None = None,
    virtio_win: Path | None = None,
    native_acpi_table: bool = False,
    host_cpus: Iterable[int] = (),
    looking_glass: LookingGlass | None = None,
    notices: list[str] | None = None,
) -> str:
    """The package's domain with the user's name, disk, installer ISO and drivers ISO.

    The disk is on SATA and the NIC an e1000e, which Windows setup drives without extra
    drivers; with the virtio-win drivers ISO both are virtio and the ISO a second CD-ROM.
    Boot order: the disk, then the installer. OVMF skips a disk with nothing to boot (a new
    one) and starts the installer; once setup has written its boot loader to the disk,
    setup's own reboots land there (see DESIGN.md).
    """
    root = xmledit.parse(template)
    editor = Editor(root, journal=False)  # the package's own domain: nothing to undo
    editor.set_text(editor.ensure("name"), "name", name)
    disk_path = "devices/disk[@type='file'][@device='disk']"
    disk_element = xmledit.find(root, disk_path)
    if disk_element is None:
        disk_element = editor.ensure(disk_path, before=("controller", "interface", "graphics"))
        ET.SubElement(disk_element, "driver", name="qemu", type="qcow2", discard="unmap")
        ET.SubElement(disk_element, "target", dev="sda", bus="sata")
    editor.ensure(f"{disk_path}/source").set("file", str(disk))
    sata = (f"sd{letter}" for letter in "abcdefghijklmnopqrstuvwxyz")
    target = editor.ensure(f"{disk_path}/target")
    if virtio_win is not None:
        target.attrib.update(dev="vda", bus="virtio")
        for nic in root.iterfind("devices/interface"):
            model_element = nic.find("model")
            if model_element is None:
                model_element = ET.SubElement(nic, "model")
            model_element.set("type", "virtio")
    elif target.get("bus") == "sata":
        next(sata)  # the disk's sda
    anchor = list(root.find("devices")).index(disk_element) + 1
    for number, image in enumerate(i for i in (iso, virtio_win) if i is not None):
        cdrom = ET.Element("disk", type="file", device="cdrom")
        ET.SubElement(cdrom, "driver", name="qemu", type="raw")
        ET.SubElement(cdrom, "source", file=str(image))
        ET.SubElement(cdrom, "target", dev=next(sata), bus="sata")
        ET.SubElement(cdrom, "readonly")
        root.find("devices").insert(anchor + number, cdrom)
    if iso is not None:
        # After the disk (os/boot dev="hd" in the template): libvirt gives the first disk
        # bootindex 1 and the first CD-ROM, the installer, bootindex 2.
        editor.ensure("os/boot[@dev='cdrom']", before=("smbios",))
    ctx = Context(model, native_acpi_table=native_acpi_table, host_cpus=tuple(host_cpus))
    if native_acpi_table:
        commandline = root.find("qemu:commandline", xmledit.NAMESPACES)
        argument = acpi_table_paths(ctx.aml)[1]
        pair = editor.find_pair(commandline, "qemu:arg", "-acpitable", argument) if commandline else None
        if commandline is not None and pair is not None:
            children = list(commandline)
            commandline.remove(children[children.index(pair) - 1])
            commandline.remove(pair)
        piece_battery_table(editor, ctx)
    piece_emulator_pinning(editor, ctx)
    if looking_glass is not None:
        apply_looking_glass(editor, looking_glass, notices if notices is not None else [])
    return xmledit.to_text(root)


def define(
    conn,
    model: Model,
    *,
    name: str | None = None,
    disk: Path | None = None,
    disk_size_gib: int | None = None,
    iso: Path | None = None,
    virtio_win: Path | None = None,
    template: Path = paths.INSTALLED_DOMAIN,
    images_dir: Path = IMAGES_DIR,
    host_cpus: Iterable[int] | None = None,
    looking_glass: LookingGlass | None = None,
) -> list[str]:
    name = name or model.vm.name
    if libvirtconn.exists(conn, name):
        raise GpupassError(
            f"a domain named {name} exists already",
            hint=f"choose another name, or add passthrough to it: gpupass vm attach {name}",
        )
    try:
        text = template.read_text(encoding="utf-8")
    except OSError as e:
        raise GpupassError(f"{template}: cannot be read: {e.strerror}", hint=f"reinstall {model.package}") from None
    if iso is not None and not iso.is_file():
        raise GpupassError(f"{iso}: no such file (expected the Windows installer ISO)")
    if virtio_win is not None and not virtio_win.is_file():
        raise GpupassError(f"{virtio_win}: no such file (expected the virtio-win drivers ISO)")
    lines: list[str] = []
    notices: list[str] = []
    if disk is None:
        disk = images_dir / f"{name}.qcow2"
        if disk_size_gib is not None:
            create_disk(disk, disk_size_gib)
            lines.append(f"{disk}: created, {disk_size_gib} GiB (qcow2)")
        elif not disk.exists():
            raise GpupassError(f"{disk}: no such disk image", hint="pass --disk PATH, or --disk-size GiB to create it")
    elif not disk.exists():
        raise GpupassError(f"{disk}: no such disk image", hint="pass an existing image, or --disk-size GiB instead")
    xml = define_xml(
        text,
        model,
        name=name,
        disk=disk.resolve(),
        iso=iso.resolve() if iso else None,
        virtio_win=virtio_win.resolve() if virtio_win else None,
        native_acpi_table=libvirtconn.version(conn) >= NATIVE_ACPI_TABLE_VERSION,
        host_cpus=libvirtconn.host_cpus(conn) if host_cpus is None else host_cpus,
        looking_glass=looking_glass,
        notices=notices,
    )
    try:
        libvirtconn.define(conn, xml)
    except GpupassError:
        if disk_size_gib is not None:
            disk.unlink(missing_ok=True)  # created for this domain only
        raise
    lines.append(f"{name}: defined (start it with: virsh start {name})")
    lines += [f"note: {n}" for n in notices]
    if virtio_win is not None:
        lines.append(
            f'Windows setup sees the disk only with the virtio storage driver: at "Where do you want to install'
            f' Windows?" choose Load driver, then the folder {VIRTIO_WIN_STORAGE} on the virtio-win CD'
            f" (the network driver is in {VIRTIO_WIN_NETWORK})"
        )
    cdroms = [t.get("dev") for t in ET.fromstring(xml).iterfind("devices/disk[@device='cdrom']/target")]
    if cdroms:
        eject = "; ".join(f"virsh change-media {name} {dev} --eject --config" for dev in cdroms)
        lines.append(f"after Windows is installed, take the ISOs out: {eject}")
    return lines
