"""The guest's ``_ROM`` SSDT, encoded on the laptop side without iasl (laptop/romtable.py).

Checked against the real tools: iasl compiles the ASL the encoder claims to be (the bytes
after the header must be the same), ``iasl -d`` reads the table back, and ACPICA's acpiexec
loads QEMU's own DSDT (tests/data/qemu-7.2-q35-dsdt.aml, read from a booted guest; its
.source file says how) with the SSDT and runs ``_ROM``: each slice is exactly the ROM's bytes.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from gpupass import cli, guest, paths
from gpupass.errors import GpupassError
from gpupass.laptop.rom import acpi_table
from gpupass.laptop.rom import commands as rom_commands
from gpupass.model import load
from gpupass.packaging import aml

from .conftest import ROOT
from .test_vbios import rom_image

DSDT = ROOT / "tests" / "data" / "qemu-7.2-q35-dsdt.aml"
# 21 images' worth of 512-byte units: 10752 bytes, so the third 4 KiB slice is partial.
ROM = rom_image(0x10DE, 0x25A2, 0, units=21, seed=19)

ASL = """\
DefinitionBlock ("", "SSDT", 2, "GPUPAS", "GPUROM", 0x00000001)
{{
    External ({path}, DeviceObj)

    Scope ({path})
    {{
        Name (VROM, Buffer ({size:#x}) {{ {data} }})
        Method (_ROM, 2, NotSerialized)
        {{
            Local0 = Arg1
            If ((Local0 > 0x1000))
            {{
                Local0 = 0x1000
            }}
            Return (Mid (VROM, Arg0, Local0))
        }}
    }}
}}
"""


def test_header_is_a_valid_ssdt() -> None:
    data = acpi_table.ssdt(ROM)
    header = aml.check(data, "GPUPAS", "GPUROM", 1)
    assert (header.revision, header.creator_id, header.creator_revision) == (2, "GPUP", 1)


@pytest.mark.parametrize(
    "content,encoded",
    [
        (0, b"\x01"),
        (62, b"\x3f"),
        (63, b"\x41\x04"),
        (4093, b"\x4f\xff"),
        (4094, b"\x81\x00\x01"),
        (70000, b"\x83\x17\x11"),
    ],
)
def test_pkg_length_at_its_boundaries(content: int, encoded: bytes) -> None:
    assert acpi_table.pkg_length(content) == encoded


def test_an_empty_rom_gets_no_table() -> None:
    with pytest.raises(GpupassError, match=r"^the vBIOS is empty: no _ROM table for it$"):
        acpi_table.ssdt(b"")


def run(*argv: str | Path, cwd: Path) -> str:
    """The tool's output, stdout and stderr as they interleave (acpiexec dumps buffers on stderr)."""
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert result.returncode == 0, f"{argv[0]} failed ({result.returncode}):\n{result.stdout}"
    return result.stdout


@pytest.mark.tool
@pytest.mark.parametrize("size", [5, 10752, 70000], ids=["tiny", "slices", "3-byte-pkglength"])
def test_the_encoder_makes_what_iasl_makes_of_the_asl(size: int, tmp_path: Path) -> None:
    rom = (ROM * 7)[:size]
    source = tmp_path / "rom.asl"
    data = ", ".join(f"0x{b:02X}" for b in rom)
    source.write_text(ASL.format(path=guest.gpu_acpi_path(), size=size, data=data))
    run("iasl", "-vs", "-p", tmp_path / "iasl", source, cwd=tmp_path)
    compiled = (tmp_path / "iasl.aml").read_bytes()
    ours = acpi_table.ssdt(rom)
    assert ours[:28] == compiled[:9] + ours[9:10] + compiled[10:28]  # up to the creator id (iasl: INTL)
    assert ours[36:] == compiled[36:]


@pytest.mark.tool
def test_iasl_disassembles_the_table(tmp_path: Path) -> None:
    (tmp_path / "rom.aml").write_bytes(acpi_table.ssdt(ROM))
    run("iasl", "-d", "rom.aml", cwd=tmp_path)
    dsl = (tmp_path / "rom.dsl").read_text()
    for line in (
        r"External (_SB_.PCI0.SE0_.S00_, DeviceObj)",
        r"Scope (\_SB.PCI0.SE0.S00)",
        "Name (VROM, Buffer (0x2A00)",
        "Method (_ROM, 2, NotSerialized)  // _ROM: Read-Only Memory",
        "Return (Mid (VROM, Arg0, Local0))",
    ):
        assert line in dsl, dsl[:3000]


def acpiexec_rom(tmp_path: Path, offset: int, length: int) -> bytes:
    """``_ROM(offset, length)`` as acpiexec returns it (it reads integer arguments as decimal)."""
    ssdt = tmp_path / "ssdt-rom.aml"
    ssdt.write_bytes(acpi_table.ssdt(ROM))
    command = f"evaluate {guest.gpu_acpi_path()}._ROM {offset} {length}"
    out = run("acpiexec", "-b", command, DSDT, ssdt, cwd=tmp_path)
    assert "successfully acquired and loaded" in out and "Error" not in out, out
    return acpiexec_buffer(out)


def acpiexec_buffer(out: str) -> bytes:
    """The Buffer acpiexec printed as a method's result (its hex dump, row by row)."""
    marker = re.search(r"\[Buffer\] Length ([0-9A-F]+) =", out)
    assert marker, out
    data = bytearray()
    for line in out[marker.end() :].splitlines():
        row = re.fullmatch(r"\s*([0-9A-F]{4}): ((?:[0-9A-F]{2} )+)\s*//.*", line)
        if row:
            assert int(row.group(1), 16) == len(data), out  # the dump's offsets follow each other
            data += bytes.fromhex(row.group(2))
    assert len(data) == int(marker.group(1), 16), out
    return bytes(data)


@pytest.mark.tool
@pytest.mark.parametrize(
    "offset,length,expected",
    [
        (0, 4096, ROM[:4096]),
        (4096, 4096, ROM[4096:8192]),
        (8192, 4096, ROM[8192:]),  # the last, partial slice: 2560 bytes
        (10752, 4096, b""),  # past the end: nothing
        (100, 65536, ROM[100:4196]),  # a longer request gets 4 KiB
        (10000, 16, ROM[10000:10016]),
    ],
    ids=["first", "second", "last-partial", "past-end", "clamped", "small"],
)
def test_acpiexec_reads_the_rom_through_rom_method_over_qemus_dsdt(
    tmp_path: Path, offset: int, length: int, expected: bytes
) -> None:
    assert acpiexec_rom(tmp_path, offset, length) == expected


# gpupass vbios ssdt --------------------------------------------------------------------


def test_vbios_ssdt_writes_the_table_for_the_stored_rom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stored, out = tmp_path / "vbios.rom", tmp_path / "out" / "rom.aml"
    stored.write_bytes(ROM)
    argv = ["vbios", "--model", "aurora-z", "ssdt", "--out", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(paths, "VBIOS_ROM", stored)
        assert cli.main(argv) == 0
    assert out.read_bytes() == acpi_table.ssdt(ROM)
    assert capsys.readouterr().out == (
        f"{out}: written: _ROM on \\_SB.PCI0.SE0.S00 serves the 10752 bytes of {stored}\n"
    )


def test_vbios_ssdt_refuses_a_rom_of_another_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.rom"
    other.write_bytes(rom_image(0x10DE, 0x2520, 0, units=2))
    out = tmp_path / "rom.aml"
    argv = ["vbios", "--model", "aurora-z", "ssdt", "--rom", str(other), "--out", str(out)]
    assert cli.main(argv) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        f"gpupass: {other}: image 1: PCIR says 10de:2520, the GPU is 10de:25a2"
    )
    assert not out.exists()


def test_vbios_ssdt_says_when_the_vm_will_not_load_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    amd = load(ROOT / "models" / "hp-victus-16-navi23.toml")
    rom = tmp_path / "navi.rom"
    rom.write_bytes(rom_image(int(amd.gpu_function.vendor, 16), int(amd.gpu_function.device, 16), 0, units=2))
    assert rom_commands.cli(["ssdt", "--rom", str(rom), "--out", str(tmp_path / "rom.aml")], amd) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "note: gpupass-hp-victus-16-navi23's VM does not load it (guest.acpi_rom is off, or the GPU is not NVIDIA)"
    )
