"""``gpupass vbios from-update FILE``: the GPU's ROM out of the laptop maker's BIOS update.

A BIOS update (a capsule, a flash image, or an installer that carries one) keeps the dGPU's
option ROM inside UEFI firmware volumes, often compressed. This finds every volume at any
offset, walks its FFS files and sections (LZMA decompressed with the standard library, as
EDK2 writes it), scans every leaf for PCI option ROM images whose PCIR names the GPU, and
stores the first chain that passes ``format.validate``. Tiano/EFI-compressed sections go
through UEFIExtract (uefitool-cli) and installers through 7z or innoextract, when those are
installed; otherwise the refusal names the package. gpupass never ships or downloads a ROM:
the images are the laptop maker's.

Layouts: the UEFI PI specification, volume 3 (EFI_FIRMWARE_VOLUME_HEADER with "_FVH" at
offset 40, EFI_FFS_FILE_HEADER and FILE_HEADER2, EFI_COMMON_SECTION_HEADER and HEADER2, the
section types), and EDK2's GUIDs for its LZMA and Tiano section extractors. Standard library
only.
"""

from __future__ import annotations

import lzma
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import GpupassError
from .. import command
from .format import PCIR_POINTER, PCIR_SIGNATURE, ROM_SIGNATURE, RomError, parse_id, validate
from .store import Installed, install, present_rom

FV_SIGNATURE = b"_FVH"
FV_SIGNATURE_AT = 40
FV_HEADER_MIN = 56  # the fixed fields, up to the block map
FFS2 = uuid.UUID("8C8CE578-8A3D-4F1C-9935-896185C32DD3")  # EFI_FIRMWARE_FILE_SYSTEM2_GUID
FFS3 = uuid.UUID("5473C07A-3DCB-4DCA-BD6F-1E9689E7349A")  # EFI_FIRMWARE_FILE_SYSTEM3_GUID
ERASE_POLARITY = 0x800  # EFI_FVB2_ERASE_POLARITY: free space reads as 0xFF
LARGE_FILE = 0x01  # FFS_ATTRIB_LARGE_FILE (FFS3): EFI_FFS_FILE_HEADER2, 64-bit size
FILE_RAW, FILE_PAD = 0x01, 0xF0
# Section types (PI spec vol 3, 3.2.5).
COMPRESSION, GUID_DEFINED = 0x01, 0x02
FIRMWARE_VOLUME_IMAGE, FREEFORM_SUBTYPE_GUID = 0x17, 0x18
LEAF_SECTIONS = {0x10: "PE32", 0x11: "PIC", 0x12: "TE", 0x16: "COMPATIBILITY16", 0x19: "RAW"}
NOT_COMPRESSED, STANDARD_COMPRESSION = 0x00, 0x01  # EFI_COMPRESSION_SECTION.CompressionType
PROCESSING_REQUIRED = 0x01  # EFI_GUIDED_SECTION_PROCESSING_REQUIRED
LZMA = uuid.UUID("EE4E5898-3914-4259-9D6E-DC7BD79403CF")  # EDK2 LzmaCustomDecompress
LZMA_F86 = uuid.UUID("D42AE6BD-1352-4BFB-909A-CA72A6EAE889")  # the same, after an x86 BCJ filter
TIANO = uuid.UUID("A31280AD-481E-41B6-95E8-127F4C984779")  # EDK2 TianoCustomDecompress
MAX_DEPTH = 12  # volumes in sections in volumes: real images nest 3-4 deep

UEFITOOL = ("UEFIExtract", "uefitool-cli")
UNWRAPPERS = (("7z", "p7zip-full"), ("innoextract", "innoextract"))
# What an installer or archive starts with: a Windows executable, 7z, zip, cab. LZMA2 stores
# incompressible chunks as they are, so a volume may show through the wrapper while the ROM
# beside it does not: such files are unwrapped whenever the walk found no ROM.
WRAPPERS = (b"MZ", b"7z\xbc\xaf\x27\x1c", b"PK\x03\x04", b"MSCF")


