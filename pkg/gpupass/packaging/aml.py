"""ACPI table header: parse and check a compiled AML table (ACPI spec 5.2.6)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import GpupassError

HEADER = struct.Struct("<4sIBB6s8sI4sI")


class AmlError(GpupassError):
    """A compiled table that is not what the SSDT source promised."""


@dataclass(frozen=True)
class AcpiHeader:
    signature: str
    length: int
    revision: int
    checksum: int
    oem_id: str
    oem_table_id: str
    oem_revision: int
    creator_id: str
    creator_revision: int

    @classmethod
    def parse(cls, data: bytes) -> AcpiHeader:
        if len(data) < HEADER.size:
            raise AmlError(f"AML is {len(data)} bytes, shorter than the {HEADER.size}-byte ACPI table header")
        sig, length, rev, csum, oem, table, oem_rev, creator, creator_rev = HEADER.unpack_from(data)

        def text(raw: bytes) -> str:
            return raw.rstrip(b"\0 ").decode("ascii", "replace")

        return cls(text(sig), length, rev, csum, text(oem), text(table), oem_rev, text(creator), creator_rev)


def check(data: bytes, oem_id: str, oem_table_id: str, oem_revision: int) -> AcpiHeader:
    """Check an SSDT's header against the file and the expected OEM fields.

    Raises AmlError listing every mismatch.
    """
    header = AcpiHeader.parse(data)
    problems = []
    if header.signature != "SSDT":
        problems.append(f"AML signature is {header.signature!r} (expected 'SSDT')")
    if header.length != len(data):
        problems.append(f"AML length field says {header.length} bytes, the file has {len(data)}")
    if sum(data) % 256:
        problems.append(f"AML bytes sum to {sum(data) % 256} mod 256 (expected 0: bad checksum)")
    expected = {"OEM id": (header.oem_id, oem_id), "OEM table id": (header.oem_table_id, oem_table_id)}
    for name, (found, want) in expected.items():
        if found != want:
            problems.append(f"AML {name} is {found!r} (expected {want!r})")
    if header.oem_revision != oem_revision:
        problems.append(f"AML OEM revision is {header.oem_revision} (expected {oem_revision})")
    if problems:
        raise AmlError(problems)
    return header
