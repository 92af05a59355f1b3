"""apt install / apt purge of the built package in a real Debian chroot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import chroot

pytestmark = pytest.mark.install


@pytest.fixture(scope="session")
def plain_chroot_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chroot.require_root_tools()
    return chroot.make_tarball(tmp_path_factory.mktemp("chroot"), include=("python3",))


@pytest.fixture
def plain_chroot(plain_chroot_tarball: Path, tmp_path: Path) -> chroot.Chroot:
    return chroot.unpack(plain_chroot_tarball, tmp_path / "root")


def test_apt_install_then_purge_leaves_nothing(plain_chroot: chroot.Chroot, built: Path) -> None:
    before = plain_chroot.files()
    deb = plain_chroot.copy_in(built / "gpupass-aurora-z.deb")

    installed = plain_chroot.run("apt-get", "install", "-y", deb)
    assert "Setting up gpupass-aurora-z (0.1.0-1)" in installed.stdout
    assert "gpupass-aurora-z is installed. At the next boot:" in installed.stdout
    # No GRUB in a bare chroot: the package says so instead of failing.
    assert "GRUB is not set up here" in installed.stderr
    for path in (
        "etc/default/grub.d/gpupass-aurora-z.cfg",
        "usr/lib/modprobe.d/gpupass-aurora-z.conf",
        "usr/share/gpupass/domain.xml",
        "usr/share/gpupass/ssdt-battery.aml",
    ):
        assert (plain_chroot.root / path).is_file(), path
    # Enabled for the next boot (a link that resolves inside the chroot, not here).
    wants = plain_chroot.root / "etc/systemd/system/multi-user.target.wants/gpupass-vbios.service"
    assert os.readlink(wants) == "/lib/systemd/system/gpupass-vbios.service"
    # The command works in the chroot with nothing but python3.
    version = plain_chroot.run("gpupass", "--version")
    assert version.stdout == "gpupass 0.1.0\n"

    plain_chroot.run("apt-get", "purge", "-y", "gpupass-aurora-z")
    plain_chroot.run("rm", deb)
    assert plain_chroot.files() ^ before == set()