@dataclass
class Walk:
    """What walking the update found: every leaf (the bytes a ROM may sit in) with where it is."""

    leaves: list[tuple[str, bytes]] = field(default_factory=list)
    volumes: int = 0
    files: int = 0
    problems: list[str] = field(default_factory=list)
    tiano: list[str] = field(default_factory=list)  # Tiano-compressed sections left compressed


def _u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "little")


def _u24(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 3], "little")


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


def _u64(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 8], "little")


def _guid(data: bytes, at: int) -> uuid.UUID:
    return uuid.UUID(bytes_le=bytes(data[at : at + 16]))


def _align(value: int, base: int, alignment: int) -> int:
    return base + -(-(value - base) // alignment) * alignment


# Volumes, files, sections ---------------------------------------------------------------


def _volume_header(data: bytes, start: int) -> tuple[int, int] | None:
    """(FvLength, HeaderLength) if a firmware volume header of FFS2/FFS3 starts at ``start``:
    the signature, a header checksum that sums to zero, sane lengths. Anything else is data
    that happens to hold "_FVH"."""
    if start < 0 or start + FV_HEADER_MIN > len(data) or data[start + 40 : start + 44] != FV_SIGNATURE:
        return None
    length, header_length = _u64(data, start + 32), _u16(data, start + 48)
    if header_length < FV_HEADER_MIN or header_length % 2 or start + header_length > len(data):
        return None
    if length < header_length or _guid(data, start + 16) not in (FFS2, FFS3):
        return None
    if sum(_u16(data, start + at) for at in range(0, header_length, 2)) % 0x10000:
        return None
    return length, header_length


def find_volumes(data: bytes) -> list[int]:
    """Every top-level firmware volume's offset, at any offset (behind any wrapper bytes)."""
    starts, end = [], 0
    at = data.find(FV_SIGNATURE)
    while at >= 0:
        start = at - FV_SIGNATURE_AT
        if start >= end and _volume_header(data, start) is not None:
            starts.append(start)
            end = start + _volume_header(data, start)[0]
        at = data.find(FV_SIGNATURE, at + 1)
    return starts


def walk_volume(data: bytes, start: int, where: str, walk: Walk, depth: int = 0) -> None:
    header = _volume_header(data, start)
    if header is None:
        walk.problems.append(f"{where}: not a firmware volume")
        return
    length, header_length = header
    walk.volumes += 1
    end = start + length
    if end > len(data):
        walk.problems.append(f"{where} is truncated: its header says {length} bytes, only {len(data) - start} follow")
        end = len(data)
    ffs3 = _guid(data, start + 16) == FFS3
    erased = b"\xff" if _u32(data, start + 44) & ERASE_POLARITY else b"\x00"
    position = start + header_length
    extension = _u16(data, start + 52)
    if extension:  # EFI_FIRMWARE_VOLUME_EXT_HEADER: FvName, then its own size
        position = start + extension + _u32(data, start + extension + 16)
    position = _align(position, start, 8)
    while position + 24 <= end:
        if data[position : position + 24] == erased * 24:
            break  # free space to the end of the volume
        size, header_size = _u24(data, position + 20), 24
        if ffs3 and data[position + 19] & LARGE_FILE:
            size, header_size = _u64(data, position + 24), 32
        name = _guid(data, position)
        if size < header_size or position + size > end:
            walk.problems.append(
                f"{where}: file {str(name).upper()} at 0x{position - start:x} runs past the volume's end"
            )
            break
        walk.files += 1
        kind = data[position + 18]
        body = data[position + header_size : position + size]
        here = f"{where} > file {str(name).upper()}"
        if kind == FILE_RAW:
            walk.leaves.append((f"{here} (raw)", body))
        elif kind != FILE_PAD:
            walk_sections(body, here, walk, depth)
        position = _align(position + size, start, 8)


def walk_sections(body: bytes, where: str, walk: Walk, depth: int) -> None:
    if depth > MAX_DEPTH:
        walk.problems.append(f"{where}: sections nested more than {MAX_DEPTH} deep, not followed")
        return
    position = 0
    while position + 4 <= len(body):
        size, kind, header_size = _u24(body, position), body[position + 3], 4
        if size == 0xFFFFFF:  # EFI_COMMON_SECTION_HEADER2
            size, header_size = _u32(body, position + 4), 8
        if size < header_size or position + size > len(body):
            if body[position:].strip(b"\xff\x00"):
                walk.problems.append(f"{where}: section at 0x{position:x} runs past its file's end")
            return
        payload = body[position + header_size : position + size]
        here = f"{where} > section at 0x{position:x}"
        if kind in LEAF_SECTIONS:
            walk.leaves.append((f"{where} > {LEAF_SECTIONS[kind]} section", payload))
        elif kind == FREEFORM_SUBTYPE_GUID:
            walk.leaves.append((f"{where} > freeform section", payload[16:]))
        elif kind == FIRMWARE_VOLUME_IMAGE:
            walk_volume(payload, 0, f"{where} > volume", walk, depth + 1)
        elif kind == COMPRESSION:
            compression = payload[4] if len(payload) > 4 else None
            if compression == NOT_COMPRESSED:
                walk_sections(payload[5:], f"{where} > uncompressed section", walk, depth + 1)
            elif compression == STANDARD_COMPRESSION:
                walk.tiano.append(f"{where} > EFI-compressed section")
        elif kind == GUID_DEFINED:
            _guided(body[position : position + size], header_size, here, where, walk, depth)
        position = _align(position + size, 0, 4)


def _guided(section: bytes, header_size: int, here: str, where: str, walk: Walk, depth: int) -> None:
    """EFI_GUID_DEFINED_SECTION: GUID, DataOffset (from the section's start), Attributes."""
    guid = _guid(section, header_size)
    data_offset, attributes = _u16(section, header_size + 16), _u16(section, header_size + 18)
    data = section[data_offset:]
    if guid in (LZMA, LZMA_F86):
        try:
            unpacked = _lzma(data, x86=guid == LZMA_F86)
        except lzma.LZMAError as e:
            walk.problems.append(f"{here}: LZMA section does not decompress ({e})")
            return
        walk_sections(unpacked, f"{where} > LZMA section", walk, depth + 1)
    elif guid == TIANO:
        walk.tiano.append(f"{where} > Tiano-compressed section")
    elif not attributes & PROCESSING_REQUIRED:  # e.g. a CRC32 section: the data is plain
        walk_sections(data, f"{where} > GUID-defined section", walk, depth + 1)


def _lzma(data: bytes, x86: bool) -> bytes:
    """EDK2's LzmaCompress output is the .lzma ("alone") format: 5 property bytes, the 64-bit
    uncompressed size, the stream. LzmaF86 also ran the x86 BCJ filter over the input."""
    if not x86:
        return lzma.decompress(data, format=lzma.FORMAT_ALONE)
    props, dictionary = data[0], _u32(data, 1)
    lc, props = props % 9, props // 9
    lp, pb = props % 5, props // 5
    filters = [
        {"id": lzma.FILTER_X86},
        {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dictionary},
    ]
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters).decompress(data[13:], max_length=_u64(data, 5))


