"""``gpupass vbios from-update``: the GPU's ROM out of firmware files the tests build.

The firmware is real where it can be: Debian's OVMF (ovmf: OVMF_CODE_4M.fd, whose main volume
EDK2 compressed with LZMA) and a real option ROM (ipxe-qemu's efi-e1000.rom: a legacy PXE
image and an EFI image), re-identified as the model's GPU with the legacy checksum fixed.
The ROM goes into OVMF's main volume as a new FFS file, built from the UEFI PI specification
(volume 3: EFI_FFS_FILE_HEADER, EFI_COMMON_SECTION_HEADER, EFI_GUID_DEFINED_SECTION,
EFI_FIRMWARE_VOLUME_HEADER): in a raw section, in an LZMA-compressed section, and inside a
firmware volume of its own; and the whole image behind a few hundred KiB of wrapper bytes.
On the tool tier UEFIExtract (uefitool-cli) unpacks the same files and must find the same ROM.
"""

from __future__ import annotations

import lzma
import random
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from gpupass.laptop.rom import bios_update
from gpupass.laptop.rom import commands as rom_commands
from gpupass.laptop.rom.format import RomError
from gpupass.model import load

OVMF = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")  # Debian package ovmf
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-e1000.rom")  # Debian package ipxe-qemu
GPU_ID = "10de:25a2"
NVIDIA, RTX_3050_LAPTOP = 0x10DE, 0x25A2

EFI_FV_FILETYPE_FREEFORM, EFI_FV_FILETYPE_FIRMWARE_VOLUME_IMAGE = 0x02, 0x0B
EFI_SECTION_GUID_DEFINED, EFI_SECTION_FIRMWARE_VOLUME_IMAGE, EFI_SECTION_RAW = 0x02, 0x17, 0x19
EFI_FILE_STATE_VALID = 0xF8  # HEADER_CONSTRUCTION | HEADER_VALID | DATA_VALID, erase polarity 1
FFS_FIXED_CHECKSUM = 0xAA  # IntegrityCheck.File without FFS_ATTRIB_CHECKSUM
EFI_GUIDED_SECTION_PROCESSING_REQUIRED = 0x01
LZMA_GUID = uuid.UUID("EE4E5898-3914-4259-9D6E-DC7BD79403CF")
FFS2_GUID = uuid.UUID("8C8CE578-8A3D-4F1C-9935-896185C32DD3")
ROM_FILE = uuid.UUID("0F3A1B2C-5D6E-4F70-8192-A3B4C5D6E7F8")  # the test's own file name
ROM_NAME = str(ROM_FILE).upper()
AURORA_Z = load(Path(__file__).parents[1] / "models/aurora-z.toml")


def u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "little")


# The ROM ----------------------------------------------------------------------------------


def reidentified(rom: bytes, vendor: int, device: int) -> bytes:
    """Every image's PCIR ids set to ``vendor:device``; each legacy image's checksum fixed
    through its last byte (the PCI Firmware spec: all bytes of a legacy image sum to 0)."""
    data = bytearray(rom)
    offset = 0
    while True:
        pcir = offset + u16(data, offset + 0x18)
        data[pcir + 4 : pcir + 8] = vendor.to_bytes(2, "little") + device.to_bytes(2, "little")
        size = u16(data, pcir + 0x10) * 512
        if data[pcir + 0x14] == 0x00:
            end = offset + size - 1
            data[end] = (data[end] - sum(data[offset : offset + size])) % 256
        offset += size
        if data[pcir + 0x15] & 0x80:
            return bytes(data)


@pytest.fixture(scope="module")
def gpu_rom() -> bytes:
    return reidentified(IPXE_ROM.read_bytes(), NVIDIA, RTX_3050_LAPTOP)


# Building firmware (UEFI PI specification, volume 3) ----------------------------------------


def section(kind: int, payload: bytes) -> bytes:
    return (4 + len(payload)).to_bytes(3, "little") + bytes([kind]) + payload


