"""Which domain gpupass manages: the one ``gpupass vm define`` made or ``vm attach`` last
changed, recorded for ``gpupass power`` (unless power.conf names another)."""

from __future__ import annotations

from pathlib import Path

from ... import paths
from ...errors import GpupassError


def remember_domain(name: str, record: Path = paths.VM_RECORD) -> None:
    """Called by gpupass vm define and attach: the domain gpupass power acts on by default."""
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(name + "\n", encoding="utf-8")
    except OSError as e:
        raise GpupassError(f"cannot record the domain in {record}: {e.strerror}") from None


def remembered_domain(root: Path = Path("/")) -> str | None:
    """The recorded domain under ``root``; None when none is."""
    try:
        return (root / str(paths.VM_RECORD).lstrip("/")).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
