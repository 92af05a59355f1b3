"""The GPU's vBIOS: read it once from the ROM BAR (or take the user's file), validate it, store it.

A laptop dGPU has no ROM of its own, so the guest only sees a vBIOS if libvirt hands it one
(``<rom file=.../>``). A wrong or partial file there fails in the guest, far from its cause;
so nothing reaches the final path unless it is a complete PCI expansion ROM chain whose first
image names this GPU, and it gets there atomically. Reading the ROM BAR may need the GPU
unbound from its driver; it is bound back whatever happens (errors, Ctrl-C, SIGTERM), because
an unbound GPU stays unusable until the next boot.

Runs on the laptop from /usr/bin/gpupass: standard library only.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import GpupassError
from ..model import Model
from . import romtable

ROM_SIGNATURE = b"\x55\xaa"
PCIR_SIGNATURE = b"PCIR"
PCIR_POINTER = 0x18  # 16-bit LE offset of the PCIR structure, from the image start
ROM_HEADER_SIZE = PCIR_POINTER + 2
PCIR_SIZE = 0x18  # the fields read here; PCI 3.0 structures are longer, never shorter
IMAGE_UNIT = 512
LAST_IMAGE = 0x80
LEGACY_X86 = 0x00
CODE_TYPES = {
    LEGACY_X86: "x86 PC-AT legacy",
    0x01: "Open Firmware",
    0x02: "HP PA RISC",
    0x03: "EFI",
    0x70: "NVIDIA",
}

IMPORT_HINT = (
    "many Optimus laptops do not expose the vBIOS through the ROM BAR; extract the GPU's ROM"
    " from the laptop's BIOS update and install it with: gpupass vbios import FILE"
)


class RomError(GpupassError):
    """The ROM cannot be read, is not a valid ROM for this GPU, or cannot be stored."""


# Validation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RomImage:
    """One image of the chain, as its PCIR structure describes it; ``offset`` is in the input."""

    offset: int
    size: int
    vendor: int
    device: int
    code_type: int
    last: bool

    @property
    def id(self) -> str:
        return f"{self.vendor:04x}:{self.device:04x}"

    @property
    def code_name(self) -> str:
        return CODE_TYPES.get(self.code_type, "unknown")


@dataclass(frozen=True)
class RomReport:
    """A validated ROM: where it was found in the input, its images, and the bytes to store.

    ``rom`` runs from the first 55 AA to the end of the last image. Bytes after the last
    image are cut: no image claims them, so they are padding of the ROM BAR or the rest of
    a BIOS update, and nothing in them was validated.
    """

    source: str
    images: tuple[RomImage, ...]
    leading: int  # bytes cut before the first 55 AA
    trailing: int  # bytes cut after the last image
    rom: bytes = field(repr=False)

    def describe(self) -> list[str]:
        plural = "" if len(self.images) == 1 else "s"
        lines = [
            f"{self.source}: valid PCI expansion ROM for {self.images[0].id},"
            f" {len(self.images)} image{plural}, {len(self.rom)} bytes"
        ]
        if self.leading:
            lines.append(f"  cut {self.leading} bytes before the first 55 AA")
        for number, image in enumerate(self.images, start=1):
            details = [f"{image.code_name} (code type 0x{image.code_type:02x})", image.id, f"{image.size} bytes"]
            if image.code_type == LEGACY_X86:
                details.append("checksum ok")
            if image.last:
                details.append("last image")
            lines.append(f"  image {number} at 0x{image.offset:x}: {', '.join(details)}")
        if self.trailing:
            lines.append(f"  cut {self.trailing} bytes after the last image (claimed by no image, not stored)")
        return lines


def validate(data: bytes, expected_vendor: int, expected_device: int, source: str = "ROM") -> RomReport:
    """Check ``data`` is a PCI expansion ROM chain for the GPU; ``source`` names it in messages.

    Structural damage stops the walk (nothing after it can be located); a wrong id or a bad
    checksum does not, so every such problem is reported at once.
    """
    start = data.find(ROM_SIGNATURE)
    if start < 0:
        raise RomError(f"{source}: no 55 AA signature in {len(data)} bytes (not a PCI expansion ROM)")
    problems: list[str] = []
    images: list[RomImage] = []
    offset = start
    while True:
        number = len(images) + 1
        try:
            image = _read_image(data, offset, number, source)
        except RomError as e:
            raise RomError([*problems, *e.problems]) from None
        images.append(image)
        problems.extend(_image_problems(data, image, number, source, expected_vendor, expected_device))
        offset += image.size
        if image.last:
            break
        if offset >= len(data):
            problems.append(
                f"{source}: image {number} at 0x{image.offset:x} is not marked as the last image, but the data"
                " ends after it (no last-image flag in the chain)"
            )
            raise RomError(problems)
    if problems:
        raise RomError(problems)
    return RomReport(source, tuple(images), leading=start, trailing=len(data) - offset, rom=data[start:offset])


def _read_image(data: bytes, offset: int, number: int, source: str) -> RomImage:
    """Locate and decode one image's PCIR structure, or raise what makes the chain unusable."""
    where = f"{source}: image {number} at 0x{offset:x}"
    found = data[offset : offset + len(ROM_SIGNATURE)]
    if found != ROM_SIGNATURE:
        raise RomError(
            f"{where}: no 55 AA signature (found {found.hex(' ') or 'the end of the data'}),"
            f" but image {number - 1} is not marked as the last image"
        )
    available = len(data) - offset
    if available < ROM_HEADER_SIZE:
        raise RomError(f"{where} is truncated: {available} bytes left, the ROM header alone needs {ROM_HEADER_SIZE}")
    pointer = _u16(data, offset + PCIR_POINTER)
    if pointer + PCIR_SIZE > available:
        raise RomError(f"{where}: PCIR pointer 0x{pointer:04x} is out of bounds ({available} bytes left)")
    pcir = offset + pointer
    signature = data[pcir : pcir + len(PCIR_SIGNATURE)]
    if signature != PCIR_SIGNATURE:
        raise RomError(f"{where}: no 'PCIR' signature at 0x{pcir:x} (found {signature.hex(' ')})")
    units = _u16(data, pcir + 0x10)
    if units == 0:
        raise RomError(f"{where}: PCIR image length is 0")
    size = units * IMAGE_UNIT
    if size > available:
        raise RomError(
            f"{where} is truncated: PCIR image length is {units} x 512 = {size} bytes, only {available} bytes left"
        )
    if pointer + PCIR_SIZE > size:
        raise RomError(f"{where}: PCIR pointer 0x{pointer:04x} is out of bounds (the image is {size} bytes)")
    return RomImage(
        offset=offset,
        size=size,
        vendor=_u16(data, pcir + 4),
        device=_u16(data, pcir + 6),
        code_type=data[pcir + 0x14],
        last=bool(data[pcir + 0x15] & LAST_IMAGE),
    )