def lzma_section(inner: bytes) -> bytes:
    """EFI_GUID_DEFINED_SECTION with EDK2's LZMA GUID: the data is the .lzma ("alone") format."""
    data_offset = 4 + 16 + 4
    header = LZMA_GUID.bytes_le + data_offset.to_bytes(2, "little")
    header += EFI_GUIDED_SECTION_PROCESSING_REQUIRED.to_bytes(2, "little")
    # EDK2's LzmaCompress writes the uncompressed size where Python writes "unknown" (all ones).
    packed = bytearray(lzma.compress(inner, format=lzma.FORMAT_ALONE))
    packed[5:13] = len(inner).to_bytes(8, "little")
    return section(EFI_SECTION_GUID_DEFINED, header + bytes(packed))


def ffs_file(name: uuid.UUID, kind: int, body: bytes) -> bytes:
    """EFI_FFS_FILE_HEADER with its header checksum (8-bit sum 0, State and File taken as 0)."""
    size = 24 + len(body)
    header = bytearray(name.bytes_le + b"\0\0" + bytes([kind, 0]) + size.to_bytes(3, "little") + b"\0")
    header[16] = -sum(header) % 256
    header[17], header[23] = FFS_FIXED_CHECKSUM, EFI_FILE_STATE_VALID
    return bytes(header) + body


