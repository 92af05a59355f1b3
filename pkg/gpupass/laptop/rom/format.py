"""What a valid vBIOS is: a PCI expansion ROM chain whose first image names the GPU.

A laptop dGPU has no ROM of its own, so the guest only sees a vBIOS if libvirt hands it one
(``<rom file=.../>``). A wrong or partial file there fails in the guest, far from its cause;
so every source (the ROM BAR, the firmware's copies, a BIOS update, the user's file) and the
store check what they have here first, and nothing else decides what a ROM is.

Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...errors import GpupassError

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