def _image_problems(
    data: bytes, image: RomImage, number: int, source: str, expected_vendor: int, expected_device: int
) -> list[str]:
    """Problems that leave the chain walkable. Only the first image must carry the GPU's ids:
    later ones (EFI, NVIDIA's own) are reported as they are."""
    problems = []
    expected = f"{expected_vendor:04x}:{expected_device:04x}"
    if number == 1 and image.id != expected:
        problems.append(f"{source}: image 1: PCIR says {image.id}, the GPU is {expected}")
    if image.code_type == LEGACY_X86:
        total = sum(data[image.offset : image.offset + image.size]) % 256
        if total:
            problems.append(
                f"{source}: image {number} ({image.code_name}) at 0x{image.offset:x}: bad checksum"
                f" (its bytes sum to 0x{total:02x} mod 256, expected 0x00)"
            )
    return problems


def _u16(data: bytes, position: int) -> int:
    return int.from_bytes(data[position : position + 2], "little")


def _parse_id(pci_id: str) -> tuple[int, int]:
    """'10de:25a2' -> (0x10de, 0x25a2); the model has already checked the form."""
    vendor, _, device = pci_id.partition(":")
    return int(vendor, 16), int(device, 16)


def check_file(path: Path, expected_id: str) -> RomReport:
    """Validate a ROM file against the GPU's ``vendor:device`` id."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RomError(f"{path}: cannot be read: {e.strerror}") from None
    return validate(data, *_parse_id(expected_id), source=str(path))


# Reading the ROM BAR ------------------------------------------------------------------


class SysfsDevice:
    """One PCI device under a sysfs root.

    Every access to a sysfs file goes through ``read`` and ``write``: the kernel answers
    there in ways a regular file cannot (EIO on the rom file, binding on a bind write), so
    tests play the kernel's part by overriding these two methods.
    """

    def __init__(self, address: str, sysfs_root: Path) -> None:
        self.address = address
        self.path = sysfs_root / "bus/pci/devices" / address
        self.drivers = sysfs_root / "bus/pci/drivers"
        self.rom = self.path / "rom"

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def write(self, path: Path, text: str) -> None:
        with open(path, "w") as file:
            file.write(text)

    def driver(self) -> str | None:
        """The bound driver's name, from the ``driver`` symlink the kernel keeps."""
        link = self.path / "driver"
        return Path(os.readlink(link)).name if link.is_symlink() else None

    def pci_id(self) -> str:
        vendor, device = (int(self.read(self.path / name).decode().strip(), 16) for name in ("vendor", "device"))
        return f"{vendor:04x}:{device:04x}"


