"""Looking Glass: the VM's frames in a window on the laptop's own screen, through shared memory.

What its documentation for release B7 (the current release: tag B7, commit 27fe47cb,
doc/install_libvirt.rst, doc/ivshmem_shm.rst, doc/ivshmem_kvmfr.rst) asks of the domain:

- an IVSHMEM device (``ivshmem-plain``, PCI 1af4:1110, the memory is its BAR2) sized for the
  largest frame: width × height × 4 bytes (8 for HDR) × 2 frames, + 10 MiB, up to the next
  power of two in MiB. Either libvirt's own ``<shmem>`` (QEMU maps /dev/shm/looking-glass), or,
  where the ``kvmfr`` module is loaded, /dev/kvmfr0 through a memory-backend-file in
  ``<qemu:commandline>`` (JSON syntax: QEMU >= 6.2 and libvirt >= 7.9, every release here);
- SPICE for keyboard and mouse: a ``<graphics type='spice'>``, the video model ``vga``, no
  ``<input type='tablet'>``, a virtio mouse and a virtio keyboard.

One piece (``apply``), journaled like the passthrough pieces so that ``vm detach`` takes out
exactly what it added. Standard library only (laptop side).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ... import paths
from ...errors import GpupassError
from ...model import Model
from .xmledit import NAMESPACES, Editor, find, quote

RELEASE = "B7"  # the release whose documentation this follows; client and guest side must match it
NAME = paths.LOOKING_GLASS_SHM.name  # libvirt's <shmem name> is the file's name in /dev/shm
SHM_FILE = str(paths.LOOKING_GLASS_SHM)
KVMFR_DEVICE = str(paths.KVMFR_DEVICE)
MIB = 1 << 20
SHMEM_PATH = f"devices/shmem[@name='{NAME}']"
SPICE_PATH = "devices/graphics[@type='spice']"
INPUTS = ("devices/input[@type='mouse'][@bus='virtio']", "devices/input[@type='keyboard'][@bus='virtio']")
TABLET_PATH = "devices/input[@type='tablet']"
# Where libvirt writes these among <devices>' children (a readable diff; libvirt re-sorts anyway).
LATER_DEVICES = ("hub", "redirdev", "redirfilter", "smartcard", "watchdog", "memballoon", "rng", "panic", "shmem")
# The video attributes only QXL takes (libvirt: "ram attribute only supported for type of qxl").
QXL_ONLY = ("ram", "vgamem")


def size_mib(width: int, height: int, hdr: bool = False) -> int:
    """Looking Glass's IVSHMEM size for a ``width`` × ``height`` frame, in MiB (a power of two)."""
    frames = width * height * (8 if hdr else 4) * 2
    needed = frames / MIB + 10
    size = 1
    while size < needed:
        size *= 2
    return size


