"""``gpupass vm attach | detach``: the passthrough pieces into a user's domain, and exactly
those out again; the old definition kept, and nothing changed while the domain runs.

Standard library only; libvirt is reached through ``libvirtconn``.
"""

from __future__ import annotations

import difflib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ... import paths
from ...errors import GpupassError
from ...model import Model
from . import libvirtconn, xmledit
from .looking_glass import LookingGlass
from .pieces import NATIVE_ACPI_TABLE_VERSION, Context, apply
from .xmledit import Editor

BACKUP_DIR = paths.STATE_DIR / "domains"


@dataclass(frozen=True)
class Outcome:
    """What attach/detach did (or with --dry-run, would do) to one domain."""

    name: str
    diff: str
    notices: tuple[str, ...] = ()
    backup: Path | None = None
    defined: bool = False

    def lines(self, verb: str, dry_run: bool) -> list[str]:
        out = [self.diff.rstrip("\n")] if self.diff else []
        out += [f"note: {n}" for n in self.notices]
        if not self.diff:
            out.append(f"{self.name}: nothing to change")
        elif dry_run:
            out.append(f"{self.name}: dry run, nothing changed")
        else:
            out.append(f"{self.name}: {verb}; the previous definition is kept in {self.backup}")
        return out


def diff(name: str, before: str, after: str, verb: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"{name} (as defined)",
            tofile=f"{name} (after gpupass vm {verb})",
        )
    )


def _edit(
    conn, name: str, verb: str, change: Callable[[ET.Element], list[str]], dry_run: bool, backup_dir: Path
) -> Outcome:
    domain = libvirtconn.lookup(conn, name)
    if not dry_run and libvirtconn.is_active(domain):
        raise GpupassError(
            f"{name} is running; gpupass changes only a domain that is shut off",
            hint=f"shut it down first (virsh shutdown {name}), or see the change with --dry-run",
        )
    original = libvirtconn.inactive_xml(domain)
    root = xmledit.parse(original)
    notices = change(root)
    before, after = xmledit.to_text(xmledit.parse(original)), xmledit.to_text(root)
    if before == after:
        return Outcome(name, "", tuple(notices))
    text = diff(name, before, after, verb)
    if dry_run:
        return Outcome(name, text, tuple(notices))
    backup = store_backup(backup_dir, name, original)
    domain = libvirtconn.define(conn, after)
    if verb == "attach":
        _adopt_controllers(conn, domain, root)
    return Outcome(name, text, tuple(notices), backup, defined=True)


def _adopt_controllers(conn, domain, sent: ET.Element) -> None:
    """Journal the PCI controllers libvirt added on define (root ports for the devices it
    placed: Looking Glass's shared memory, virtio input), so that detach takes them out too."""
    kept = xmledit.parse(libvirtconn.inactive_xml(domain))
    known = {c.get("index") for c in sent.iterfind("devices/controller[@type='pci']")}
    added = [c.get("index") for c in kept.iterfind("devices/controller[@type='pci']") if c.get("index") not in known]
    if not added:
        return
    editor = Editor(kept)
    for index in added:
        editor.adopt(f"devices/controller[@type='pci'][@index='{index}']")
    libvirtconn.define(conn, xmledit.to_text(kept))


def store_backup(backup_dir: Path, name: str, xml: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = backup_dir / f"{name}.{stamp}.xml"
    number = 1
    while path.exists():
        number += 1
        path = backup_dir / f"{name}.{stamp}.{number}.xml"
    try:
        backup_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(xml, encoding="utf-8")
    except OSError as e:
        raise GpupassError(f"cannot keep the old definition in {path}: {e.strerror}") from None
    return path


def attach(
    conn,
    name: str,
    model: Model,
    *,
    dry_run: bool = False,
    host_cpus: Iterable[int] | None = None,
    backup_dir: Path = BACKUP_DIR,
    looking_glass: LookingGlass | None = None,
) -> Outcome:
    ctx = Context(
        model,
        native_acpi_table=libvirtconn.version(conn) >= NATIVE_ACPI_TABLE_VERSION,
        host_cpus=tuple(libvirtconn.host_cpus(conn) if host_cpus is None else host_cpus),
        looking_glass=looking_glass,
    )

    def change(root: ET.Element) -> list[str]:
        apply(root, ctx)
        return ctx.notices

    return _edit(conn, name, "attach", change, dry_run, backup_dir)


def detach(conn, name: str, *, dry_run: bool = False, backup_dir: Path = BACKUP_DIR) -> Outcome:
    def change(root: ET.Element) -> list[str]:
        editor = Editor(root)
        if not editor.journaled:
            return [f"{name} holds nothing gpupass vm attach added"]
        editor.undo()
        return []

    return _edit(conn, name, "detach", change, dry_run, backup_dir)
