"""vBIOS validation, extraction through a sysfs tree in tmp_path, and atomic storage.

ROMs are built here from the PCI Firmware layout (55 AA header, PCIR structure, 512-byte
units, last-image flag, x86 checksum), so hypothesis can explore valid chains and each
kind of corruption, and every rejection asserts the line the user reads.

The sysfs tree is regular files and symlinks. What only the kernel can do there (EIO from
the rom file, binding on a write to bind/unbind) is played by FakeKernel through the two
I/O methods of ``rom_sources.SysfsDevice``: binding and unbinding create and remove the device's
``driver`` symlink, which is how the kernel shows them and what vbios reads back.
"""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupass.laptop import files
from gpupass.laptop.rom import acpi_table
from gpupass.laptop.rom import commands as rom_commands
from gpupass.laptop.rom import format as rom_format
from gpupass.laptop.rom import sources as rom_sources
from gpupass.laptop.rom import store as rom_store
from gpupass.laptop.rom.format import RomError, check_file, validate
from gpupass.laptop.rom.sources import SysfsDevice, extract, import_rom
from gpupass.laptop.rom.store import store
from gpupass.model import load

from .sysfs import SETUP_E820_EXT, SETUP_PCI, build_setup_data, pci_setup_rom

REPO = Path(__file__).parents[1]
GPU_ADDRESS = "0000:01:00.0"
GPU_ID = "10de:25a2"
NVIDIA, RTX_3050_LAPTOP = 0x10DE, 0x25A2


# Building ROMs -------------------------------------------------------------------------


def pcir(vendor: int, device: int, code_type: int, units: int, last: bool) -> bytes:
    """A PCI 2.x data structure: signature, ids, length 0x18, class 03 (display), image length."""
    return struct.pack(
        "<4sHHHHB3sHHBBH", b"PCIR", vendor, device, 0, 0x18, 0, b"\x00\x00\x03", units, 0, code_type,
        0x80 if last else 0, 0,
    )  # fmt: skip


def rom_image(
    vendor: int, device: int, code_type: int, *, units: int = 1, last: bool = True, pointer: int = 0x1C, seed: int = 0
) -> bytes:
    """One image: random payload, header and PCIR in place, x86 checksum fixed in the last byte."""
    body = bytearray(random.Random(seed).randbytes(units * 512))
    body[0:2] = b"\x55\xaa"
    body[2] = units & 0xFF
    body[0x18:0x1A] = pointer.to_bytes(2, "little")
    body[pointer : pointer + 0x18] = pcir(vendor, device, code_type, units, last)
    if code_type == 0:
        body[-1] = (body[-1] - sum(body)) % 256
    return bytes(body)


def pcir_of(data: bytes, offset: int) -> int:
    return offset + int.from_bytes(data[offset + 0x18 : offset + 0x1A], "little")


def patch(data: bytes, position: int, new: bytes) -> bytes:
    return data[:position] + new + data[position + len(new) :]


def patch_keeping_checksum(data: bytes, offset: int, size: int, position: int, new: bytes) -> bytes:
    """``patch`` inside the image at ``offset``, then fix its last byte so only the patch is wrong."""
    data = bytearray(patch(data, position, new))
    end = offset + size - 1
    data[end] = (data[end] - sum(data[offset : offset + size])) % 256
    return bytes(data)


@dataclass(frozen=True)
class Chain:
    vendor: int
    device: int
    images: tuple[bytes, ...]
    junk: bytes = b""
    trailing: bytes = b""

    @property
    def data(self) -> bytes:
        return self.junk + self.rom + self.trailing

    @property
    def rom(self) -> bytes:
        return b"".join(self.images)

    @property
    def offsets(self) -> list[int]:
        """Each image's offset in ``data``."""
        offsets, at = [], len(self.junk)
        for image in self.images:
            offsets.append(at)
            at += len(image)
        return offsets


ids = st.integers(0, 0xFFFF)
any_code_type = st.sampled_from(sorted(rom_format.CODE_TYPES)) | st.integers(0, 255)
# Junk before a ROM: no 55 AA in it, and not NVIDIA's firmware header (a header of its own).
junk_bytes = st.binary(max_size=48).filter(lambda b: b"\x55\xaa" not in b and not b.startswith(b"NVGI"))


