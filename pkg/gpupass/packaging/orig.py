"""The orig tarball, the same bytes from the same inputs.

Launchpad refuses a second upload whose orig tarball differs from the first one with the
same name, and every PPA series of a version shares it. sdist's tarball carries file
mtimes from the checkout, the builder's user and the time in its gzip header; this one
carries the version's SOURCE_DATE_EPOCH, root:root, normalised modes and sorted names.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from pathlib import Path


def members(tree: Path) -> list[Path]:
    """Every directory and file under ``tree``, parents first, in a fixed order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        here = Path(dirpath)
        found += [here / d for d in dirnames] + [here / f for f in sorted(filenames)]
    return sorted(found, key=lambda p: p.relative_to(tree).parts)


def digest(files: list[Path], root: Path) -> hashlib._Hash:
    """A hash of what a tarball written as here keeps of ``files``: names (from ``root``),
    whether their owner may run them, bytes."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root)}\0{f.stat().st_mode & 0o100:o}\0".encode())
        h.update(f.read_bytes())
        h.update(b"\0")
    return h


def mode(status: os.stat_result) -> int:
    """0755 for a directory or a file its owner may run, else 0644."""
    return 0o755 if stat.S_ISDIR(status.st_mode) or status.st_mode & 0o100 else 0o644


def write(tree: Path, dest: Path, epoch: int) -> Path:
    """Pack ``tree`` (without debian/) as ``<tree name>/...`` into the gzip tarball ``dest``."""
    top = tree.name
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path in [tree, *members(tree)]:
                rel = path.relative_to(tree)
                if rel.parts[:1] == ("debian",):
                    continue
                info = tar.gettarinfo(str(path), arcname=str(Path(top) / rel))
                info.mtime = epoch
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = mode(path.lstat())
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return dest
