"""stdeb's debian/ for a staged source tree, run once per set of inputs.

What ``setup.py debianize`` writes is a function of the tree it reads (setup.py,
pyproject.toml, the model's package-description.txt and stdeb.cfg), of stdeb, setuptools
and Python, and of SOURCE_DATE_EPOCH (the date of its changelog, which debsrc replaces). It
costs a Python start with setuptools, 0.35-0.45 s of every build; a build of inputs stdeb
has already seen copies the files stdeb wrote then from
``$XDG_CACHE_HOME/gpupass/debianize/<key>``, the key a hash of all of those. The .deb, the
.dsc and every PPA upload get stdeb's files either way.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import orig, tools

log = logging.getLogger("gpupass")

# The Python packages whose versions shape what stdeb writes (besides Python's own).
STDEB_TOOLS = ("stdeb", "setuptools")


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpupass" / "debianize"


def tool_versions() -> str:
    found = []
    for name in STDEB_TOOLS:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} absent")  # no cached output matches: stdeb runs, and says so
    return "\n".join([f"python {sys.version}", *found])


def key(tree: Path, epoch: int) -> str:
    """A hash of every file stdeb may read in ``tree`` (name, executable bit, bytes), the
    epoch and the tools' versions."""
    h = orig.digest([p for p in orig.members(tree) if p.is_file()], tree)
    h.update(f"{epoch}\0{tool_versions()}".encode())
    return h.hexdigest()


def debianize(tree: Path, epoch: int) -> None:
    """Write stdeb's debian/ into ``tree`` (which has none yet)."""
    cached = cache_root() / key(tree, epoch)
    if cached.is_dir():
        shutil.copytree(cached, tree / "debian")
        return
    tools.run(
        sys.executable,
        "setup.py",
        "--command-packages=stdeb.command",
        "debianize",
        cwd=tree,
        env={"SOURCE_DATE_EPOCH": str(epoch)},
        what="generating debian/ with stdeb",
    )
    for leftover in tree.glob("pkg/*.egg-info"):  # setuptools' egg_info, not a source file
        shutil.rmtree(leftover)
    store(tree / "debian", cached)


def store(debian: Path, cached: Path) -> None:
    """Keep a copy of stdeb's files under ``cached``, whole or not at all; a cache that
    cannot be written only costs the next build a stdeb run."""
    part = None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = Path(tempfile.mkdtemp(prefix=".part-", dir=cached.parent))
        shutil.copytree(debian, part, dirs_exist_ok=True)
        part.rename(cached)
    except OSError as e:  # also: a parallel build stored the same files first
        log.info("stdeb's output not cached in %s: %s", cached, e)
        if part:
            shutil.rmtree(part, ignore_errors=True)