@st.composite
def chains(draw, code_types=any_code_type, trailing: bool = True) -> Chain:
    """Valid chains of 1-3 images; later images carry the GPU's ids or any others."""
    vendor, device = draw(ids), draw(ids)
    count = draw(st.integers(1, 3))
    images = []
    for number in range(1, count + 1):
        image_vendor, image_device = (
            (vendor, device) if number == 1 else draw(st.just((vendor, device)) | st.tuples(ids, ids))
        )
        images.append(
            rom_image(
                image_vendor,
                image_device,
                draw(code_types),
                units=draw(st.integers(1, 4)),
                last=number == count,
                pointer=draw(st.integers(0x1C // 4, 0x100 // 4)) * 4,
                seed=draw(st.integers(0, 2**32)),
            )
        )
    return Chain(vendor, device, tuple(images), draw(junk_bytes), draw(st.binary(max_size=48)) if trailing else b"")


# The reference GPU's ROM as NVIDIA lays it out: legacy x86, NVIDIA's own, EFI last.
GPU_ROM = Chain(
    NVIDIA,
    RTX_3050_LAPTOP,
    (
        rom_image(NVIDIA, RTX_3050_LAPTOP, 0x00, units=2, last=False, seed=1),
        rom_image(NVIDIA, RTX_3050_LAPTOP, 0x70, units=1, last=False, seed=2),
        rom_image(NVIDIA, RTX_3050_LAPTOP, 0x03, units=2, last=True, seed=3),
    ),
)


# Validation: valid chains --------------------------------------------------------------


@given(chains())
def test_valid_chain_is_accepted_and_trimmed_to_its_images(chain: Chain) -> None:
    report = validate(chain.data, chain.vendor, chain.device)
    assert report.rom == chain.rom
    assert [image.offset for image in report.images] == chain.offsets
    assert [image.size for image in report.images] == [len(image) for image in chain.images]
    assert [image.last for image in report.images] == [False] * (len(chain.images) - 1) + [True]
    assert (report.leading, report.trailing) == (len(chain.junk), len(chain.trailing))
    lines = report.describe()
    assert (f"  cut {len(chain.junk)} bytes before the first 55 AA" in lines) == bool(chain.junk)
    assert (
        f"  cut {len(chain.trailing)} bytes after the last image (claimed by no image, not stored)" in lines
    ) == bool(chain.trailing)


@settings(max_examples=30, deadline=None)  # each example fsyncs a file and a directory
@given(chains())
def test_imported_rom_is_stored_byte_for_byte(chain: Chain) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, dest = Path(tmp, "update.rom"), Path(tmp, "state/vbios.rom")
        src.write_bytes(chain.data)
        installed = import_rom(src, f"{chain.vendor:04x}:{chain.device:04x}", dest)
        assert installed.written
        assert dest.read_bytes() == chain.rom
        assert dest.stat().st_mode & 0o777 == 0o644
        # Beside it, the guest's _ROM SSDT serving exactly the stored bytes (regenerated on every store).
        assert sorted(os.listdir(dest.parent)) == ["ssdt-rom.aml", "vbios.rom", "vbios.rom.source"]
        assert (dest.parent / "ssdt-rom.aml").read_bytes() == acpi_table.ssdt(chain.rom)


def test_report_describes_every_image_and_what_was_cut(tmp_path: Path) -> None:
    rom = Chain(GPU_ROM.vendor, GPU_ROM.device, GPU_ROM.images, junk=b"\x00" * 16, trailing=b"\xff" * 32)
    path = tmp_path / "rom.bin"
    path.write_bytes(rom.data)
    assert check_file(path, GPU_ID).describe() == [
        f"{path}: valid PCI expansion ROM for 10de:25a2, 3 images, 2560 bytes",
        "  cut 16 bytes before the first 55 AA",
        "  image 1 at 0x10: x86 PC-AT legacy (code type 0x00), 10de:25a2, 1024 bytes, checksum ok",
        "  image 2 at 0x410: NVIDIA (code type 0x70), 10de:25a2, 512 bytes",
        "  image 3 at 0x610: EFI (code type 0x03), 10de:25a2, 1024 bytes, last image",
        "  cut 32 bytes after the last image (claimed by no image, not stored)",
    ]


def test_later_images_may_carry_other_ids() -> None:
    images = (rom_image(NVIDIA, RTX_3050_LAPTOP, 0x00, last=False), rom_image(0x1234, 0x5678, 0x03))
    report = validate(b"".join(images), NVIDIA, RTX_3050_LAPTOP)
    assert [image.id for image in report.images] == ["10de:25a2", "1234:5678"]
    assert report.describe()[2] == "  image 2 at 0x200: EFI (code type 0x03), 1234:5678, 512 bytes, last image"


# Validation: corruptions, each with its own message -------------------------------------

Corruption = Callable[[st.DataObject], tuple[Chain, bytes, str]]


def wrong_signature(draw: st.DataObject) -> tuple[Chain, bytes, str]:
    chain = draw.draw(chains())
    k = draw.draw(st.integers(0, len(chain.images) - 1))
    offset = chain.offsets[k]
    pcir = pcir_of(chain.data, offset)
    at = draw.draw(st.integers(0, 3))
    byte = draw.draw(st.integers(0, 255).filter(lambda b: b != b"PCIR"[at]))
    data = patch(chain.data, pcir + at, bytes([byte]))
    found = data[pcir : pcir + 4].hex(" ")
    return chain, data, f"image {k + 1} at 0x{offset:x}: no 'PCIR' signature at 0x{pcir:x} (found {found})"


def wrong_vendor(draw: st.DataObject) -> tuple[Chain, bytes, str]:
    chain = draw.draw(chains())
    vendor = draw.draw(ids.filter(lambda v: v != chain.vendor))
    offset, size = chain.offsets[0], len(chain.images[0])
    data = patch_keeping_checksum(
        chain.data, offset, size, pcir_of(chain.data, offset) + 4, vendor.to_bytes(2, "little")
    )
    return (
        chain,
        data,
        (f"image 1: PCIR says {vendor:04x}:{chain.device:04x}, the GPU is {chain.vendor:04x}:{chain.device:04x}"),
    )


def bad_checksum(draw: st.DataObject) -> tuple[Chain, bytes, str]:
    chain = draw.draw(chains(code_types=st.just(0)))
    k = draw.draw(st.integers(0, len(chain.images) - 1))
    offset = chain.offsets[k]
    at = draw.draw(st.integers(pcir_of(chain.data, offset) + 0x18, offset + len(chain.images[k]) - 1))
    delta = draw.draw(st.integers(1, 255))
    data = patch(chain.data, at, bytes([(chain.data[at] + delta) % 256]))
    return (
        chain,
        data,
        (
            f"image {k + 1} (x86 PC-AT legacy) at 0x{offset:x}: bad checksum"
            f" (its bytes sum to 0x{delta:02x} mod 256, expected 0x00)"
        ),
    )


def truncated(draw: st.DataObject) -> tuple[Chain, bytes, str]:
    chain = draw.draw(chains(trailing=False))
    k = draw.draw(st.integers(0, len(chain.images) - 1))
    offset, size = chain.offsets[k], len(chain.images[k])
    end = draw.draw(st.integers(pcir_of(chain.data, offset) + 0x18, offset + size - 1))
    return (
        chain,
        chain.data[:end],
        (
            f"image {k + 1} at 0x{offset:x} is truncated: PCIR image length is {size // 512} x 512 = {size} bytes,"
            f" only {end - offset} bytes left"
        ),
    )


def zero_length(draw: st.DataObject) -> tuple[Chain, bytes, str]:
    chain = draw.draw(chains())
    k = draw.draw(st.integers(0, len(chain.images) - 1))
    offset = chain.offsets[k]
    data = patch(chain.data, pcir_of(chain.data, offset) + 0x10, b"\x00\x00")
    return chain, data, f"image {k + 1} at 0x{offset:x}: PCIR image length is 0"


def no_last_image(draw: st.DataObject) -> tuple[Chain, bytes, str]:
    chain = draw.draw(chains(trailing=False))
    offset, size = chain.offsets[-1], len(chain.images[-1])
    indicator = pcir_of(chain.data, offset) + 0x15
    data = patch_keeping_checksum(chain.data, offset, size, indicator, bytes([chain.data[indicator] & 0x7F]))
    return (
        chain,
        data,
        (
            f"image {len(chain.images)} at 0x{offset:x} is not marked as the last image, but the data ends after it"
            " (no last-image flag in the chain)"
        ),
    )


@pytest.mark.parametrize(
    "corruption", [wrong_signature, wrong_vendor, bad_checksum, truncated, zero_length, no_last_image]
)
@given(draw=st.data())
def test_corrupted_chain_is_rejected_with_its_message(corruption: Corruption, draw: st.DataObject) -> None:
    chain, data, message = corruption(draw)
    with pytest.raises(RomError) as raised:
        validate(data, chain.vendor, chain.device, source="x.rom")
    assert raised.value.lines() == [f"x.rom: {message}"]


@given(st.binary(max_size=600).filter(lambda b: b"\x55\xaa" not in b and not b.startswith(b"NVGI")))
def test_data_without_55_aa_is_not_a_rom(data: bytes) -> None:
    with pytest.raises(RomError) as raised:
        validate(data, NVIDIA, RTX_3050_LAPTOP, source="x.rom")
    assert raised.value.lines() == [f"x.rom: no 55 AA signature in {len(data)} bytes (not a PCI expansion ROM)"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            patch(rom_image(NVIDIA, RTX_3050_LAPTOP, 3), 0x18, b"\xf0\x01"),
            "image 1 at 0x0: PCIR pointer 0x01f0 is out of bounds (512 bytes left)",
        ),
        (
            patch(rom_image(NVIDIA, RTX_3050_LAPTOP, 3), 0x18, b"\x00\x02") + pcir(NVIDIA, RTX_3050_LAPTOP, 3, 1, True),
            "image 1 at 0x0: PCIR pointer 0x0200 is out of bounds (the image is 512 bytes)",
        ),
        (b"\x55\xaa" + bytes(8), "image 1 at 0x0 is truncated: 10 bytes left, the ROM header alone needs 26"),
        (
            rom_image(NVIDIA, RTX_3050_LAPTOP, 0, last=False) + b"\x55\x00",
            "image 2 at 0x200: no 55 AA signature (found 55 00), but image 1 is not marked as the last image",
        ),
    ],
    ids=["pointer-past-data", "pointer-past-image", "header-cut", "next-image-missing"],
)
def test_broken_structure_is_rejected_with_its_message(data: bytes, message: str) -> None:
    with pytest.raises(RomError) as raised:
        validate(data, NVIDIA, RTX_3050_LAPTOP, source="x.rom")
    assert raised.value.lines() == [f"x.rom: {message}"]


