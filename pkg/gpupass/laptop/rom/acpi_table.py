"""The guest SSDT that serves the stored vBIOS through ACPI ``_ROM`` on the GPU's guest node.

On many Optimus laptops the vBIOS is not in the GPU's ROM BAR, and the driver (NVIDIA's,
nouveau's ``nvkm/subdev/bios/shadowacpi.c``) asks the GPU's ACPI node instead:
``_ROM(offset, length)``, at most 4 KiB a call (ACPI spec, "_ROM (Get ROM Data)"). The ROM
is the laptop's own and is stored there (``gpupass vbios``), and the laptop has python3 but
no iasl, so the table is encoded here from the ACPI spec's AML grammar (chapter 20, "ACPI
Machine Language Specification"). It is the AML iasl makes of::

    DefinitionBlock ("", "SSDT", 2, "GPUPAS", "GPUROM", 1)
    {
        External (\\_SB.PCI0.SE0.S00, DeviceObj)
        Scope (\\_SB.PCI0.SE0.S00)
        {
            Name (VROM, Buffer (size) { the ROM })
            Method (_ROM, 2, NotSerialized)
            {
                Local0 = Arg1
                If ((Local0 > 0x1000)) { Local0 = 0x1000 }
                Return (Mid (VROM, Arg0, Local0))
            }
        }
    }

``Mid`` returns the bytes from Arg0 on, at most Local0 of them and none past the end (an
empty buffer from an offset past it), so no call can read beyond the ROM. The tests compile
that ASL with iasl and compare, and run ``_ROM`` in ACPICA's acpiexec against QEMU's DSDT.
"""

from __future__ import annotations

import struct

from ... import guest
from ...errors import GpupassError

NAME = "ssdt-rom.aml"
OEM_ID = "GPUPAS"
OEM_TABLE_ID = "GPUROM"
OEM_REVISION = 1
CREATOR_ID = "GPUP"
CREATOR_REVISION = 1
SLICE = 0x1000  # the most _ROM returns per call
ROM_NAME = "VROM"

# AML opcodes and prefixes (ACPI 6.5, 20.2 "AML Grammar Definition").
ZERO, ONE = 0x00, 0x01
BYTE_PREFIX, WORD_PREFIX, DWORD_PREFIX, QWORD_PREFIX = 0x0A, 0x0B, 0x0C, 0x0E
ROOT_CHAR, DUAL_NAME_PREFIX, MULTI_NAME_PREFIX = 0x5C, 0x2E, 0x2F
NAME_OP, SCOPE_OP, BUFFER_OP, METHOD_OP, EXTERNAL_OP = 0x08, 0x10, 0x11, 0x14, 0x15
STORE_OP, LGREATER_OP, MID_OP, IF_OP, RETURN_OP = 0x70, 0x94, 0x9E, 0xA0, 0xA4
LOCAL0, ARG0, ARG1 = 0x60, 0x68, 0x69
NULL_NAME = 0x00
DEVICE_OBJ = 6  # ObjectType of External
HEADER = struct.Struct("<4sIBB6s8sI4sI")


def pkg_length(content: int) -> bytes:
    """PkgLength of ``content`` bytes: the encoded length counts its own bytes too."""
    if content + 1 < 1 << 6:
        return bytes([content + 1])
    for extra in (1, 2, 3):
        total = content + 1 + extra
        if total < 1 << (4 + 8 * extra):
            return bytes([extra << 6 | (total & 0x0F)]) + (total >> 4).to_bytes(extra, "little")
    raise GpupassError(f"an AML package of {content} bytes is longer than PkgLength can encode (256 MiB)")


def package(opcode: int, content: bytes) -> bytes:
    return bytes([opcode]) + pkg_length(len(content)) + content


def name_seg(segment: str) -> bytes:
    if not 1 <= len(segment) <= 4 or not segment.isascii():
        raise GpupassError(f"{segment!r} is not an ACPI name segment (1 to 4 characters)")
    return segment.ljust(4, "_").encode("ascii")


def name_string(path: str) -> bytes:
    """A NameString: ``\\A.B.C`` (from the root) or ``NAME``."""
    root = path.startswith("\\")
    segments = [name_seg(s) for s in path.lstrip("\\").split(".")]
    prefix = bytes([ROOT_CHAR]) if root else b""
    if len(segments) == 1:
        return prefix + segments[0]
    if len(segments) == 2:
        return prefix + bytes([DUAL_NAME_PREFIX]) + b"".join(segments)
    return prefix + bytes([MULTI_NAME_PREFIX, len(segments)]) + b"".join(segments)


def integer(value: int) -> bytes:
    """The shortest ComputationalData for ``value``, as iasl chooses it."""
    if value == 0:
        return bytes([ZERO])
    if value == 1:
        return bytes([ONE])
    for prefix, size in ((BYTE_PREFIX, 1), (WORD_PREFIX, 2), (DWORD_PREFIX, 4), (QWORD_PREFIX, 8)):
        if value < 1 << (8 * size):
            return bytes([prefix]) + value.to_bytes(size, "little")
    raise GpupassError(f"{value} does not fit an AML integer")


def buffer(data: bytes) -> bytes:
    return package(BUFFER_OP, integer(len(data)) + data)


def table(body: bytes, *, oem_id: str = OEM_ID, oem_table_id: str = OEM_TABLE_ID) -> bytes:
    """An SSDT: the 36-byte ACPI header (spec 5.2.6), checksum making all bytes sum to 0."""

    def field(text: str, size: int) -> bytes:
        return text.encode("ascii").ljust(size, b"\0")

    length = HEADER.size + len(body)
    header = HEADER.pack(
        b"SSDT", length, 2, 0, field(oem_id, 6), field(oem_table_id, 8), OEM_REVISION,
        field(CREATOR_ID, 4), CREATOR_REVISION,
    )  # fmt: skip
    data = bytearray(header + body)
    data[9] = -sum(data) % 256
    return bytes(data)


def rom_method() -> bytes:
    """Method (_ROM, 2): at most 4 KiB of VROM from Arg0 on, nothing past its end."""
    clamp = package(
        IF_OP, bytes([LGREATER_OP, LOCAL0]) + integer(SLICE) + bytes([STORE_OP]) + integer(SLICE) + bytes([LOCAL0])
    )
    body = bytes([STORE_OP, ARG1, LOCAL0]) + clamp
    body += bytes([RETURN_OP, MID_OP]) + name_string(ROM_NAME) + bytes([ARG0, LOCAL0, NULL_NAME])
    return package(METHOD_OP, name_string("_ROM") + bytes([2]) + body)  # 2 arguments, NotSerialized


def ssdt(rom: bytes, path: str | None = None) -> bytes:
    """The SSDT whose ``_ROM`` on the GPU's guest node (``path``) returns ``rom``."""
    if not rom:
        raise GpupassError("the vBIOS is empty: no _ROM table for it")
    path = path or guest.gpu_acpi_path()
    # iasl wraps an External in If (Zero) so that interpreters older than ACPI 6 skip it.
    external = package(IF_OP, bytes([ZERO, EXTERNAL_OP]) + name_string(path) + bytes([DEVICE_OBJ, 0]))
    scope = package(SCOPE_OP, name_string(path) + bytes([NAME_OP]) + name_string(ROM_NAME) + buffer(rom) + rom_method())
    return table(external + scope)
