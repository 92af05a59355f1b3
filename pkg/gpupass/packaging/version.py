"""Package versions that move exactly when what a model's package installs changes.

A model's package is made of its model file and the shared inputs (code, templates,
ACPI source, debian/, packaging metadata). Its version is

    <upstream>+<N>-1        e.g. 0.1.0+42-1

where N counts the commits that changed any of those inputs (``git rev-list --count``).
N is deterministic from the commit, grows along history, and stays put when only other
models change: users get an upgrade for a fixed model and no other (each upgrade costs
them an initramfs rebuild). Uncommitted changes to the inputs give ``<upstream>+<N+1>~dirty``:
above the last commit, below the commit that will record them; such builds are for
local use only and publishing refuses them.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from .. import __version__, paths
from ..errors import GpupassError, ToolError
from . import tools

# What every model package is built from besides its model file (debsrc stages these).
SHARED_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "pkg", "config-templates", "acpi", "debian")
REVISION = "1"
DIRTY = "~dirty"


@dataclass(frozen=True)
class Version:
    upstream: str  # e.g. 0.1.0+42, the orig tarball's version
    changes: int  # N: commits that changed this model's inputs
    dirty: bool  # uncommitted changes to the inputs
    epoch: int  # SOURCE_DATE_EPOCH: when the inputs last changed in a commit
    commit: str  # abbreviated id of that commit
    subject: str  # its subject line

    @property
    def debian(self) -> str:
        return f"{self.upstream}-{REVISION}"

    def for_series(self, series: str) -> str:
        """The version of the upload for one Ubuntu series: a later series sorts higher,
        every series sorts below the plain version."""
        return f"{self.debian}~{series}1"


def model_spec(model_file: Path, root: Path = paths.SOURCE_ROOT) -> str | None:
    """The model file's path in the checkout; None for a file outside it."""
    try:
        return str(model_file.resolve().relative_to(root.resolve()))
    except ValueError:
        return None  # not in git, hence dirty (see of_model)


def inputs(model_file: Path, root: Path = paths.SOURCE_ROOT) -> list[str]:
    """The git pathspecs of a model package's inputs."""
    spec = model_spec(model_file, root)
    return [spec, *SHARED_INPUTS] if spec else list(SHARED_INPUTS)


def git(root: Path, *args: str) -> str:
    try:
        return tools.run("git", "-C", root, *args, what="versioning the package from git history").stdout
    except ToolError as e:
        raise GpupassError(
            f"{root}: cannot version the package from git ({e.problems[-1].strip()})",
            hint="build from a git checkout with its history (not a shallow clone)",
        ) from None


def history_epoch(root: Path) -> int:
    """The date of the newest entry in the project's debian/changelog (0 if none)."""
    try:
        text = (root / "debian" / "changelog").read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    trailer = re.search(r"^ -- .*? <[^>]*>  (.+)$", text, flags=re.M)
    return int(parsedate_to_datetime(trailer.group(1)).timestamp()) if trailer else 0


def of_model(model_file: Path, root: Path = paths.SOURCE_ROOT) -> Version:
    """The version of the package built from ``model_file`` in the checkout at ``root``."""
    specs = inputs(model_file, root)
    return of_inputs(specs, root, outside=len(specs) == len(SHARED_INPUTS))


def of_inputs(specs: list[str] | tuple[str, ...], root: Path = paths.SOURCE_ROOT, outside: bool = False) -> Version:
    """The version of a package built from the git pathspecs ``specs`` (``outside``: from a
    file git does not know, hence dirty)."""
    specs = list(specs)
    changes = int(git(root, "rev-list", "--count", "--full-history", "HEAD", "--", *specs).strip())
    last = git(root, "log", "-1", "--full-history", "--format=%ct%n%h%n%s", "HEAD", "--", *specs).splitlines()
    status = git(root, "status", "--porcelain", "--untracked-files=all", "--", *specs)
    dirty = outside or bool(status.strip())
    if not last:
        raise GpupassError(f"{root}: no commit touches {', '.join(specs)}", hint="commit the sources first")
    # A build's entry must be strictly newer than the history under it (lintian); dch dates
    # an entry before its commit, so this only matters for builds of uncommitted history.
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or max(int(last[0]), history_epoch(root) + 1))
    upstream = f"{__version__}+{changes + 1}{DIRTY}" if dirty else f"{__version__}+{changes}"
    return Version(upstream, changes, dirty, epoch, last[1], last[2] if len(last) > 2 else "")


LOCAL_COMMIT = "local"


def local(number: int) -> Version:
    """The version of a package ``gpupass setup`` builds on the laptop, without git:
    <upstream>+local<N>, N one more than the local package installed before."""
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
    return Version(f"{__version__}+local{number}", number, False, epoch, LOCAL_COMMIT, "")


def require_clean(version: Version, package: str) -> None:
    """Refuse to publish a build of uncommitted changes."""
    if version.dirty:
        raise GpupassError(
            f"{package} {version.debian}: built from uncommitted changes, not published",
            hint="commit the changes (git status shows them), then publish",
        )