def test_every_walkable_problem_is_reported_at_once() -> None:
    first = bytearray(rom_image(0x8086, 0x1234, 0, last=False))
    first[100] = (first[100] + 1) % 256
    with pytest.raises(RomError) as raised:
        validate(bytes(first) + GPU_ROM.images[2], NVIDIA, RTX_3050_LAPTOP, source="x.rom")
    assert raised.value.lines() == [
        "x.rom: image 1: PCIR says 8086:1234, the GPU is 10de:25a2",
        "x.rom: image 1 (x86 PC-AT legacy) at 0x0: bad checksum (its bytes sum to 0x01 mod 256, expected 0x00)",
    ]


def with_npde(image: bytes, sub_units: int, last: bool, length: int = 0x10) -> bytes:
    """``image`` with NVIDIA's PCI Data Extension after its PCIR (16-byte aligned; OpenRM's
    NV_PCI_DATA_EXT_STRUCT: signature, revision 1.1, length, sub-image length, last image)."""
    at = (pcir_of(image, 0) + 0x18 + 0xF) & ~0xF
    npde = struct.pack("<4sHHHBB", b"NPDE", 0x101, length, sub_units, 0x80 if last else 0, 0)
    return patch(image, at, npde)


def test_npde_sub_image_length_and_last_flag_chain_nvidias_images() -> None:
    # The EFI image's PCIR claims two units and the last image; its NPDE says one unit and
    # more to come: NVIDIA's private FwSec image (code type 0xe0) follows, the last one.
    efi = with_npde(rom_image(NVIDIA, RTX_3050_LAPTOP, 0x03, units=2, last=True, seed=4)[:512], 1, last=False)
    fwsec = with_npde(rom_image(NVIDIA, RTX_3050_LAPTOP, 0xE0, units=1, last=False, seed=5), 1, last=True)
    data = GPU_ROM.images[0] + efi + fwsec + b"\xff" * 512
    report = validate(data, NVIDIA, RTX_3050_LAPTOP)
    assert [(image.code_type, image.size, image.last) for image in report.images] == [
        (0x00, 1024, False),
        (0x03, 512, False),
        (0xE0, 512, True),
    ]
    assert report.rom == data[:2048]