def volume(*files: bytes, block: int = 0x1000) -> bytes:
    """An FFS2 firmware volume: header, a one-entry block map, the files 8-byte aligned, free space."""
    header_length = 56 + 16
    body = b""
    for file in files:
        body += b"\xff" * (-(header_length + len(body)) % 8) + file
    length = -(-(header_length + len(body)) // block) * block
    header = bytearray(
        bytes(16) + FFS2_GUID.bytes_le + length.to_bytes(8, "little") + b"_FVH"
        + (0x0004FEFF).to_bytes(4, "little") + header_length.to_bytes(2, "little") + b"\0\0"
        + b"\0\0" + b"\0" + b"\x02"
        + (length // block).to_bytes(4, "little") + block.to_bytes(4, "little") + bytes(8)
    )  # fmt: skip
    checksum = -sum(u16(header, at) for at in range(0, header_length, 2)) % 0x10000
    header[50:52] = checksum.to_bytes(2, "little")
    return bytes(header) + body + b"\xff" * (length - header_length - len(body))


def last_file_end(fv: bytes) -> int:
    """Where free space starts in a volume: after its last file (headers walked per the spec)."""
    position = u16(fv, 48)
    while position + 24 <= len(fv) and fv[position : position + 24] != b"\xff" * 24:
        position += int.from_bytes(fv[position + 20 : position + 23], "little")
        position += -position % 8
    return position


def into_ovmf(file: bytes) -> bytes:
    """OVMF_CODE_4M.fd with ``file`` added in the free space of its main (LZMA) volume."""
    image = bytearray(OVMF.read_bytes())
    length = int.from_bytes(image[32:40], "little")
    start = last_file_end(bytes(image[:length]))
    assert start + len(file) <= length, "OVMF's main volume has no room for the ROM"
    image[start : start + len(file)] = file
    return bytes(image)


def raw_rom_file(rom: bytes) -> bytes:
    return ffs_file(ROM_FILE, EFI_FV_FILETYPE_FREEFORM, section(EFI_SECTION_RAW, rom))


FIRMWARE = {
    "raw-section": (lambda rom: into_ovmf(raw_rom_file(rom)), f" > file {ROM_NAME} > RAW section at 0x0"),
    "lzma-section": (
        lambda rom: into_ovmf(
            ffs_file(ROM_FILE, EFI_FV_FILETYPE_FREEFORM, lzma_section(section(EFI_SECTION_RAW, rom)))
        ),
        f" > file {ROM_NAME} > LZMA section > RAW section at 0x0",
    ),
    "nested-volume": (
        lambda rom: into_ovmf(
            ffs_file(
                ROM_FILE,
                EFI_FV_FILETYPE_FIRMWARE_VOLUME_IMAGE,
                section(EFI_SECTION_FIRMWARE_VOLUME_IMAGE, volume(raw_rom_file(rom))),
            )
        ),
        f" > file {ROM_NAME} > volume > file {ROM_NAME} > RAW section at 0x0",
    ),
    "behind-wrapper": (
        lambda rom: random.Random(1).randbytes(300 * 1024).replace(b"_FVH", b"_fvh") + into_ovmf(raw_rom_file(rom)),
        f" > file {ROM_NAME} > RAW section at 0x0",
    ),
}


def volume_at(name: str) -> int:
    return 300 * 1024 if name == "behind-wrapper" else 0


# Finding and storing -----------------------------------------------------------------------


@pytest.mark.parametrize("name", FIRMWARE)
def test_the_rom_is_found_and_stored(tmp_path: Path, gpu_rom: bytes, name: str) -> None:
    build, path = FIRMWARE[name]
    update = tmp_path / "update.bin"
    update.write_bytes(build(gpu_rom))
    dest = tmp_path / "state/vbios.rom"
    installed = bios_update.from_update(update, GPU_ID, dest)
    where = f"{update}: volume at 0x{volume_at(name):x}{path}"
    assert installed.lines()[:2] == [
        f"{dest}: stored (from gpupass vbios from-update: {where})",
        f"{where}: valid PCI expansion ROM for 10de:25a2, 2 images, {len(gpu_rom)} bytes",
    ]
    assert dest.read_bytes() == gpu_rom
    # OVMF's own volumes were walked on the way: its LZMA-compressed DXE and PEI volumes too.
    assert bios_update.walk_file(update.read_bytes(), "x").volumes >= 4
    assert rom_commands.cli(["from-update", str(update), "--out", str(dest)], AURORA_Z) == 0


def test_ovmf_alone_is_walked_whole_and_holds_no_rom(tmp_path: Path) -> None:
    walk = bios_update.walk_file(OVMF.read_bytes(), "ovmf")
    assert (walk.volumes, walk.problems, walk.tiano) == (4, [], [])
    assert walk.files > 100
    update = tmp_path / "OVMF_CODE_4M.fd"
    shutil.copy(OVMF, update)
    with pytest.raises(RomError) as raised:
        bios_update.from_update(update, GPU_ID, tmp_path / "vbios.rom")
    assert raised.value.lines() == [
        f"{update}: no option ROM for the GPU 10de:25a2 in 4 firmware volumes ({walk.files} files)"
    ]
    assert not (tmp_path / "vbios.rom").exists()


def test_refusals_store_nothing(tmp_path: Path, gpu_rom: bytes) -> None:
    dest = tmp_path / "state/vbios.rom"
    wrong_vendor = reidentified(gpu_rom, 0x1002, RTX_3050_LAPTOP)
    truncated = volume(raw_rom_file(gpu_rom))
    cases = {
        "wrong-vendor.bin": (
            volume(raw_rom_file(wrong_vendor)),
            "no option ROM for the GPU 10de:25a2 in 1 firmware volume (1 files); option ROMs of 1002:25a2 only",
        ),
        "truncated.bin": (
            truncated[: len(truncated) // 2],
            f"volume at 0x0 is truncated: its header says {len(truncated)} bytes, only {len(truncated) // 2} follow;"
            f" volume at 0x0: file {ROM_NAME} at 0x48 runs past the volume's end;"
            " no option ROM for the GPU 10de:25a2 in 1 firmware volume (0 files)",
        ),
        "no-rom.bin": (volume(), "no option ROM for the GPU 10de:25a2 in 1 firmware volume (0 files)"),
    }
    for name, (data, message) in cases.items():
        update = tmp_path / name
        update.write_bytes(data)
        with pytest.raises(RomError) as raised:
            bios_update.from_update(update, GPU_ID, dest)
        assert raised.value.lines() == [f"{update}: {message}"], name
    assert not dest.parent.exists()


def test_a_file_without_volumes_names_the_unwrappers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bios_update, "_installed", lambda program: False)
    update = tmp_path / "update.exe"
    update.write_bytes(b"MZ" + bytes(1000))
    with pytest.raises(RomError) as raised:
        bios_update.from_update(update, GPU_ID, tmp_path / "vbios.rom")
    assert raised.value.lines() == [
        f"{update}: no option ROM for the GPU 10de:25a2 in 0 firmware volumes (0 files)",
        "hint: it may be an installer: sudo apt install p7zip-full innoextract, and run this again",
    ]


def test_tiano_sections_without_uefiextract_name_its_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bios_update, "_installed", lambda program: False)
    # EFI_COMPRESSION_SECTION: UncompressedLength, CompressionType 1 (EFI_STANDARD_COMPRESSION).
    tiano = section(0x01, (16).to_bytes(4, "little") + b"\x01" + bytes(16))
    update = tmp_path / "update.bin"
    update.write_bytes(volume(ffs_file(ROM_FILE, EFI_FV_FILETYPE_FREEFORM, tiano)))
    with pytest.raises(RomError) as raised:
        bios_update.from_update(update, GPU_ID, tmp_path / "vbios.rom")
    assert raised.value.lines() == [
        f"{update}: no option ROM for the GPU 10de:25a2 in 1 firmware volume (1 files)",
        "hint: 1 Tiano-compressed sections need UEFIExtract: sudo apt install uefitool-cli",
    ]


@pytest.mark.tool
def test_an_installer_is_unwrapped_with_7z(tmp_path: Path, gpu_rom: bytes) -> None:
    """7z compresses what it packs: the ROM inside shows only once it is unpacked (OVMF's
    compressed volume may show through: LZMA2 stores incompressible chunks as they are)."""
    inner = tmp_path / "in/BIOS/update.bin"
    inner.parent.mkdir(parents=True)
    inner.write_bytes(into_ovmf(raw_rom_file(gpu_rom)))
    installer = tmp_path / "installer.7z"
    subprocess.run(["7z", "a", "-bd", str(installer), "BIOS"], cwd=inner.parent.parent, capture_output=True, check=True)
    assert gpu_rom[:4096] not in installer.read_bytes()
    dest = tmp_path / "vbios.rom"
    installed = bios_update.from_update(installer, GPU_ID, dest)
    assert installed.lines()[0] == (
        f"{dest}: stored (from gpupass vbios from-update: {installer} > BIOS/update.bin: volume at 0x0"
        f" > file {ROM_NAME} > RAW section at 0x0)"
    )
    assert dest.read_bytes() == gpu_rom


# UEFIExtract agrees ------------------------------------------------------------------------


def uefiextract_roms(update: Path, rom: bytes) -> list[str]:
    """The files of UEFIExtract's full dump that hold ``rom``, relative to the dump."""
    subprocess.run(["UEFIExtract", str(update), "all"], capture_output=True, check=True)
    dump = update.with_name(update.name + ".dump")
    return sorted(str(p.relative_to(dump)) for p in dump.rglob("*") if p.is_file() and rom in p.read_bytes())


@pytest.mark.tool
@pytest.mark.parametrize("name", FIRMWARE)
def test_uefiextract_finds_the_same_rom(tmp_path: Path, gpu_rom: bytes, name: str) -> None:
    update = tmp_path / "update.bin"
    update.write_bytes(FIRMWARE[name][0](gpu_rom))
    found = bios_update.from_update(update, GPU_ID, tmp_path / "vbios.rom").report.rom
    assert found == gpu_rom
    holders = uefiextract_roms(update, found)
    # The leaf UEFIExtract unpacked the ROM into: a raw section body, however deep.
    assert any(h.endswith("body.bin") and "Raw section" in h for h in holders), holders
