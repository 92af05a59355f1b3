"""The firmware's copies of the GPU's option ROM that the kernel keeps: the EFI stub's
``setup_data`` entries and the DRM devices' debugfs directories (nouveau's ``vbios.rom``).

Read on demand by ``gpupass vbios extract``, not into the machine snapshot: each may be a MiB,
and check, probe and doctor never need them. Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SETUP_DATA = "sys/kernel/boot_params/setup_data"
DRI_DEBUGFS = "sys/kernel/debug/dri"
SETUP_PCI = 0x3  # arch/x86/include/uapi/asm/bootparam.h (uapi/asm/setup_data.h in newer kernels)


@dataclass(frozen=True)
class SetupData:
    """One entry of the boot protocol's setup_data list as arch/x86/kernel/ksysfs.c shows it:
    ``type`` (printed as 0x%x) and ``data``, the payload after the setup_data header."""

    number: int
    type: int | None  # None: unreadable or not a number
    data: bytes | None  # None: unreadable
    problem: str = ""  # why type or data could not be read


def _numbered(directory: Path) -> list[str]:
    """The entries of ``directory`` named by a number (setup_data/N, dri/N), in number order."""
    try:
        names = [p.name for p in directory.iterdir()]
    except OSError:
        return []
    return sorted((n for n in names if n.isdigit()), key=int)


def setup_data(root: Path = Path("/")) -> tuple[SetupData, ...] | None:
    """Every ``setup_data/N`` entry, in number order; None when the directory is not there."""
    directory = root / SETUP_DATA
    if not directory.is_dir():
        return None
    entries = []
    for name in _numbered(directory):
        entry = directory / name
        problems = []
        try:
            kind: int | None = int((entry / "type").read_text(encoding="ascii").strip(), 16)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            kind = None
            problems.append(f"type: {getattr(e, 'strerror', None) or 'not a hex number'}")
        data = None
        if kind == SETUP_PCI:  # the others (e820 tables, DTBs, ...) are never read
            try:
                data = (entry / "data").read_bytes()
            except OSError as e:
                problems.append(f"data: {e.strerror}")
        entries.append(SetupData(int(name), kind, data, "; ".join(problems)))
    return tuple(entries)


@dataclass(frozen=True)
class DriDebugfs:
    """A DRM device's debugfs directory (/sys/kernel/debug/dri/N) and the PCI address its
    ``name`` file gives ("nouveau dev=0000:01:00.0 unique=0000:01:00.0")."""

    path: str  # as on the laptop: /sys/kernel/debug/dri/1
    address: str | None


def dri_debugfs(root: Path = Path("/")) -> tuple[DriDebugfs, ...] | None:
    """The numbered DRM debugfs directories; None when debugfs is not mounted or not readable."""
    directory = root / DRI_DEBUGFS
    if not directory.is_dir():
        return None
    found = []
    for name in _numbered(directory):
        try:
            text = (directory / name / "name").read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        match = re.search(r"\bdev=(\S+)", text)
        found.append(DriDebugfs(f"/{DRI_DEBUGFS}/{name}", match.group(1) if match else None))
    return tuple(found)


def read_bytes(root: Path, path: str) -> bytes:
    """A firmware copy (e.g. nouveau's vbios.rom) at the laptop path ``path`` under ``root``;
    raises OSError for the caller to report."""
    return (root / path.lstrip("/")).read_bytes()
