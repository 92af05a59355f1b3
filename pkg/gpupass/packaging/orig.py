"""The orig tarball, the same bytes from the same inputs.

Launchpad refuses a second upload whose orig tarball differs from the first one with the
same name, and every PPA series of a version shares it. sdist's tarball carries file
mtimes from the checkout, the builder's user and the time in its gzip header; this one
carries the version's SOURCE_DATE_EPOCH, root:root, normalised modes and sorted names.
"""

from __future__ import annotations

import gzip
import os
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
                executable = info.isdir() or info.mode & 0o100
                info.mode = 0o755 if executable else 0o644
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return dest