def read_rom_bar(device: SysfsDevice) -> bytes:
    """Read the ROM BAR; if that fails while a driver holds the GPU, unbind, retry, bind back."""
    driver = device.driver()
    try:
        return _read_enabled(device)
    except OSError as e:
        if driver is None:
            raise _unreadable(device, e, "no driver was bound") from None
    with _unbound(device, driver):
        try:
            return _read_enabled(device)
        except OSError as e:
            raise _unreadable(device, e, f"also after unbinding it from {driver}") from None


def _read_enabled(device: SysfsDevice) -> bytes:
    """The rom file reads only while enabled; it is disabled again whatever the read does."""
    _write(device, device.rom, "1", "enable the ROM BAR of")
    try:
        return device.read(device.rom)
    finally:
        _write(device, device.rom, "0", "disable the ROM BAR of")


@contextmanager
def _unbound(device: SysfsDevice, driver: str) -> Iterator[None]:
    """Unbind ``driver`` for the duration and bind it back whatever happens.

    Binding back looks at the ``driver`` symlink instead of assuming the unbind happened: an
    unbind that failed (the GPU still bound) is not followed by a bind that would fail too.
    """
    try:
        _write(device, device.drivers / driver / "unbind", device.address, f"unbind {driver} from")
        yield
    finally:
        if device.driver() != driver:
            _write(
                device,
                device.drivers / driver / "bind",
                device.address,
                f"bind {driver} back to",
                hint=f"the GPU is unbound: run 'echo {device.address} > /sys/bus/pci/drivers/{driver}/bind' or reboot",
            )


def _write(device: SysfsDevice, path: Path, text: str, action: str, hint: str | None = None) -> None:
    try:
        device.write(path, text)
    except OSError as e:
        raise RomError(f"cannot {action} {device.address}: {e.strerror}", hint=hint) from None


def _unreadable(device: SysfsDevice, error: OSError, context: str) -> RomError:
    return RomError(f"cannot read the ROM BAR of {device.address}: {error.strerror} ({context})", hint=IMPORT_HINT)


