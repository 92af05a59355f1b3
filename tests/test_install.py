"""apt install / apt purge of the built package in a real Debian chroot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import chroot, sysfs

pytestmark = pytest.mark.install


def test_apt_install_then_purge_leaves_nothing(plain_chroot: chroot.Chroot, built: Path, aurora_version: str) -> None:
    before = plain_chroot.files()
    deb = plain_chroot.copy_in(built / "gpupass-aurora-z.deb")

    installed = plain_chroot.run("apt-get", "install", "-y", deb)
    assert f"Setting up gpupass-aurora-z ({aurora_version})" in installed.stdout
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
    # It knows which model it was installed for.
    check = plain_chroot.run("gpupass", "check")
    assert check.stdout.splitlines()[0] == "gpupass check: MECHREVO Aurora Z (gpupass-aurora-z)"

    plain_chroot.run("apt-get", "purge", "-y", "gpupass-aurora-z")
    plain_chroot.run("rm", deb)
    assert plain_chroot.files() ^ before == set()


UNIT = "/lib/systemd/system/gpupass-vbios.service"


def test_vbios_unit_passes_systemd_analyze_verify(plain_chroot: chroot.Chroot, built: Path) -> None:
    plain_chroot.run("apt-get", "install", "-y", plain_chroot.copy_in(built / "gpupass-aurora-z.deb"))
    verified = plain_chroot.run("systemd-analyze", "verify", UNIT, check=False)
    assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", "")
    # The same check refuses a broken unit, so the pass above means something.
    unit = (plain_chroot.root / UNIT.lstrip("/")).read_text()
    broken = plain_chroot.root / "etc/systemd/system/gpupass-broken.service"
    broken.write_text(unit.replace("ExecStart=/usr/bin/gpupass", "ExecStart=/usr/bin/gpupass-missing"))
    refused = plain_chroot.run("systemd-analyze", "verify", "/etc/systemd/system/gpupass-broken.service", check=False)
    assert refused.returncode != 0
    assert "Command /usr/bin/gpupass-missing is not executable" in refused.stderr


# --- refusing the wrong machine (preinst) ------------------------------------------------

REFUSALS = [
    pytest.param(
        {"devices": sysfs.changed(sysfs.AURORA_Z_PCI, "0000:01:00.0", boot_vga="1")},
        "0000:01:00.0 is the boot VGA device: passing it through would leave the host without a display",
        id="gpu-is-boot-vga",
    ),
    pytest.param(
        {"devices": sysfs.without(sysfs.AURORA_Z_PCI, "0000:01:00.1")},
        "0000:01:00.1: no PCI device here (the model expects the audio function 10de:2291",
        id="missing-device",
    ),
    pytest.param(
        {"cpu": "AuthenticAMD", "tables": ("IVRS", "DSDT")},
        "this CPU is AuthenticAMD (amd), the model is for intel",
        id="amd-cpu-intel-model",
    ),
    pytest.param(
        {"devices": sysfs.changed(sysfs.AURORA_Z_PCI, "0000:02:00.0", group=14)},
        "IOMMU group 14 also holds 0000:02:00.0 144d:a80a (NVMe controller, class 0x010802), which is not"
        " passed through",
        id="dirty-iommu-group",
    ),
]


def as_laptop(chroot_: chroot.Chroot, **fixture) -> None:
    """Give the chroot the reference laptop's /sys and /proc/cpuinfo (or a variant)."""
    sysfs.build_sysfs(chroot_.root, **fixture)


@pytest.mark.parametrize("fixture,message", REFUSALS)
def test_preinst_refuses_the_wrong_machine(plain_chroot: chroot.Chroot, built: Path, fixture, message) -> None:
    as_laptop(plain_chroot, **fixture)
    deb = plain_chroot.copy_in(built / "gpupass-aurora-z.deb")
    before = plain_chroot.files()
    result = plain_chroot.run("apt-get", "install", "-y", deb, check=False)
    assert result.returncode != 0
    assert f"error: {message}" in result.stderr
    assert "hint: fix the problems above, or set GPUPASS_FORCE=1 to install anyway" in result.stderr
    # Refused before unpacking: not a file of the package was written.
    assert plain_chroot.files() == before
    status = plain_chroot.run("dpkg-query", "-W", "-f=${db:Status-Status}", "gpupass-aurora-z", check=False)
    assert status.stdout in ("", "not-installed")


def test_preinst_passes_on_the_reference_laptop(plain_chroot: chroot.Chroot, built: Path) -> None:
    as_laptop(plain_chroot)
    deb = plain_chroot.copy_in(built / "gpupass-aurora-z.deb")
    result = plain_chroot.run("apt-get", "install", "-y", deb)
    assert "ok: 0000:01:00.0 is 10de:25a2 (gpu)" in result.stderr
    assert "pre-flight checks passed" in result.stderr
    assert "error:" not in result.stderr


def test_gpupass_force_installs_anyway(plain_chroot: chroot.Chroot, built: Path) -> None:
    as_laptop(plain_chroot, devices=sysfs.changed(sysfs.AURORA_Z_PCI, "0000:01:00.0", boot_vga="1"))
    deb = plain_chroot.copy_in(built / "gpupass-aurora-z.deb")
    result = plain_chroot.run("apt-get", "install", "-y", deb, env={"GPUPASS_FORCE": "1"})
    assert "warning: GPUPASS_FORCE=1: installing despite 1 problem:" in result.stderr
    assert "Setting up gpupass-aurora-z" in result.stdout