# NVIDIA's firmware (IFR) header ---------------------------------------------------------
# Built from OpenRM's NV_PBUS_IFR_FMT_FIXED0..2 (dev_bus.h) and s_romImgFindPciHeader_TU102
# (kernel_gsp_vbios_tu102.c), as nova-core's vbios.rst "IFR Header" documents them.


def nvgi_header(version: int, rom_offset: int, seed: int = 0) -> bytes:
    """An NVGI header of ``version`` that puts the ROM at ``rom_offset``; random bytes elsewhere,
    with a decoy 55 AA inside, so only reading the header finds the ROM."""
    header = bytearray(random.Random(seed).randbytes(rom_offset))
    header[0x32:0x34] = b"\x55\xaa"
    fixed_data_size, total_data_size = 0x40, 0x80
    header[0:4] = b"NVGI"
    header[4:8] = struct.pack("<I", fixed_data_size << 16 | version << 8)
    header[8:12] = struct.pack("<I", total_data_size)
    if version in (1, 2):
        header[fixed_data_size + 4 : fixed_data_size + 8] = struct.pack("<I", rom_offset)
    else:
        flash_status = 0x100
        header[total_data_size : total_data_size + 4] = struct.pack("<I", flash_status)
        directory = flash_status + 4096
        header[directory : directory + 4] = b"RFRD"
        header[directory + 8 : directory + 12] = struct.pack("<I", rom_offset)
    return bytes(header)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_nvgi_header_is_stripped_and_said(tmp_path: Path, dest: Path, version: int) -> None:
    offset = 0x400 if version < 3 else 0x1400
    src = tmp_path / "nvflash.rom"
    src.write_bytes(nvgi_header(version, offset, seed=version) + GPU_ROM.rom)
    assert check_file(src, GPU_ID).describe()[:2] == [
        f"{src}: valid PCI expansion ROM for 10de:25a2, 3 images, 2560 bytes",
        f"  stripped NVIDIA's NVGI firmware header (version {version}, {offset} bytes) before the ROM",
    ]
    assert import_rom(src, GPU_ID, dest).written
    assert dest.read_bytes() == GPU_ROM.rom


def corrupt(header: bytes, position: int, new: bytes) -> bytes:
    return patch(header, position, new) + GPU_ROM.rom


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"NVGI\x00\x01", "NVGI header is truncated: 6 bytes, its fixed words alone need 12"),
        (
            corrupt(nvgi_header(2, 0x400), 4, struct.pack("<I", 0x40 << 16 | 4 << 8)),
            "NVGI header: version 4 is not one gpupass knows (1, 2 or 3)",
        ),
        (
            corrupt(nvgi_header(1, 0x400), 0x44, struct.pack("<I", 0x402)),
            "NVGI header (version 1) puts the ROM at 0x402, but there is"
            f" {GPU_ROM.rom[2:4].hex(' ')} there, not an aligned 55 AA",
        ),
        (
            corrupt(nvgi_header(2, 0x400), 0x44, struct.pack("<I", 0x32)),
            "NVGI header (version 2) puts the ROM at 0x32, but there is 55 aa there, not an aligned 55 AA",
        ),
        (
            corrupt(nvgi_header(3, 0x1400), 0x1100, b"RFRX"),
            "NVGI header (version 3): no ROM directory 'RFRD' at 0x1100 (found 52 46 52 58)",
        ),
        (
            corrupt(nvgi_header(3, 0x1400), 8, struct.pack("<I", 0xFFFFF)),
            "NVGI header (version 3): total data size 0xfffff is past the end (7680 bytes)",
        ),
    ],
    ids=["truncated", "unknown-version", "offset-not-55aa", "offset-unaligned", "no-rom-directory", "size-past-end"],
)
def test_corrupt_nvgi_header_is_refused(tmp_path: Path, dest: Path, data: bytes, message: str) -> None:
    src = tmp_path / "nvflash.rom"
    src.write_bytes(data)
    with pytest.raises(RomError) as raised:
        import_rom(src, GPU_ID, dest)
    assert raised.value.lines() == [f"{src}: {message}"]
    assert not dest.parent.exists()


# Extraction through a fixture sysfs tree -----------------------------------------------

ReadHook = Callable[[SysfsDevice], None]


def eio() -> OSError:
    return OSError(errno.EIO, os.strerror(errno.EIO))


def eio_while_bound(device: SysfsDevice) -> None:
    """What a GPU held by vfio-pci does: the ROM BAR reads only once it is unbound."""
    if device.driver():
        raise eio()


def eio_always(device: SysfsDevice) -> None:
    """An Optimus laptop whose ROM BAR does not hold the vBIOS."""
    raise eio()


NO_SETUP_DATA = (
    "EFI stub's copy: no /sys/kernel/boot_params/setup_data (the kernel got no setup_data: not started through"
    " its EFI stub, or handed nothing)"
)


def not_nouveau(driver: str) -> str:
    return f"nouveau's copy: the GPU is bound to {driver}, not nouveau (gpupass binds no driver to get a ROM)"