def resolution(text: str, where: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` as (width, height); ``where`` names the option or field in the message."""
    match = re.fullmatch(r"([1-9][0-9]{2,4})x([1-9][0-9]{2,4})", text)
    if not match:
        raise GpupassError(f"{where}: {text!r} is not a resolution (expected WIDTHxHEIGHT, e.g. 1920x1080)")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class LookingGlass:
    """What ``--looking-glass`` asks for: the frame size, and which shared memory carries it."""

    width: int
    height: int
    kvmfr: bool = False  # /dev/kvmfr0 (the module is loaded) instead of /dev/shm/looking-glass

    @property
    def size_mib(self) -> int:
        return size_mib(self.width, self.height)

    @property
    def file(self) -> str:
        return KVMFR_DEVICE if self.kvmfr else SHM_FILE

    @classmethod
    def asked(cls, option: str | None, model: Model, kvmfr_devices: tuple[str, ...]) -> LookingGlass | None:
        """From ``--looking-glass [WxH]`` (``option`` "panel": the model's vm.panel) and the
        machine's kvmfr devices; None without the option."""
        if option is None:
            return None
        width, height = model.vm.panel_size if option == "panel" else resolution(option, "--looking-glass")
        return cls(width, height, kvmfr="kvmfr0" in kvmfr_devices)


def kvmfr_arguments(lg: LookingGlass) -> tuple[tuple[str, str], ...]:
    """The ``-device``/``-object`` pairs Looking Glass's kvmfr page gives (JSON syntax)."""
    device = {"driver": "ivshmem-plain", "id": f"shmem-{NAME}", "memdev": NAME}
    backend = {
        "qom-type": "memory-backend-file",
        "id": NAME,
        "mem-path": KVMFR_DEVICE,
        "size": lg.size_mib * MIB,
        "share": True,
    }
    return tuple(
        (option, json.dumps(value, separators=(",", ":")))
        for option, value in (("-device", device), ("-object", backend))
    )


def _kvmfr_argument(root: ET.Element, option: str, value: str) -> ET.Element | None:
    """The domain's argument after ``option`` with the same JSON id as ``value`` (another size)."""
    args = list(root.iterfind("qemu:commandline/qemu:arg", NAMESPACES))
    wanted = json.loads(value)["id"]
    for first, second in zip(args, args[1:], strict=False):
        if first.get("value") == option and second.get("value", "").startswith("{"):
            try:
                if json.loads(second.get("value", ""))["id"] == wanted:
                    return second
            except (ValueError, KeyError, TypeError):
                continue
    return None


def _kvmfr(editor: Editor, lg: LookingGlass, notices: list[str]) -> None:
    editor.remove(SHMEM_PATH)  # a shared memory file from before the module was loaded
    for option, value in kvmfr_arguments(lg):
        arg = _kvmfr_argument(editor.root, option, value)
        if arg is None:
            editor.add_pair("qemu:commandline", "qemu:arg", option, value)
        elif arg.get("value") != value:  # another size: found again by its new value
            editor.set(arg, f"qemu:commandline/qemu:arg[@value='{quote(value)}']", "value", value)
    notices.append(
        f"kvmfr must be loaded with static_size_mb={lg.size_mib} (options kvmfr static_size_mb={lg.size_mib}"
        f" in /etc/modprobe.d/kvmfr.conf), and {KVMFR_DEVICE} be in cgroup_device_acl in"
        " /etc/libvirt/qemu.conf (gpupass edits no file of libvirt's)"
    )


def apply(editor: Editor, lg: LookingGlass, notices: list[str]) -> None:
    """Put Looking Glass's pieces into the domain (journaled by ``editor``)."""
    already = in_domain(editor.root)
    if not lg.kvmfr and already is not None and already.file == KVMFR_DEVICE:
        # Made while kvmfr was loaded: a shared memory file besides would be a second device.
        lg = LookingGlass(lg.width, lg.height, kvmfr=True)
        notices.append(f"the domain maps {KVMFR_DEVICE}, and kvmfr is not loaded now: load it before starting the VM")
    notices.append(
        f"Looking Glass: {lg.size_mib} MiB of shared memory ({lg.file}) for {lg.width}x{lg.height};"
        f" the guest's Looking Glass and the client on this laptop must both be release {RELEASE}"
        " (README: Looking Glass)"
    )
    if lg.kvmfr:
        _kvmfr(editor, lg, notices)
    else:
        editor.ensure(SHMEM_PATH, before=LATER_DEVICES)
        model = editor.ensure(f"{SHMEM_PATH}/model")
        editor.set(model, f"{SHMEM_PATH}/model", "type", "ivshmem-plain")
        size = editor.ensure(f"{SHMEM_PATH}/size")
        editor.set(size, f"{SHMEM_PATH}/size", "unit", "M")
        editor.set_text(size, f"{SHMEM_PATH}/size", str(lg.size_mib))
    if find(editor.root, SPICE_PATH) is None:
        spice = editor.ensure(SPICE_PATH, before=("sound", "audio", "video", "hostdev", *LATER_DEVICES))
        spice.set("autoport", "yes")
        ET.SubElement(spice, "listen", type="address", address="127.0.0.1")
    video = find(editor.root, "devices/video/model")
    if video is not None and video.get("type") != "vga":
        editor.set(video, "devices/video/model", "type", "vga")
        for attr in QXL_ONLY:
            editor.set(video, "devices/video/model", attr, None)
    while find(editor.root, TABLET_PATH) is not None:
        editor.remove(TABLET_PATH)
    for path in INPUTS:
        editor.ensure(path, before=("tpm", "graphics", "sound", "audio", "video", "hostdev", *LATER_DEVICES))


@dataclass(frozen=True)
class InDomain:
    """The Looking Glass shared memory a domain asks for: its file and size in bytes."""

    file: str
    size: int


def in_domain(root: ET.Element) -> InDomain | None:
    """What ``apply`` (or a user following the same docs) put in the domain; None: no Looking Glass."""
    shmem = find(root, SHMEM_PATH)
    if shmem is not None:
        size = shmem.find("size")
        units = {"b": 1, "bytes": 1, "k": 1 << 10, "kib": 1 << 10, "m": MIB, "mib": MIB, "g": 1 << 30, "gib": 1 << 30}
        number = int((size.text or "0").strip()) if size is not None else 0
        unit = units.get((size.get("unit", "b") if size is not None else "b").lower(), 1)
        return InDomain(SHM_FILE, number * unit)
    for arg in root.iterfind("qemu:commandline/qemu:arg", NAMESPACES):
        value = arg.get("value", "")
        if value.startswith("{") and KVMFR_DEVICE in value:
            try:
                backend = json.loads(value)
            except ValueError:
                continue
            return InDomain(backend.get("mem-path", KVMFR_DEVICE), int(backend.get("size", 0)))
    return None
