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
import hashlib
import os
import signal
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .. import guest, paths
from ..errors import GpupassError
from ..model import Model
from . import machine, romtable

ROM_SIGNATURE = b"\x55\xaa"
PCIR_SIGNATURE = b"PCIR"
PCIR_POINTER = 0x18  # 16-bit LE offset of the PCIR structure, from the image start
ROM_HEADER_SIZE = PCIR_POINTER + 2
PCIR_SIZE = 0x18  # the fields read here; PCI 3.0 structures are longer, never shorter
IMAGE_UNIT = 512
LAST_IMAGE = 0x80
# NVIDIA's PCI Data Extension, 16-byte aligned after the PCIR structure; where present its
# sub-image length and last-image flag are the ones that chain NVIDIA's images (OpenRM,
# src/nvidia/src/kernel/gpu/gsp/arch/turing/kernel_gsp_vbios_tu102.c, s_locateExpansionRoms;
# offsets from its pci_exp_table.h: signature 0x0, revision 0x4, length 0x6, sub-image length
# 0x8, last image 0xa).
NPDE_SIGNATURE = b"NPDE"
NPDE_REVISIONS = (0x100, 0x101)
# The Init-from-ROM header nvflash and GPU-Z dumps of Turing and later start with (OpenRM's
# dev_bus.h NV_PBUS_IFR_FMT_FIXED0..2 and s_romImgFindPciHeader_TU102; nova-core's vbios.rst,
# "IFR Header"): "NVGI", then FIXED1 (bits 30:16 fixed data size, bits 15:8 version), FIXED2
# (bits 19:0 total data size). Versions 1-2: the ROM's offset is the u32 at fixed data size + 4.
# Version 3: the u32 at total data size is the flash status offset; 4096 bytes on is the ROM
# directory ("RFRD"), whose u32 at +8 is the ROM's offset. Neither source gives the header's
# full size any other way, so gpupass relies only on these fields and strips everything before
# that offset; it also needs 55 AA there, as OpenRM does.
NVGI_SIGNATURE = b"NVGI"
ROM_DIRECTORY = b"RFRD"
FLASH_STATUS_SIZE = 4096
LEGACY_X86 = 0x00
CODE_TYPES = {
    LEGACY_X86: "x86 PC-AT legacy",
    0x01: "Open Firmware",
    0x02: "HP PA RISC",
    0x03: "EFI",
    0x70: "NVIDIA",
}

IMPORT_HINT = (
    "many Optimus laptops do not expose the vBIOS through the ROM BAR; take the GPU's ROM from"
    " the laptop maker's BIOS update with: gpupass vbios from-update FILE, or install a ROM file"
    " you have with: gpupass vbios import FILE"
)


class RomError(GpupassError):
    """The ROM cannot be read, is not a valid ROM for this GPU, or cannot be stored."""


class NothingHere(RomError):
    """One source of ``extract`` gave no valid ROM (the next one is tried); one line, why."""


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
    nvgi_version: int | None = None  # the NVIDIA firmware header stripped before the ROM

    def describe(self) -> list[str]:
        plural = "" if len(self.images) == 1 else "s"
        lines = [
            f"{self.source}: valid PCI expansion ROM for {self.images[0].id},"
            f" {len(self.images)} image{plural}, {len(self.rom)} bytes"
        ]
        if self.nvgi_version is not None:
            lines.append(
                f"  stripped NVIDIA's NVGI firmware header (version {self.nvgi_version}, {self.leading} bytes)"
                " before the ROM"
            )
        elif self.leading:
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
    nvgi_version = None
    if data.startswith(NVGI_SIGNATURE):
        nvgi_version, start = _nvgi_rom_offset(data, source)
    else:
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
    return RomReport(
        source, tuple(images), leading=start, trailing=len(data) - offset, rom=data[start:offset],
        nvgi_version=nvgi_version,
    )  # fmt: skip


