"""The source package, as a PPA builder gets it: built in a clean chroot from its
Build-Depends alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpupass import model
from gpupass.build import debsrc

from . import chroot
from .conftest import ROOT

pytestmark = pytest.mark.install


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, aurora: model.Model) -> Path:
    out = tmp_path_factory.mktemp("source")
    debsrc.build_source(aurora, ROOT / "models" / "aurora-z.toml", out)
    return out


def test_source_upload_files(source: Path, aurora_version: str) -> None:
    names = sorted(p.name for p in source.iterdir())
    upstream = aurora_version.rsplit("-", 1)[0]
    assert names == [
        f"gpupass-aurora-z_{aurora_version}.debian.tar.xz",
        f"gpupass-aurora-z_{aurora_version}.dsc",
        f"gpupass-aurora-z_{aurora_version}_source.changes",
        f"gpupass-aurora-z_{upstream}.orig.tar.gz",
    ]
    changes = (source / f"gpupass-aurora-z_{aurora_version}_source.changes").read_text()
    assert "Architecture: source\n" in changes
    for name in names[:2] + names[3:]:
        assert name in changes, name


def test_clean_builder_builds_it_from_build_depends_alone(
    plain_chroot: chroot.Chroot, source: Path, built: Path, aurora_version: str
) -> None:
    """What Launchpad does: install the Build-Depends, unpack, build; no gpupass, no PyPI."""
    for f in source.iterdir():
        plain_chroot.copy_in(f)
    plain_chroot.run("apt-get", "update", "-q")
    plain_chroot.run("apt-get", "build-dep", "-y", "-q", f"/tmp/gpupass-aurora-z_{aurora_version}.dsc")
    plain_chroot.run("dpkg-source", "-x", f"/tmp/gpupass-aurora-z_{aurora_version}.dsc", "/tmp/build")
    with plain_chroot.mounts():
        plain_chroot.run("sh", "-c", "cd /tmp/build && dpkg-buildpackage -b -us -uc", env={"HOME": "/tmp"})
    deb = plain_chroot.root / f"tmp/gpupass-aurora-z_{aurora_version}_all.deb"
    # Same source, same SOURCE_DATE_EPOCH (from its changelog): the same bytes as here.
    assert deb.read_bytes() == (built / f"gpupass-aurora-z_{aurora_version}_all.deb").read_bytes()
