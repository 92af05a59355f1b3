"""The source package, as a PPA builder gets it: built in a clean chroot from its
Build-Depends alone, with the network off."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from gpupass import model
from gpupass.packaging import debsrc, ppa, version

from . import chroot
from .conftest import ROOT

pytestmark = pytest.mark.install
MODEL_FILE = ROOT / "models" / "aurora-z.toml"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, aurora: model.Model) -> Path:
    out = tmp_path_factory.mktemp("source")
    debsrc.build_source(aurora, MODEL_FILE, out)
    return out


@pytest.fixture(scope="module")
def noble(tmp_path_factory: pytest.TempPathFactory, aurora: model.Model) -> debsrc.SourcePackage:
    """The noble upload's source package, made as `gpupass ppa` makes it (unsigned)."""
    ver = version.of_model(MODEL_FILE)
    tree = debsrc.prepare(aurora, MODEL_FILE, tmp_path_factory.mktemp("noble"), ver)
    return debsrc.source_package(aurora, tree, ver, "noble", ver.for_series("noble"))


@pytest.fixture(scope="module")
def noble_tool(tmp_path_factory: pytest.TempPathFactory) -> debsrc.SourcePackage:
    """The tool package's noble upload, made as `gpupass ppa` makes it (unsigned)."""
    source = ppa.tool_source()
    v = source.ver.for_series("noble")
    tree = source.prepare(tmp_path_factory.mktemp("noble-tool"))
    source.changelog(tree, "noble", v)
    return debsrc.dpkg_source(tree, source.package, v, source.ver.epoch)


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


def contents(deb: Path) -> dict[str, tuple[int, int, str, str, bytes]]:
    """Every member of the .deb's data as dpkg unpacks it (mode, mtime, owner, link target,
    bytes), but its changelog (which names the version and series)."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: (
                m.mode,
                m.mtime,
                f"{m.uname}:{m.gname}",
                m.linkname,
                tar.extractfile(m).read() if m.isfile() else b"",
            )
            for m in tar.getmembers()
            if not m.name.endswith("/changelog.Debian.gz")
        }


def test_clean_builder_builds_the_noble_uploads_from_build_depends_alone(
    plain_chroot: chroot.Chroot,
    noble: debsrc.SourcePackage,
    noble_tool: debsrc.SourcePackage,
    built: Path,
    built_tool: Path,
) -> None:
    """What Launchpad does with the model's upload and the tool's: install the Build-Depends,
    unpack, build offline; no gpupass, no PyPI."""
    plain_chroot.run("apt-get", "update", "-q")
    debs = {}
    for upload in (noble, noble_tool):
        for f in upload.directory.iterdir():
            if f.is_file():
                plain_chroot.copy_in(f)
        dsc = f"/tmp/{upload.dsc.name}"
        plain_chroot.run("apt-get", "build-dep", "-y", "-q", dsc)
        plain_chroot.run("dpkg-source", "-x", dsc, f"/tmp/build-{upload.name}")
        with plain_chroot.mounts():
            build = f"cd /tmp/build-{upload.name} && dpkg-buildpackage -b -us -uc"
            plain_chroot.run("sh", "-c", build, env={"HOME": "/tmp"}, network=False)
        debs[upload.name] = plain_chroot.root / f"tmp/{upload.name}_{upload.version}_all.deb"
    # Same files, modes, dates and bytes as `nox -s build-deb` and `gpupass build-tool`, which build
    # the tree the .dsc is made of without packing and unpacking it: only the changelog names the series.
    assert contents(debs["gpupass-aurora-z"]) == contents(built / "gpupass-aurora-z.deb")
    assert contents(debs["gpupass"]) == contents(built_tool)
