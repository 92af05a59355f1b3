"""The battery SSDT: compiled by the real iasl, its header checked byte by byte."""

from __future__ import annotations

import struct

import pytest

from gpupass import model
from gpupass.errors import ToolError
from gpupass.packaging import aml, render
from gpupass.packaging.artifacts import ssdt

pytestmark = pytest.mark.tool


@pytest.fixture(scope="module")
def aurora_aml(aurora: model.Model) -> bytes:
    return ssdt.render(aurora, render.Templates())["usr/share/gpupass/ssdt-battery.aml"]


def test_header_of_compiled_table(aurora_aml: bytes) -> None:
    header = aml.check(aurora_aml, "GPUPAS", "BATTERY", 1)
    assert (header.signature, header.length, header.oem_id, header.oem_table_id) == (
        "SSDT",
        len(aurora_aml),
        "GPUPAS",
        "BATTERY",
    )
    assert header.creator_id == "INTL"  # iasl's compiler id


def test_table_holds_battery_and_ac_adapter(aurora_aml: bytes) -> None:
    # Name segments as iasl emits them: the devices and their methods are all there.
    for name in (b"AC0_", b"BAT0", b"_PSR", b"_STA", b"_BIF", b"_BST", b"ACPI0003"):
        assert name in aurora_aml, name


def patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def fix_checksum(data: bytes) -> bytes:
    data = patched(data, 9, b"\0")
    return patched(data, 9, bytes([(-sum(data)) % 256]))


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda d: fix_checksum(patched(d, 0, b"DSDT")), "AML signature is 'DSDT' (expected 'SSDT')"),
        (lambda d: fix_checksum(d + b"\0"), None),  # length field no longer matches the size
        (lambda d: patched(d, 9, bytes([(d[9] + 1) % 256])), "AML bytes sum to 1 mod 256 (expected 0: bad checksum)"),
        (lambda d: fix_checksum(patched(d, 10, b"OTHER\0")), "AML OEM id is 'OTHER' (expected 'GPUPAS')"),
        (lambda d: fix_checksum(patched(d, 16, b"TABLE\0\0\0")), "AML OEM table id is 'TABLE' (expected 'BATTERY')"),
        (lambda d: fix_checksum(patched(d, 24, struct.pack("<I", 7))), "AML OEM revision is 7 (expected 1)"),
    ],
    ids=["signature", "length", "checksum", "oem-id", "oem-table-id", "oem-revision"],
)
def test_corrupt_tables_are_refused(aurora_aml: bytes, corrupt, message: str | None) -> None:
    data = corrupt(aurora_aml)
    message = message or f"AML length field says {len(aurora_aml)} bytes, the file has {len(data)}"
    with pytest.raises(aml.AmlError) as e:
        aml.check(data, "GPUPAS", "BATTERY", 1)
    assert e.value.problems == [message]


def test_short_file_is_refused() -> None:
    with pytest.raises(aml.AmlError, match=r"^AML is 10 bytes, shorter than the 36-byte ACPI table header$"):
        aml.check(b"SSDT" + bytes(6), "GPUPAS", "BATTERY", 1)


def test_iasl_errors_reach_the_user_with_the_asl_line() -> None:
    asl = 'DefinitionBlock ("", "SSDT", 2, "GPUPAS", "BATTERY", 1)\n{\n    Name (_FOO, Zork)\n}\n'
    with pytest.raises(ToolError) as e:
        ssdt.compile_asl(asl)
    lines = e.value.problems
    assert lines[0] == "iasl failed with exit status 255 while compiling the battery SSDT:"
    assert "  ssdt-battery.asl      3:     Name (_FOO, Zork)" in lines
    assert any(line.strip().startswith("Error    6126 -") and "syntax error" in line for line in lines)
    assert e.value.hint == "the rendered ASL is in the package as /usr/share/gpupass/ssdt-battery.asl"