class FakeKernel:
    """A sysfs tree with one GPU bound to vfio-pci, and the kernel's side of its files."""

    def __init__(self, root: Path, rom: bytes, pci_id: str = GPU_ID, driver: str | None = "vfio-pci") -> None:
        self.top = root
        self.root = root / "sys"
        self.rom = rom
        self.on_read: ReadHook = lambda device: None
        self.bind_error: int | None = None
        self.rom_enabled = False
        self.log: list[tuple[str, str]] = []
        real = self.root / "devices/pci0000:00/0000:00:01.0" / GPU_ADDRESS
        real.mkdir(parents=True)
        vendor, device = pci_id.split(":")
        (real / "vendor").write_text(f"0x{vendor}\n")
        (real / "device").write_text(f"0x{device}\n")
        (real / "rom").write_text("0\n")
        link = self.root / "bus/pci/devices" / GPU_ADDRESS
        link.parent.mkdir(parents=True)
        link.symlink_to(os.path.relpath(real, link.parent))
        for name in ("vfio-pci", "nvidia", "nouveau"):
            (self.root / "bus/pci/drivers" / name).mkdir(parents=True)
        if driver:
            self.bind(self.root / "bus/pci/drivers" / driver)

    def device(self, address: str, sysfs_root: Path) -> SysfsDevice:
        """Stands in for the SysfsDevice class."""
        return KernelDevice(self, address, sysfs_root)

    def driver(self) -> str | None:
        return SysfsDevice(GPU_ADDRESS, self.root).driver()

    def bind(self, driver_dir: Path) -> None:
        real = (self.root / "bus/pci/devices" / GPU_ADDRESS).resolve()
        (real / "driver").symlink_to(os.path.relpath(driver_dir, real))

    def unbind(self) -> None:
        (self.root / "bus/pci/devices" / GPU_ADDRESS / "driver").unlink()


class KernelDevice(SysfsDevice):
    """SysfsDevice whose two I/O methods answer as the kernel would."""

    def __init__(self, kernel: FakeKernel, address: str, sysfs_root: Path) -> None:
        super().__init__(address, sysfs_root)
        self.kernel = kernel

    def read(self, path: Path) -> bytes:
        if path != self.rom:
            return super().read(path)
        if not self.kernel.rom_enabled:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.kernel.on_read(self)
        return self.kernel.rom

    def write(self, path: Path, text: str) -> None:
        if path.name == "bind" and self.kernel.bind_error:
            raise OSError(self.kernel.bind_error, os.strerror(self.kernel.bind_error))
        super().write(path, text)
        self.kernel.log.append((path.name, text))
        if path.name == "rom":
            self.kernel.rom_enabled = text == "1"
        elif path.name == "unbind":
            self.kernel.unbind()
        elif path.name == "bind":
            self.kernel.bind(path.parent)


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    fake = FakeKernel(tmp_path, GPU_ROM.rom + b"\xff" * 512)
    monkeypatch.setattr(rom_sources, "SysfsDevice", fake.device)
    return fake


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "var/lib/gpupass/vbios.rom"


READ = [("rom", "1"), ("rom", "0")]
UNBIND, BIND = ("unbind", GPU_ADDRESS), ("bind", GPU_ADDRESS)


def test_readable_rom_bar_is_read_without_unbinding(kernel: FakeKernel, dest: Path) -> None:
    installed = extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert kernel.log == READ
    assert dest.read_bytes() == GPU_ROM.rom
    assert installed.lines()[:2] == [
        f"{dest}: stored (from ROM BAR of {GPU_ADDRESS})",
        f"ROM BAR of {GPU_ADDRESS}: valid PCI expansion ROM for 10de:25a2, 3 images, 2560 bytes",
    ]
    assert (
        rom_store.recorded_origin(GPU_ROM.rom, rom_store.origin_path(dest).read_text()) == f"ROM BAR of {GPU_ADDRESS}"
    )
    assert kernel.driver() == "vfio-pci"


def test_read_error_while_bound_unbinds_retries_and_binds_back(kernel: FakeKernel, dest: Path) -> None:
    kernel.on_read = eio_while_bound
    extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert kernel.log == [*READ, UNBIND, *READ, BIND]
    assert (kernel.root / "bus/pci/drivers/vfio-pci/bind").read_text() == GPU_ADDRESS
    assert dest.read_bytes() == GPU_ROM.rom
    assert kernel.driver() == "vfio-pci"


def test_read_error_after_unbind_binds_back_and_names_the_import_fallback(kernel: FakeKernel, dest: Path) -> None:
    kernel.on_read = eio_always
    with pytest.raises(RomError) as raised:
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert raised.value.lines() == [
        f"cannot read the ROM BAR of {GPU_ADDRESS}: Input/output error (also after unbinding it from vfio-pci)",
        NO_SETUP_DATA,
        not_nouveau("vfio-pci"),
        f"hint: {rom_sources.IMPORT_HINT}",
    ]
    assert "gpupass vbios import FILE" in rom_sources.IMPORT_HINT
    assert "gpupass vbios from-update FILE" in rom_sources.IMPORT_HINT
    assert kernel.log == [*READ, UNBIND, *READ, BIND]
    assert not dest.exists()
    assert kernel.driver() == "vfio-pci"


def test_read_error_without_a_driver_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dest: Path
) -> None:
    kernel = FakeKernel(tmp_path, GPU_ROM.rom, driver=None)
    monkeypatch.setattr(rom_sources, "SysfsDevice", kernel.device)
    kernel.on_read = eio_always
    with pytest.raises(RomError, match=re.escape("Input/output error (no driver was bound)")):
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert kernel.log == READ
    assert kernel.driver() is None