def walk_file(data: bytes, where: str) -> Walk:
    walk = Walk()
    for start in find_volumes(data):
        walk_volume(data, start, f"{where}: volume at 0x{start:x}", walk)
    return walk


# Option ROMs in the leaves ----------------------------------------------------------------


@dataclass
class Search:
    found: tuple[str, object] | None = None  # (where, RomReport)
    others: set[str] = field(default_factory=set)  # ids of the other devices' option ROMs
    invalid: list[str] = field(default_factory=list)  # images with the GPU's id that do not validate


def search(leaves: list[tuple[str, bytes]], vendor: int, device: int, result: Search) -> Search:
    """The first leaf image whose PCIR names the GPU and whose chain validates."""
    for where, leaf in leaves:
        at = leaf.find(ROM_SIGNATURE)
        while at >= 0 and result.found is None:
            pcir = at + _u16(leaf, at + PCIR_POINTER)
            if leaf[pcir : pcir + 4] == PCIR_SIGNATURE and pcir + 8 <= len(leaf):
                ids = (_u16(leaf, pcir + 4), _u16(leaf, pcir + 6))
                if ids == (vendor, device):
                    source = f"{where} at 0x{at:x}"
                    try:
                        result.found = (source, validate(leaf[at:], vendor, device, source=source))
                    except RomError as e:
                        result.invalid.append("; ".join(e.problems))
                else:
                    result.others.add(f"{ids[0]:04x}:{ids[1]:04x}")
            at = leaf.find(ROM_SIGNATURE, at + 1)
        if result.found is not None:
            break
    return result


