"""DEP-8 tests shipped in every model's source package (debian/tests/), as Debian's and
Ubuntu's CI run them: Debian's autopkgtest, on the built source package and its .deb, in
a chroot testbed (autopkgtest-virt-chroot: root, no KVM needed)."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from gpupass import model
from gpupass.packaging import debsrc

from . import chroot
from .conftest import ROOT

pytestmark = pytest.mark.install
# What Debian 12's lintian says of every model's source package, tests or not: stdeb writes a
# Standards-Version newer than it knows, and debian/changelog's history starts at 0.1.0.
SOURCE_WARNINGS = {"newer-standards-version", "odd-historical-debian-changelog-version"}


def make_package(scratch: Path, aurora: model.Model) -> tuple[debsrc.SourcePackage, Path]:
    """The source package as `gpupass build-deb` makes it (the PPA's carries the same debian/),
    and its .deb built from the .dsc unpacked afresh; that tree stays, built."""
    source = debsrc.make_source(aurora, ROOT / "models" / "aurora-z.toml", scratch)
    return source, debsrc.build_binary(source)


@pytest.fixture(scope="session")
def package(chroot_phases) -> tuple[debsrc.SourcePackage, Path]:
    return chroot_phases.autopkgtest_package


@pytest.fixture(scope="module")
def source(package: tuple[debsrc.SourcePackage, Path]) -> Path:
    return package[0].dsc


def test_the_source_package_carries_its_autopkgtests(source: Path) -> None:
    assert "\nTestsuite: autopkgtest\n" in source.read_text()
    debian = next(source.parent.glob("*.debian.tar.xz"))
    with tarfile.open(debian) as tar:
        control = tar.extractfile("debian/tests/control").read().decode()
        script = tar.getmember("debian/tests/installed-command")
        text = tar.extractfile(script).read().decode()
    assert "Tests: installed-command\nDepends: @\n" in control
    assert script.mode & 0o111 and "PACKAGE=gpupass-aurora-z\n" in text
    # lintian checks debian/tests/control (syntax, fields, restrictions, that the scripts exist).
    result = subprocess.run(
        ["lintian", "--fail-on", "error", "--suppress-tags", "initial-upload-closes-no-bugs", str(source)],
        capture_output=True,
        text=True,
    )
    tags = {line.split()[3] for line in result.stdout.splitlines()}
    assert result.returncode == 0 and tags <= SOURCE_WARNINGS, result.stdout + result.stderr


def run_autopkgtest(
    plain_chroot: chroot.Chroot, package: tuple[debsrc.SourcePackage, Path], out: Path
) -> subprocess.CompletedProcess[str]:
    """autopkgtest installs the .deb in the testbed (a Debian 12 chroot with python3 and
    systemd) and runs the tests of the built source tree: from a .dsc or an unbuilt tree it
    would first install dpkg-dev there, from a mirror the testbed is not given. It runs from the
    session's start, beside the other chroot phases (tests/matrix.py)."""
    source, deb = package
    tree = source.directory / "build-tree"
    return subprocess.run(
        ["autopkgtest", "--output-dir", str(out), str(deb), f"{tree}/", "--", "chroot", str(plain_chroot.root)],
        capture_output=True,
        text=True,
        env=chroot.HOST_ENV,
    )


def test_autopkgtest_passes_in_a_chroot_testbed(chroot_phases) -> None:
    result, out = chroot_phases.jobs["autopkgtest"].result()
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "built-tree" in log
    assert (out / "summary").read_text().split() == ["installed-command", "PASS"], log[-6000:]
    stdout = (out / "installed-command-stdout").read_text()
    assert stdout.splitlines()[-1] == "all passed", stdout
    assert "ok: gpupass check --root" in stdout and "ok: gpupass vbios check" in stdout
    assert "ok: gpupass report --root" in stdout and "report.json names aurora-z" in stdout