def test_unreadable_garbage_is_rejected_with_the_import_fallback(kernel: FakeKernel, dest: Path) -> None:
    kernel.rom = b"\xff" * 4096
    with pytest.raises(RomError) as raised:
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert raised.value.lines() == [
        f"ROM BAR of {GPU_ADDRESS}: no 55 AA signature in 4096 bytes (not a PCI expansion ROM)",
        NO_SETUP_DATA,
        not_nouveau("vfio-pci"),
        f"hint: {rom_sources.IMPORT_HINT}",
    ]
    assert not dest.exists()
    assert kernel.driver() == "vfio-pci"


def raise_keyboard_interrupt_when_unbound(device: SysfsDevice) -> None:
    if device.driver():
        raise eio()
    raise KeyboardInterrupt


def sigterm_when_unbound(device: SysfsDevice) -> None:
    """systemd stopping the unit while the GPU is unbound; the handler raises inside sleep."""
    if device.driver():
        raise eio()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)


def test_ctrl_c_while_unbound_binds_back(kernel: FakeKernel, dest: Path) -> None:
    kernel.on_read = raise_keyboard_interrupt_when_unbound
    with pytest.raises(KeyboardInterrupt):
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert kernel.log == [*READ, UNBIND, *READ, BIND]
    assert kernel.driver() == "vfio-pci"


def test_sigterm_while_unbound_binds_back_and_restores_the_handler(kernel: FakeKernel, dest: Path) -> None:
    kernel.on_read = sigterm_when_unbound
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as raised:
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert raised.value.code == 128 + signal.SIGTERM
    assert kernel.log == [*READ, UNBIND, *READ, BIND]
    assert kernel.driver() == "vfio-pci"
    assert signal.getsignal(signal.SIGTERM) is before


def test_failed_bind_back_says_how_to_recover(kernel: FakeKernel, dest: Path) -> None:
    kernel.on_read = eio_while_bound
    kernel.bind_error = errno.EBUSY
    with pytest.raises(RomError) as raised:
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert raised.value.lines() == [
        f"cannot bind vfio-pci back to {GPU_ADDRESS}: Device or resource busy",
        f"hint: the GPU is unbound: run 'echo {GPU_ADDRESS} > /sys/bus/pci/drivers/vfio-pci/bind' or reboot",
    ]
    assert not dest.exists()


