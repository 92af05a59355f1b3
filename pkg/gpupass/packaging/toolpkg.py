"""The ``gpupass`` tool package: the laptop command without a model, and the build side's
source tree that ``gpupass setup`` builds a model's package from on the laptop.

Its debian/ is ``tool/debian/`` in the source tree (control, rules, install list); the
changelog is this build's entry on the project's history, as for a model package. The tree
it is built from is::

    gpupass-<upstream>/
      debian/   tool/debian/ + changelog, copyright
      source/   what a model package is built from (debsrc.STAGED_FILES, STAGED_DIRS, the
                models' debian/) and the published models, installed as /usr/share/gpupass/source

Its Depends are what building a model's package calls there: python3 with jinja2 (render),
acpica-tools (iasl), stdeb and setuptools (debianize), dpkg-dev and debhelper with dh-python
(dpkg-buildpackage and the rules), and python3-all, which stdeb puts in Build-Depends.
Every model package Provides/Conflicts/Replaces ``gpupass``: the two ship the same command
and modules, and installing a model package removes this one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .. import paths
from . import changelog, debsrc, orig, version

PACKAGE = "gpupass"
TOOL_DEBIAN = paths.SOURCE_ROOT / "tool" / "debian"
# Debian packages only: the commands a model package's build runs (see the docstring).
BUILD_NEEDS = (
    "python3-jinja2",
    "acpica-tools",
    "python3-stdeb",
    "python3-setuptools",
    "python3-all",
    "dpkg-dev",
    "debhelper",
    "dh-python",
)
# The tool's own inputs beside those of every model package, and the published models it
# carries (gpupass setup matches the laptop against them): a new model is a new tool version.
INPUTS = (*version.SHARED_INPUTS, "tool", "models")


def stage(dest: Path, ver: version.Version) -> Path:
    """The tool's source tree in ``dest``, as the build reads it."""
    tree = dest / f"{PACKAGE}-{ver.upstream}"
    source = tree / "source"
    source.mkdir(parents=True)
    debsrc.copy_sources(source, ("debian", "models"))  # models: what setup matches the laptop against
    shutil.copytree(TOOL_DEBIAN, tree / "debian")
    shutil.copy2(paths.DEBIAN_DIR / "copyright", tree / "debian" / "copyright")
    control = tree / "debian" / "control"
    tokens = {
        "#MAINTAINER#": debsrc.maintainer(),
        "#BUILD_NEEDS#": ", ".join(BUILD_NEEDS),
        "#RECOMMENDS#": ", ".join(debsrc.RECOMMENDS),
        "#SUGGESTS#": ", ".join(debsrc.SUGGESTS),
    }
    text = control.read_text(encoding="utf-8")
    for token, value in tokens.items():
        text = text.replace(token, value)
    control.write_text(text, encoding="utf-8")
    write_changelog(tree, ver)
    return tree


def write_changelog(tree: Path, ver: version.Version, distribution: str = "unstable", debian_version: str = "") -> None:
    (tree / "debian" / "changelog").write_text(
        changelog.render(PACKAGE, debian_version or ver.debian, distribution, debsrc.maintainer(), ver),
        encoding="utf-8",
    )


def prepare(scratch: Path, ver: version.Version) -> Path:
    """The tree of the tool's source package (a PPA upload), its orig tarball beside it."""
    tree = stage(scratch, ver)
    orig.write(tree, scratch / f"{PACKAGE}_{ver.upstream}.orig.tar.gz", ver.epoch)
    return tree


def build(out_dir: Path = paths.BUILD_DIR, ver: version.Version | None = None) -> Path:
    """Build ``gpupass_<version>_all.deb`` into ``out_dir``, plus the alias ``gpupass.deb``;
    return the versioned file's path."""
    ver = ver or version.of_inputs(INPUTS)
    with tempfile.TemporaryDirectory(prefix="gpupass-tool-") as tmp:
        tree = stage(Path(tmp), ver)
        debsrc.normalise(tree, ver.epoch)
        deb = debsrc.buildpackage(tree, PACKAGE)
        alias = deb.with_name(f"{PACKAGE}.deb")
        shutil.copy2(deb, alias)
        debsrc.deliver([deb, alias], out_dir)
    return out_dir / deb.name