# --- boot files: GRUB command line and initramfs, through install, remove, purge ---------

GRUB_ARGS = "intel_iommu=on iommu=pt vfio-pci.ids=10de:25a2,10de:2291"
# Exactly how grub-mkconfig reads its settings.
GRUB_SETTINGS = (
    "if test -f /etc/default/grub; then . /etc/default/grub; fi; "
    'for x in /etc/default/grub.d/*.cfg; do if [ -e "$x" ]; then . "$x"; fi; done; '
    'printf %s "$GRUB_CMDLINE_LINUX_DEFAULT"'
)


@pytest.fixture(scope="session")
def kernel_chroot_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Debian system with a kernel, initramfs-tools and GRUB's common files."""
    chroot.require_root_tools()
    return chroot.make_tarball(
        tmp_path_factory.mktemp("kernel-chroot"),
        include=("python3", "initramfs-tools", "linux-image-amd64", "grub2-common"),
    )


@pytest.fixture
def kernel_chroot(kernel_chroot_tarball: Path, tmp_path: Path) -> chroot.Chroot:
    system = chroot.unpack(kernel_chroot_tarball, tmp_path / "root")
    # What grub-pc's postinst does on a real system.
    system.run("cp", "/usr/share/grub/default/grub", "/etc/default/grub")
    return system


def initramfs(system: chroot.Chroot, dest: str) -> Path:
    """The initramfs the next boot would use, unpacked."""
    image = system.run("sh", "-c", "ls /boot/initrd.img-*").stdout.split()
    assert len(image) == 1, image
    system.run("unmkinitramfs", image[0], dest)
    return system.root / dest.lstrip("/")


def read_all(tree: Path, name: str) -> str:
    return "".join(p.read_text() for p in sorted(tree.rglob(name)) if p.is_file())


def test_install_remove_purge_boot_files(kernel_chroot: chroot.Chroot, built: Path) -> None:
    system = kernel_chroot
    before = system.files()
    assert system.run("sh", "-c", GRUB_SETTINGS).stdout == "quiet"
    deb = system.copy_in(built / "gpupass-aurora-z.deb")

    # Install: one initramfs rebuild, through the trigger.
    installed = system.run("apt-get", "install", "-y", deb)
    assert installed.stdout.count("Processing triggers for initramfs-tools") == 1, installed.stdout
    assert system.run("sh", "-c", GRUB_SETTINGS).stdout == f"quiet {GRUB_ARGS}"
    assert (system.root / "run/reboot-required").exists()
    listing = system.run("sh", "-c", "lsinitramfs /boot/initrd.img-*").stdout.splitlines()
    assert any(line.endswith("/vfio-pci.ko") for line in listing), "vfio-pci.ko is not in the initramfs"
    tree = initramfs(system, "/tmp/initrd-installed")
    modprobe = read_all(tree, "gpupass-aurora-z.conf")
    assert "options vfio-pci ids=10de:25a2,10de:2291" in modprobe
    assert "softdep nvidia pre: vfio-pci" in modprobe and "softdep nouveau pre: vfio-pci" in modprobe
    assert {"vfio", "vfio_iommu_type1", "vfio_pci"} <= set(read_all(tree, "modules").split())

    # Remove: the next boot gives the GPU back to the host.
    removed = system.run("apt-get", "remove", "-y", "gpupass-aurora-z")
    assert removed.stdout.count("Processing triggers for initramfs-tools") == 1, removed.stdout
    assert (system.root / "etc/default/grub.d/gpupass-aurora-z.cfg").exists(), "a conffile stays until purge"
    assert system.run("sh", "-c", GRUB_SETTINGS).stdout == "quiet"
    assert not (system.root / "usr/lib/modprobe.d/gpupass-aurora-z.conf").exists()
    tree = initramfs(system, "/tmp/initrd-removed")
    assert read_all(tree, "gpupass-aurora-z.conf") == ""
    assert "vfio" not in read_all(tree, "modules")
    assert "vfio-pci" not in read_all(tree, "*.conf")

    # Purge: not a file of the package is left.
    system.run("apt-get", "purge", "-y", "gpupass-aurora-z")
    system.run("rm", "-rf", deb, "/tmp/initrd-installed", "/tmp/initrd-removed")
    assert system.files() ^ before == set()


def test_postinst_says_how_to_let_apparmor_read_the_drop_in(plain_chroot: chroot.Chroot, built: Path) -> None:
    """With Debian 12's libvirt abstraction (no libvirt-qemu.d include), the user is told the one line to add."""
    abstraction = plain_chroot.root / "etc/apparmor.d/abstractions/libvirt-qemu"
    abstraction.parent.mkdir(parents=True)
    abstraction.write_text("  /usr/share/OVMF/** rk,\n  #include <local/abstractions/libvirt-qemu>\n")
    deb = plain_chroot.copy_in(built / "gpupass-aurora-z.deb")
    result = plain_chroot.run("apt-get", "install", "-y", deb)
    assert (
        "    echo 'include if exists <abstractions/libvirt-qemu.d>' >> /etc/apparmor.d/local/abstractions/libvirt-qemu"
    ) in result.stderr
    # A libvirt whose abstraction reads the directory gets no such notice.
    abstraction.write_text("  include if exists <abstractions/libvirt-qemu.d>\n")
    result = plain_chroot.run("apt-get", "install", "-y", "--reinstall", deb)
    assert "does not read /etc/apparmor.d/abstractions/libvirt-qemu.d/" not in result.stderr