@pytest.mark.parametrize(
    "interruption", [KeyboardInterrupt(), OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))], ids=["ctrl-c", "disk-full"]
)
def test_interrupted_write_leaves_no_file(
    kernel: FakeKernel, dest: Path, monkeypatch: pytest.MonkeyPatch, interruption: BaseException
) -> None:
    def write_half_then_fail(file, data: bytes) -> None:
        file.write(data[: len(data) // 2])
        raise interruption

    kernel.on_read = eio_while_bound
    monkeypatch.setattr(files, "write_all", write_half_then_fail)
    with pytest.raises((KeyboardInterrupt, RomError)) as raised:
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    if isinstance(interruption, OSError):
        assert raised.value.lines() == [f"cannot write {dest}: No space left on device"]
    assert not dest.exists()
    assert os.listdir(dest.parent) == []
    assert kernel.driver() == "vfio-pci"


def test_valid_rom_already_present_is_left_alone(kernel: FakeKernel, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    dest.write_bytes(GPU_ROM.rom)
    kernel.on_read = eio_always
    installed = extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert not installed.written
    assert installed.lines()[0] == f"{dest}: a valid ROM for this GPU is already present, nothing done"
    assert kernel.log == []
    assert kernel.driver() == "vfio-pci"


def test_invalid_file_at_dest_is_replaced(kernel: FakeKernel, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    dest.write_bytes(GPU_ROM.rom[:1000])
    assert extract(GPU_ADDRESS, GPU_ID, dest, kernel.top).written
    assert dest.read_bytes() == GPU_ROM.rom
    assert kernel.driver() == "vfio-pci"


def test_wrong_device_at_the_address_is_not_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dest: Path
) -> None:
    kernel = FakeKernel(tmp_path, GPU_ROM.rom, pci_id="144d:a80a", driver="nvidia")
    monkeypatch.setattr(rom_sources, "SysfsDevice", kernel.device)
    with pytest.raises(RomError) as raised:
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert raised.value.lines() == [
        f"{GPU_ADDRESS} is 144d:a80a, not the GPU 10de:25a2; not touching it"
        " (check gpu.functions[0].address in the model against 'lspci -Dnn')",
        NO_SETUP_DATA,
        not_nouveau("nvidia"),
        f"hint: {rom_sources.IMPORT_HINT}",
    ]
    assert kernel.log == []
    assert kernel.driver() == "nvidia"


def test_missing_device_is_reported(kernel: FakeKernel, dest: Path) -> None:
    with pytest.raises(RomError) as raised:
        extract("0000:02:00.0", GPU_ID, dest, kernel.top)
    assert raised.value.lines() == [
        "no PCI device 0000:02:00.0 (expected the GPU 10de:25a2 there;"
        " check gpu.functions[0].address in the model against 'lspci -Dnn')",
        NO_SETUP_DATA,
        "nouveau's copy: no PCI device 0000:02:00.0",
        f"hint: {rom_sources.IMPORT_HINT}",
    ]


def test_device_without_rom_bar_points_to_import(kernel: FakeKernel, dest: Path) -> None:
    (kernel.root / "bus/pci/devices" / GPU_ADDRESS / "rom").unlink()
    with pytest.raises(RomError) as raised:
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert raised.value.lines() == [
        f"{GPU_ADDRESS} has no ROM BAR ({kernel.root}/bus/pci/devices/{GPU_ADDRESS}/rom is missing)",
        NO_SETUP_DATA,
        not_nouveau("vfio-pci"),
        f"hint: {rom_sources.IMPORT_HINT}",
    ]
    assert kernel.log == []
    assert kernel.driver() == "vfio-pci"


# The EFI stub's copy and nouveau's, after the ROM BAR -----------------------------------

IGPU_ADDRESS, IGPU_ID = "0000:00:02.0", "8086:46a3"
IGPU_ROM = rom_image(0x8086, 0x46A3, 0, units=2, seed=7)
SETUP_DATA = "/sys/kernel/boot_params/setup_data"
EIO_LINE = f"cannot read the ROM BAR of {GPU_ADDRESS}: Input/output error (also after unbinding it from vfio-pci)"


def other_gpu_rom(kernel: FakeKernel) -> None:
    kernel.rom = rom_image(NVIDIA, 0x2520, 0)


def empty_rom(kernel: FakeKernel) -> None:
    kernel.rom = b""


def eio_rom(kernel: FakeKernel) -> None:
    kernel.on_read = eio_always


ROM_BAR_FAILURES = {
    "eio": (eio_rom, EIO_LINE),
    "empty": (empty_rom, f"ROM BAR of {GPU_ADDRESS}: read 0 bytes (the firmware put no image there)"),
    "wrong-device": (other_gpu_rom, f"ROM BAR of {GPU_ADDRESS}: image 1: PCIR says 10de:2520, the GPU is 10de:25a2"),
}


@pytest.mark.parametrize("failure", ROM_BAR_FAILURES.values(), ids=ROM_BAR_FAILURES.keys())
def test_the_efi_stubs_copy_is_stored_when_the_rom_bar_fails(
    kernel: FakeKernel, dest: Path, failure: tuple[Callable[[FakeKernel], None], str]
) -> None:
    break_rom_bar, line = failure
    break_rom_bar(kernel)
    build_setup_data(
        kernel.top,
        [
            (SETUP_E820_EXT, bytes(16) + bytes(range(40))),
            (SETUP_PCI, pci_setup_rom(IGPU_ID, IGPU_ADDRESS, IGPU_ROM)),
            (SETUP_PCI, pci_setup_rom(GPU_ID, GPU_ADDRESS, GPU_ROM.rom + b"\xff" * 1000)),
        ],
    )
    installed = extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    origin = f"EFI stub's copy ({SETUP_DATA}/2)"
    assert installed.lines()[:3] == [
        line,
        f"{dest}: stored (from {origin})",
        f"{origin}: valid PCI expansion ROM for 10de:25a2, 3 images, 2560 bytes",
    ]
    assert dest.read_bytes() == GPU_ROM.rom
    assert rom_store.recorded_origin(GPU_ROM.rom, rom_store.origin_path(dest).read_text()) == origin
    assert kernel.driver() == "vfio-pci"


@pytest.mark.parametrize("failure", ROM_BAR_FAILURES.values(), ids=ROM_BAR_FAILURES.keys())
def test_only_other_devices_roms_in_setup_data_store_nothing(
    kernel: FakeKernel, dest: Path, failure: tuple[Callable[[FakeKernel], None], str]
) -> None:
    break_rom_bar, line = failure
    break_rom_bar(kernel)
    build_setup_data(
        kernel.top,
        [
            (SETUP_PCI, pci_setup_rom(IGPU_ID, IGPU_ADDRESS, IGPU_ROM)),
            # The same GPU model in another slot is not this GPU.
            (SETUP_PCI, pci_setup_rom(GPU_ID, "0000:02:00.0", GPU_ROM.rom)),
        ],
    )
    with pytest.raises(RomError) as raised:
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert raised.value.lines() == [
        line,
        f"EFI stub's copy: {SETUP_DATA} holds option ROMs of 8086:46a3 at 0000:00:02.0, 10de:25a2 at"
        " 0000:02:00.0 only, none of the GPU 10de:25a2 at 0000:01:00.0",
        not_nouveau("vfio-pci"),
        f"hint: {rom_sources.IMPORT_HINT}",
    ]
    assert not dest.parent.exists()
    assert kernel.driver() == "vfio-pci"


@pytest.mark.parametrize(
    ("entries", "line"),
    [
        ([], f"EFI stub's copy: {SETUP_DATA}: it holds no entry, so none is a PCI option ROM (type 0x3)"),
        (
            [(SETUP_E820_EXT, bytes(40))],
            f"EFI stub's copy: {SETUP_DATA}: none of its 1 entries is a PCI option ROM (type 0x3)",
        ),
        (
            [(SETUP_PCI, pci_setup_rom(GPU_ID, GPU_ADDRESS, GPU_ROM.rom[:1000], pcilen=2560))],
            f"EFI stub's copy: {SETUP_DATA}/0/data: pcilen says 2560 bytes of ROM, only 1000 follow",
        ),
        (
            [(SETUP_PCI, pci_setup_rom(GPU_ID, GPU_ADDRESS, GPU_ROM.rom[:1536]))],
            f"EFI stub's copy ({SETUP_DATA}/0): image 2 at 0x400 is not marked as the last image, but the data"
            " ends after it (no last-image flag in the chain)",
        ),
    ],
    ids=["no-entries", "no-pci-entries", "pcilen-past-data", "invalid-rom"],
)
def test_unusable_setup_data_is_reported_in_one_line(
    kernel: FakeKernel, dest: Path, entries: list[tuple[int, bytes]], line: str
) -> None:
    kernel.on_read = eio_always
    build_setup_data(kernel.top, entries)
    with pytest.raises(RomError) as raised:
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert raised.value.lines()[1] == line
    assert not dest.parent.exists()


def test_nouveaus_copy_is_read_only_where_nouveau_holds_the_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dest: Path
) -> None:
    kernel = FakeKernel(tmp_path, GPU_ROM.rom, driver="nouveau")
    monkeypatch.setattr(rom_sources, "SysfsDevice", kernel.device)
    kernel.on_read = eio_always
    dri = kernel.top / "sys/kernel/debug/dri"
    for number, name, rom in (
        (0, "i915 dev=0000:00:02.0 unique=0000:00:02.0", None),
        (1, "nouveau dev=0000:01:00.0 unique=0000:01:00.0", GPU_ROM.rom),
    ):
        (dri / str(number)).mkdir(parents=True)
        (dri / str(number) / "name").write_text(name + "\n")
        if rom:
            (dri / str(number) / "vbios.rom").write_bytes(rom)
    installed = extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    origin = "nouveau's copy (/sys/kernel/debug/dri/1/vbios.rom)"
    assert installed.lines()[:3] == [
        f"cannot read the ROM BAR of {GPU_ADDRESS}: Input/output error (also after unbinding it from nouveau)",
        NO_SETUP_DATA,
        f"{dest}: stored (from {origin})",
    ]
    assert dest.read_bytes() == GPU_ROM.rom
    assert kernel.driver() == "nouveau"


def test_nouveaus_debugfs_without_the_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dest: Path) -> None:
    kernel = FakeKernel(tmp_path, GPU_ROM.rom, driver="nouveau")
    monkeypatch.setattr(rom_sources, "SysfsDevice", kernel.device)
    kernel.on_read = eio_always
    (kernel.top / "sys/kernel/debug/dri/0").mkdir(parents=True)
    (kernel.top / "sys/kernel/debug/dri/0/name").write_text("i915 dev=0000:00:02.0 unique=0000:00:02.0\n")
    with pytest.raises(RomError) as raised:
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert raised.value.lines()[2] == f"nouveau's copy: no DRM device in /sys/kernel/debug/dri is {GPU_ADDRESS}"
    (kernel.top / "sys/kernel/debug/dri/0").rename(kernel.top / "elsewhere")
    (kernel.top / "sys/kernel/debug/dri").rmdir()
    with pytest.raises(RomError) as raised:
        extract(GPU_ADDRESS, GPU_ID, dest, kernel.top)
    assert raised.value.lines()[2] == (
        "nouveau's copy: no /sys/kernel/debug/dri (debugfs is not mounted, or this is not root)"
    )
    assert not dest.parent.exists()


# Storage and import --------------------------------------------------------------------


def test_store_replaces_atomically_with_mode_0644(tmp_path: Path) -> None:
    dest = tmp_path / "vbios.rom"
    dest.write_bytes(b"old")
    os.chmod(dest, 0o600)
    store(GPU_ROM.rom, dest)
    assert dest.read_bytes() == GPU_ROM.rom
    assert dest.stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path)) == ["vbios.rom"]  # the _ROM table follows in install()


