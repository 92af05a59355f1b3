"""The one place a validated vBIOS is stored, with the record of where it came from and the
guest's ``_ROM`` table that serves it; each file atomically, whatever interrupts the write.

Standard library only.
"""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import files
from . import acpi_table
from .format import RomError, RomReport, validate


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM (systemd stopping the unit) kills without running ``finally``; turn it into
    SystemExit for the duration so the GPU is bound back and no temp file is left."""

    def exit_on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


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
    with sigterm_raises():
        store(report.rom, dest)
        store(origin_record(report.rom, origin), origin_path(dest))
        store(acpi_table.ssdt(report.rom), dest.with_name(acpi_table.NAME))  # the guest's _ROM serves what is stored
    return Installed(dest, report, written=True, origin=origin, tried=tried)


def store(rom: bytes, dest: Path) -> None:
    """Put ``rom`` at ``dest`` so that readers see the old file or the complete new one, never
    a part of it, even across a crash (files.write_atomically)."""
    try:
        files.write_atomically(dest, rom)
    except OSError as e:
        raise RomError(f"cannot write {dest}: {e.strerror}") from None


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