def _nvgi_rom_offset(data: bytes, source: str) -> tuple[int, int]:
    """(version, offset of the ROM) from an NVGI header, or the reason it is corrupt."""
    where = f"{source}: NVGI header"
    if len(data) < 12:
        raise RomError(f"{where} is truncated: {len(data)} bytes, its fixed words alone need 12")
    fixed1, fixed2 = _u32(data, 4), _u32(data, 8)
    version = fixed1 >> 8 & 0xFF
    if version in (1, 2):
        at = (fixed1 >> 16 & 0x7FFF) + 4
        what = f"fixed data size + 4 = 0x{at:x}"
    elif version == 3:
        status_at = fixed2 & 0xFFFFF
        if status_at + 4 > len(data):
            raise RomError(f"{where} (version 3): total data size 0x{status_at:x} is past the end ({len(data)} bytes)")
        directory = _u32(data, status_at) + FLASH_STATUS_SIZE
        found = data[directory : directory + 4]
        if found != ROM_DIRECTORY:
            raise RomError(
                f"{where} (version 3): no ROM directory 'RFRD' at 0x{directory:x}"
                f" (found {found.hex(' ') or 'the end of the data'})"
            )
        at = directory + 8
        what = f"ROM directory at 0x{directory:x}"
    else:
        raise RomError(f"{where}: version {version} is not one gpupass knows (1, 2 or 3)")
    if at + 4 > len(data):
        raise RomError(f"{where} (version {version}): the ROM offset ({what}) is past the end ({len(data)} bytes)")
    offset = _u32(data, at)
    found = data[offset : offset + 2]
    if offset % 4 or found != ROM_SIGNATURE:
        raise RomError(
            f"{where} (version {version}) puts the ROM at 0x{offset:x}, but there is"
            f" {found.hex(' ') or 'the end of the data'} there, not an aligned 55 AA"
        )
    return version, offset


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
    last = bool(data[pcir + 0x15] & LAST_IMAGE)
    npde = (pcir + _u16(data, pcir + 0x0A) + 0xF) & ~0xF
    if npde + 0x0C <= len(data) and data[npde : npde + 4] == NPDE_SIGNATURE and _u16(data, npde + 4) in NPDE_REVISIONS:
        sub_units = _u16(data, npde + 8)
        if sub_units == 0 or sub_units * IMAGE_UNIT > available:
            raise RomError(f"{where}: NPDE sub-image length is {sub_units} x 512 bytes, {available} bytes left")
        if _u16(data, npde + 6) > 0x0A:
            last = bool(data[npde + 0x0A] & LAST_IMAGE)
        elif sub_units < units:
            last = False
        size = sub_units * IMAGE_UNIT
    return RomImage(
        offset=offset,
        size=size,
        vendor=_u16(data, pcir + 4),
        device=_u16(data, pcir + 6),
        code_type=data[pcir + 0x14],
        last=last,
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


def _u32(data: bytes, position: int) -> int:
    return int.from_bytes(data[position : position + 4], "little")


def parse_id(pci_id: str) -> tuple[int, int]:
    """'10de:25a2' -> (0x10de, 0x25a2); the model has already checked the form."""
    vendor, _, device = pci_id.partition(":")
    return int(vendor, 16), int(device, 16)


def check_file(path: Path, expected_id: str) -> RomReport:
    """Validate a ROM file against the GPU's ``vendor:device`` id."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RomError(f"{path}: cannot be read: {e.strerror}") from None
    return validate(data, *parse_id(expected_id), source=str(path))


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
    return NothingHere(f"cannot read the ROM BAR of {device.address}: {error.strerror} ({context})")


def _check_device(device: SysfsDevice, expected_id: str) -> None:
    """Refuse before touching anything if the address is not the GPU: unbinding the wrong
    device (say, the NVMe disk) would take the host down."""
    hint = "check gpu.functions[0].address in the model against 'lspci -Dnn'"
    if not device.path.exists():
        raise NothingHere(f"no PCI device {device.address} (expected the GPU {expected_id} there; {hint})")
    found = device.pci_id()
    if found != expected_id:
        raise NothingHere(f"{device.address} is {found}, not the GPU {expected_id}; not touching it ({hint})")
    if not device.rom.exists():
        raise NothingHere(f"{device.address} has no ROM BAR ({device.rom} is missing)")


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
    """What extract/import/from-update left at ``path``: a ROM written now (from ``origin``),
    or one already there; ``tried`` says why each source before it gave nothing."""

    path: Path
    report: RomReport
    written: bool
    origin: str = ""
    tried: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        action = (
            f"stored (from {self.origin})"
            if self.written
            else "a valid ROM for this GPU is already present, nothing done"
        )
        return [*self.tried, f"{self.path}: {action}", *self.report.describe()]


def origin_path(rom: Path) -> Path:
    """The file beside the ROM that says where it came from, for ``gpupass doctor``."""
    return rom.with_name(rom.name + ".source")


def origin_record(rom: bytes, origin: str) -> bytes:
    return f"source: {origin}\nsha256: {hashlib.sha256(rom).hexdigest()}\n".encode()


def recorded_origin(rom: bytes, record: str) -> str | None:
    """The source an origin file names, if it describes exactly ``rom``; None otherwise (a ROM
    copied there by hand, or a crash between storing the ROM and its record)."""
    fields = dict(line.partition(": ")[::2] for line in record.splitlines())
    if fields.get("sha256") != hashlib.sha256(rom).hexdigest() or not fields.get("source"):
        return None
    return fields["source"]


def install(report: RomReport, dest: Path, origin: str, tried: tuple[str, ...] = ()) -> Installed:
    """The one place a validated ROM is stored: the ROM, then the record of its origin, each
    atomically. Whatever else should follow a new ROM hooks in here."""
    with _sigterm_raises():
        store(report.rom, dest)
        store(origin_record(report.rom, origin), origin_path(dest))
        store(romtable.ssdt(report.rom), dest.with_name(romtable.NAME))  # the guest's _ROM serves what is stored
    return Installed(dest, report, written=True, origin=origin, tried=tried)


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


def _write_all(file: BinaryIO, data: bytes) -> None:
    """A seam of its own so tests can interrupt the write half way through."""
    file.write(data)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def present_rom(dest: Path, expected_vendor: int, expected_device: int) -> RomReport | None:
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


# The sources of extract -----------------------------------------------------------------

EFI_STUB = "EFI stub's copy"
NOUVEAU = "nouveau's copy"
# struct pci_setup_rom, arch/x86/include/asm/setup_data.h (asm/pci.h in older kernels), which
# drivers/firmware/efi/libstub/x86-stub.c (preserve_pci_rom_image) fills for every PCI device
# whose option ROM the firmware handed over, as setup_data of type SETUP_PCI:
#   struct setup_data data;      header: u64 next, u32 type, u32 len (sysfs "data" starts after it)
#   uint16_t vendor, devid;      offsets 0, 2
#   uint64_t pcilen;             offset 8 (aligned: 4 bytes of padding before it)
#   unsigned long segment, bus, device, function;   offsets 16-40, 8 bytes each on x86_64
#   uint8_t romdata[];           offset 48, pcilen bytes
# arch/x86/kernel/ksysfs.c shows each entry as /sys/kernel/boot_params/setup_data/N/{type,data}.
PCI_SETUP_ROM = struct.Struct("<HH4xQQQQQ")


def _one_line(error: RomError) -> str:
    """A source's problems as the one line ``extract`` reports for it."""
    return "; ".join(error.problems)


def _from_rom_bar(address: str, expected_id: str, root: Path) -> tuple[RomReport, str]:
    device = SysfsDevice(address, root / "sys")
    _check_device(device, expected_id)
    data = read_rom_bar(device)
    source = f"ROM BAR of {address}"
    if not data:
        raise NothingHere(f"{source}: read 0 bytes (the firmware put no image there)")
    try:
        return validate(data, *parse_id(expected_id), source=source), source
    except RomError as e:
        raise NothingHere(_one_line(e)) from None


def _address_parts(address: str) -> tuple[int, int, int, int]:
    """0000:01:00.0 -> (segment, bus, device, function)."""
    segment, bus, rest = address.split(":")
    device, function = rest.split(".")
    return int(segment, 16), int(bus, 16), int(device, 16), int(function, 16)


def _from_setup_data(address: str, expected_id: str, root: Path) -> tuple[RomReport, str]:
    entries = machine.setup_data(root)
    where = f"/{machine.SETUP_DATA}"
    if entries is None:
        raise NothingHere(
            f"{EFI_STUB}: no {where} (the kernel got no setup_data: not started through its EFI stub,"
            " or handed nothing)"
        )
    vendor, device = parse_id(expected_id)
    roms = [e for e in entries if e.type == machine.SETUP_PCI]
    unreadable = [f"{where}/{e.number}: {e.problem}" for e in entries if e.problem]
    if not roms:
        found = f"none of its {len(entries)} entries is" if entries else "it holds no entry, so none is"
        extra = f" ({'; '.join(unreadable)})" if unreadable else ""
        raise NothingHere(f"{EFI_STUB}: {where}: {found} a PCI option ROM (type 0x3){extra}")
    others = []
    for entry in roms:
        name = f"{where}/{entry.number}/data"
        if entry.data is None:
            others.append(f"setup_data/{entry.number} unreadable ({entry.problem})")
            continue
        if len(entry.data) < PCI_SETUP_ROM.size:
            raise NothingHere(
                f"{EFI_STUB}: {name}: {len(entry.data)} bytes, shorter than the {PCI_SETUP_ROM.size}-byte"
                " pci_setup_rom header"
            )
        rom_vendor, rom_device, length, *location = PCI_SETUP_ROM.unpack_from(entry.data)
        at = "{:04x}:{:02x}:{:02x}.{:x}".format(*location)
        if (rom_vendor, rom_device) != (vendor, device) or tuple(location) != _address_parts(address):
            others.append(f"{rom_vendor:04x}:{rom_device:04x} at {at}")
            continue
        rom = entry.data[PCI_SETUP_ROM.size :]
        if length > len(rom):
            raise NothingHere(f"{EFI_STUB}: {name}: pcilen says {length} bytes of ROM, only {len(rom)} follow")
        source = f"{EFI_STUB} ({where}/{entry.number})"
        try:
            return validate(rom[:length], vendor, device, source=source), source
        except RomError as e:
            raise NothingHere(_one_line(e)) from None
    raise NothingHere(
        f"{EFI_STUB}: {where} holds option ROMs of {', '.join(others)} only, none of the GPU {expected_id} at {address}"
    )


def _from_nouveau(address: str, expected_id: str, root: Path) -> tuple[RomReport, str]:
    device = SysfsDevice(address, root / "sys")
    if not device.path.exists():
        raise NothingHere(f"{NOUVEAU}: no PCI device {address}")
    driver = device.driver()
    if driver != "nouveau":
        bound = f"bound to {driver}" if driver else "bound to no driver"
        raise NothingHere(f"{NOUVEAU}: the GPU is {bound}, not nouveau (gpupass binds no driver to get a ROM)")
    devices = machine.dri_debugfs(root)
    if devices is None:
        raise NothingHere(f"{NOUVEAU}: no /{machine.DRI_DEBUGFS} (debugfs is not mounted, or this is not root)")
    match = next((d for d in devices if d.address == address), None)
    if match is None:
        raise NothingHere(f"{NOUVEAU}: no DRM device in /{machine.DRI_DEBUGFS} is {address}")
    path = f"{match.path}/vbios.rom"
    try:
        data = machine.read_bytes(root, path)
    except OSError as e:
        raise NothingHere(f"{NOUVEAU}: cannot read {path}: {e.strerror}") from None
    try:
        return validate(data, *parse_id(expected_id), source=path), f"{NOUVEAU} ({path})"
    except RomError as e:
        raise NothingHere(_one_line(e)) from None


SOURCES = (_from_rom_bar, _from_setup_data, _from_nouveau)


def extract(pci_address: str, expected_id: str, dest: Path, root: Path = Path("/")) -> Installed:
    """Store the GPU's vBIOS at ``dest`` from the first source that gives a valid one (the ROM
    BAR, the EFI stub's copy, nouveau's copy), unless a valid one is there already."""
    vendor, device_id = parse_id(expected_id)
    present = present_rom(dest, vendor, device_id)
    if present is not None:
        return Installed(dest, present, written=False)
    tried: list[str] = []
    with _sigterm_raises():
        for source in SOURCES:
            try:
                report, origin = source(pci_address, expected_id, root)
            except NothingHere as e:
                tried.append(_one_line(e))
                continue
            return install(report, dest, origin, tuple(tried))
    raise RomError(tried, hint=IMPORT_HINT)


def import_rom(src: Path, expected_id: str, dest: Path) -> Installed:
    """Install a ROM the user supplies (e.g. from a BIOS update) at ``dest``, after the same checks."""
    report = check_file(src, expected_id)
    present = present_rom(dest, *parse_id(expected_id))
    if present is not None and present.rom == report.rom:
        return Installed(dest, present, written=False)
    return install(report, dest, f"gpupass vbios import {src}")


# Command line -------------------------------------------------------------------------


def cli(argv: list[str], model: Model) -> int:
    """``gpupass vbios extract | check FILE | import FILE | from-update FILE | ssdt`` for the model's GPU.

    Prints the report and returns 0; every failure is raised as a GpupassError for the
    caller to print (argparse itself exits 2 on misuse).
    """
    parser = argparse.ArgumentParser(prog="gpupass vbios", description="The GPU's vBIOS for the guest.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def storing(name: str, help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help)
        command.add_argument(
            "--out",
            type=Path,
            default=paths.VBIOS_ROM,
            metavar="FILE",
            help=f"store it here (default: {paths.VBIOS_ROM})",
        )
        return command

    extract_parser = storing("extract", "read the vBIOS from the GPU's ROM BAR, the EFI stub's copy or nouveau's")
    extract_parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    commands.add_parser("check", help="validate a ROM file against the GPU").add_argument("file", type=Path)
    storing("import", "validate a ROM file and install it").add_argument("file", type=Path)
    storing("from-update", "find the GPU's ROM in the laptop maker's BIOS update and install it").add_argument(
        "file", type=Path
    )
    ssdt_parser = commands.add_parser("ssdt", help="write the guest SSDT whose ACPI _ROM serves the vBIOS")
    ssdt_parser.add_argument(
        "--rom", type=Path, default=paths.VBIOS_ROM, help=f"the vBIOS (default: {paths.VBIOS_ROM})"
    )
    ssdt_parser.add_argument(
        "--out", type=Path, default=paths.ROM_AML, help=f"the SSDT to write (default: {paths.ROM_AML})"
    )
    args = parser.parse_args(argv)
    gpu = model.gpu.functions[0]
    if args.command == "extract":
        lines = extract(gpu.address, gpu.id, args.out, args.root).lines()
    elif args.command == "check":
        lines = check_file(args.file, gpu.id).describe()
    elif args.command == "import":
        lines = import_rom(args.file, gpu.id, args.out).lines()
    elif args.command == "from-update":
        from . import firmware

        lines = firmware.from_update(args.file, gpu.id, args.out).lines()
    else:
        rom = check_file(args.rom, gpu.id).rom
        store(romtable.ssdt(rom), args.out)
        lines = [f"{args.out}: written: _ROM on {guest.gpu_acpi_path()} serves the {len(rom)} bytes of {args.rom}"]
        if not model.acpi_rom:
            lines.append(
                f"note: {model.package}'s VM does not load it (guest.acpi_rom is off, or the GPU is not NVIDIA)"
            )
    print("\n".join(lines))
    return 0