def test_import_of_the_same_rom_again_does_nothing(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "update.rom"
    src.write_bytes(b"\x00" * 7 + GPU_ROM.rom + b"\xff" * 100)
    assert import_rom(src, GPU_ID, dest).written
    again = import_rom(src, GPU_ID, dest)
    assert not again.written
    assert again.lines()[0] == f"{dest}: a valid ROM for this GPU is already present, nothing done"
    assert dest.read_bytes() == GPU_ROM.rom


def test_import_of_a_rom_for_another_gpu_keeps_the_installed_one(tmp_path: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    dest.write_bytes(GPU_ROM.rom)
    src = tmp_path / "other.rom"
    src.write_bytes(rom_image(NVIDIA, 0x2520, 0))
    with pytest.raises(RomError) as raised:
        import_rom(src, GPU_ID, dest)
    assert raised.value.lines() == [f"{src}: image 1: PCIR says 10de:2520, the GPU is 10de:25a2"]
    assert dest.read_bytes() == GPU_ROM.rom


def test_check_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RomError, match=re.escape(f"{tmp_path}/nope.rom: cannot be read: No such file or directory")):
        check_file(tmp_path / "nope.rom", GPU_ID)


# Command line --------------------------------------------------------------------------

AURORA_Z = load(REPO / "models/aurora-z.toml")


def test_cli_check_import_extract(
    kernel: FakeKernel, tmp_path: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "update.rom"
    src.write_bytes(GPU_ROM.rom)
    assert rom_commands.cli(["check", str(src)], AURORA_Z) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{src}: valid PCI expansion ROM for 10de:25a2, 3 images, 2560 bytes"
    )
    assert rom_commands.cli(["import", str(src), "--out", str(dest)], AURORA_Z) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{dest}: stored (from gpupass vbios import {src})"
    assert rom_commands.cli(["extract", "--root", str(kernel.top), "--out", str(dest)], AURORA_Z) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{dest}: a valid ROM for this GPU is already present, nothing done"
    )
    assert kernel.log == []


def test_cli_extract_reads_the_models_gpu(kernel: FakeKernel, dest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rom_commands.cli(["extract", "--root", str(kernel.top), "--out", str(dest)], AURORA_Z) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        f"ROM BAR of {GPU_ADDRESS}: valid PCI expansion ROM for 10de:25a2, 3 images, 2560 bytes"
    )
    assert dest.read_bytes() == GPU_ROM.rom
    assert kernel.driver() == "vfio-pci"