# Wrappers and compressed sections through other tools ---------------------------------------


def _installed(program: str) -> bool:
    return shutil.which(program) is not None


def _files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


def _uefiextract_leaves(data: bytes, label: str) -> list[tuple[str, bytes]]:
    """Every file of UEFIExtract's full dump (it decompresses Tiano/EFI sections too)."""
    with tempfile.TemporaryDirectory(prefix="gpupass-uefi.") as tmp:
        image = Path(tmp) / "update.bin"
        image.write_bytes(data)
        command.run([UEFITOOL[0], str(image), "all"], UEFITOOL[1])
        dump = Path(tmp) / "update.bin.dump"
        return [(f"{label}: UEFIExtract {p.relative_to(dump)}", p.read_bytes()) for p in _files_under(dump)]


def _unwrap(src: Path) -> list[Path] | None:
    """The files an installer carries, unpacked into a temp dir by the first unwrapper installed;
    None when neither is installed."""
    for program, package in UNWRAPPERS:
        if not _installed(program):
            continue
        tmp = Path(tempfile.mkdtemp(prefix="gpupass-unwrap."))
        argv = (
            [program, "x", "-y", f"-o{tmp}", str(src)] if program == "7z" else [program, "-s", "-d", str(tmp), str(src)]
        )
        try:
            command.run(argv, package)
        except GpupassError:
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        return [tmp, *_files_under(tmp)]
    return None


def from_update(src: Path, expected_id: str, dest: Path) -> Installed:
    """Find the GPU's ROM in the BIOS update ``src`` and store it at ``dest``; refused with one
    line (and the package to install, where a tool would help) when there is none."""
    vendor, device = parse_id(expected_id)
    try:
        data = src.read_bytes()
    except OSError as e:
        raise RomError(f"{src}: cannot be read: {e.strerror}") from None
    walk = walk_file(data, str(src))
    result = search(walk.leaves, vendor, device, Search())
    hint = None
    if result.found is None and (not walk.volumes or data.startswith(WRAPPERS)):
        unwrapped = _unwrap(src)
        if unwrapped is None:
            hint = "it may be an installer: sudo apt install p7zip-full innoextract, and run this again"
        else:
            top, *files = unwrapped
            try:
                for path in files:
                    inner = walk_file(path.read_bytes(), f"{src} > {path.relative_to(top)}")
                    walk.volumes += inner.volumes
                    walk.files += inner.files
                    walk.problems += inner.problems
                    walk.tiano += inner.tiano
                    if search(inner.leaves, vendor, device, result).found is not None:
                        break
            finally:
                shutil.rmtree(top, ignore_errors=True)
    if result.found is None and walk.tiano:
        if _installed(UEFITOOL[0]):
            search(_uefiextract_leaves(data, str(src)), vendor, device, result)
        else:
            hint = f"{len(walk.tiano)} Tiano-compressed sections need UEFIExtract: sudo apt install {UEFITOOL[1]}"
    if result.found is None:
        plural = "" if walk.volumes == 1 else "s"
        missing = (
            f"no option ROM for the GPU {expected_id} in {walk.volumes} firmware volume{plural} ({walk.files} files)"
        )
        if result.others:
            missing += f"; option ROMs of {', '.join(sorted(result.others))} only"
        problems = [p.removeprefix(f"{src}: ") for p in walk.problems] + result.invalid
        raise RomError(f"{src}: {'; '.join([*problems, missing])}", hint=hint)
    origin, report = result.found
    present = present_rom(dest, vendor, device)
    if present is not None and present.rom == report.rom:
        return Installed(dest, present, written=False)
    return install(report, dest, f"gpupass vbios from-update: {origin}")