def _check_device(device: SysfsDevice, expected_id: str) -> None:
    """Refuse before touching anything if the address is not the GPU: unbinding the wrong
    device (say, the NVMe disk) would take the host down."""
    hint = "check gpu.functions[0].address in the model against 'lspci -Dnn'"
    if not device.path.exists():
        raise RomError(f"no PCI device {device.address} (expected the GPU {expected_id} there)", hint=hint)
    found = device.pci_id()
    if found != expected_id:
        raise RomError(f"{device.address} is {found}, not the GPU {expected_id}; not touching it", hint=hint)
    if not device.rom.exists():
        raise RomError(f"{device.address} has no ROM BAR ({device.rom} is missing)", hint=IMPORT_HINT)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM (systemd stopping the unit) kills without running ``finally``; turn it into
    SystemExit for the duration so the GPU is bound back and no temp file is left."""

    def exit_on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


# Storing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """What extract/import left at ``path``: a ROM written now, or one already there."""

    path: Path
    report: RomReport
    written: bool

    def lines(self) -> list[str]:
        action = "stored" if self.written else "a valid ROM for this GPU is already present, nothing done"
        return [f"{self.path}: {action}", *self.report.describe()]


def store(rom: bytes, dest: Path) -> None:
    """Put ``rom`` at ``dest`` so that readers see the old file or the complete new one, never
    a part of it, even across a crash: temp file beside it, fsync, rename, fsync the directory."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                _write_all(file, rom)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temp, 0o644)  # the qemu process reads it as another user
            os.replace(temp, dest)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        _fsync_directory(dest.parent)
    except OSError as e:
        raise RomError(f"cannot write {dest}: {e.strerror}") from None
    romtable.write(rom, dest.with_name(romtable.NAME))  # the guest's _ROM serves what is stored


def _write_all(file: BinaryIO, data: bytes) -> None:
    """A seam of its own so tests can interrupt the write half way through."""
    file.write(data)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _present(dest: Path, expected_vendor: int, expected_device: int) -> RomReport | None:
    """The report of ``dest`` if it already holds a valid ROM for the GPU exactly as it would
    be stored (nothing to trim); None if it is missing or anything else."""
    try:
        data = dest.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RomError(f"{dest}: cannot be read: {e.strerror}") from None
    try:
        report = validate(data, expected_vendor, expected_device, source=str(dest))
    except RomError:
        return None
    return report if report.rom == data else None


def extract(pci_address: str, expected_id: str, dest: Path, sysfs_root: Path = Path("/sys")) -> Installed:
    """Read the GPU's vBIOS from its ROM BAR and store it at ``dest``, unless a valid one is there."""
    vendor, device_id = _parse_id(expected_id)
    present = _present(dest, vendor, device_id)
    if present is not None:
        return Installed(dest, present, written=False)
    device = SysfsDevice(pci_address, sysfs_root)
    _check_device(device, expected_id)
    with _sigterm_raises():
        data = read_rom_bar(device)
        try:
            report = validate(data, vendor, device_id, source=f"ROM BAR of {pci_address}")
        except RomError as e:
            raise RomError(e.problems, hint=IMPORT_HINT) from None
        store(report.rom, dest)
    return Installed(dest, report, written=True)


def import_rom(src: Path, expected_id: str, dest: Path) -> Installed:
    """Install a ROM the user supplies (e.g. from a BIOS update) at ``dest``, after the same checks."""
    report = check_file(src, expected_id)
    present = _present(dest, *_parse_id(expected_id))
    if present is not None and present.rom == report.rom:
        return Installed(dest, present, written=False)
    with _sigterm_raises():
        store(report.rom, dest)
    return Installed(dest, report, written=True)


# Command line -------------------------------------------------------------------------


def cli(argv: list[str], model: Model, rom_path: Path, sysfs_root: Path = Path("/sys")) -> int:
    """``gpupass vbios extract | check FILE | import FILE`` for the model's GPU.

    Prints the report and returns 0; every failure is raised as a GpupassError for the
    caller to print (argparse itself exits 2 on misuse).
    """
    parser = argparse.ArgumentParser(prog="gpupass vbios", description="The GPU's vBIOS for the guest.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("extract", help=f"read the vBIOS from the GPU's ROM BAR into {rom_path}")
    commands.add_parser("check", help="validate a ROM file against the GPU").add_argument("file", type=Path)
    commands.add_parser("import", help=f"validate a ROM file and install it as {rom_path}").add_argument(
        "file", type=Path
    )
    args = parser.parse_args(argv)
    gpu = model.gpu.functions[0]
    if args.command == "extract":
        lines = extract(gpu.address, gpu.id, rom_path, sysfs_root).lines()
    elif args.command == "check":
        lines = check_file(args.file, gpu.id).describe()
    else:
        lines = import_rom(args.file, gpu.id, rom_path).lines()
    print("\n".join(lines))
    return 0
