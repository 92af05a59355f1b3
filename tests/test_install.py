"""apt install / apt purge of the built package in a real Debian chroot."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gpupass.laptop.rom import acpi_table

from . import chroot, sysfs
from .test_vbios import rom_image

pytestmark = pytest.mark.install


MODE_STATE = "var/lib/gpupass/mode"


def test_apt_install_then_purge_leaves_nothing(plain_chroot: chroot.Chroot, built: Path, aurora_version: str) -> None:
    before = plain_chroot.files()
    deb = plain_chroot.copy_in(built / "gpupass-aurora-z.deb")

    installed = plain_chroot.run("apt-get", "install", "-y", deb)
    assert f"Setting up gpupass-aurora-z ({aurora_version})" in installed.stdout
    assert "gpupass-aurora-z is installed. At the next boot:" in installed.stdout
    assert "vfio-pci claims the dGPU (10de:25a2, 10de:2291);" in installed.stdout
    # No GRUB in a bare chroot: the package says so instead of failing.
    assert "GRUB is not set up here" in installed.stderr
    for path in (
        "etc/default/grub.d/gpupass-aurora-z.cfg",
        "usr/lib/modprobe.d/gpupass-aurora-z.conf",
        "usr/share/gpupass/domain.xml",
        "usr/share/gpupass/ssdt-battery.aml",
        "usr/lib/tmpfiles.d/gpupass-aurora-z.conf",
    ):
        assert (plain_chroot.root / path).is_file(), path
    # Enabled for the next boot (a link that resolves inside the chroot, not here).
    wants = plain_chroot.root / "etc/systemd/system/multi-user.target.wants/gpupass-vbios.service"
    # (deb-systemd-helper links to /lib/... on Debian 12, where /lib is /usr/lib's alias.)
    assert os.readlink(wants) in (
        "/usr/lib/systemd/system/gpupass-vbios.service",
        "/lib/systemd/system/gpupass-vbios.service",
    )
    # The command works in the chroot with nothing but python3.
    version = plain_chroot.run("gpupass", "--version")
    assert version.stdout == "gpupass 0.1.0\n"
    # It knows which model it was installed for.
    check = plain_chroot.run("gpupass", "check")
    assert check.stdout.splitlines()[0] == "gpupass check: MECHREVO Aurora Z (gpupass-aurora-z)"
    # Its help lists the laptop's commands only (no jinja2, no models/ here), and doctor
    # answers on a system where nothing is set up yet, one line per check, without a traceback.
    helped = plain_chroot.run("gpupass", "--help")
    assert re.findall(r"^    ([a-z][a-z-]*)", helped.stdout, re.M) == [
        "check",
        "probe",
        "setup",
        "report",
        "doctor",
        "vbios",
        "vm",
        "power",
        "gpu",
        "mode",
    ]
    doctor = plain_chroot.run("gpupass", "doctor", check=False)
    assert (doctor.returncode, doctor.stderr) == (1, "")
    lines = doctor.stdout.splitlines()
    assert lines[0] == "gpupass doctor: MECHREVO Aurora Z (gpupass-aurora-z)"
    assert (
        "fail: no vBIOS at /var/lib/gpupass/vbios.rom (fix: sudo gpupass vbios extract, or take the GPU's ROM from"
        " the laptop's BIOS update: sudo gpupass vbios from-update FILE)"
    ) in lines
    assert (
        "warn: libvirt not checked: libvirt's Python API is not installed (import libvirt failed)"
        " (fix: sudo apt install python3-libvirt)"
    ) in lines

    # gpupass power: its pieces are there, and status answers without libvirt or root's files.
    for path in POWER_PIECES:
        assert os.path.lexists(plain_chroot.root / path), path
    assert os.readlink(plain_chroot.root / HOOK_LINK) == "/usr/lib/gpupass/libvirt-qemu-hook"
    status = plain_chroot.run("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "gpupass", "power",
                              "status")  # fmt: skip
    assert status.stdout.splitlines()[:2] == [
        "gpupass power: MECHREVO Aurora Z (gpupass-aurora-z)",
        "power: no AC adapter seen",
    ]

    # On-demand mode (no kernel or initramfs tool here: nothing to rebuild), then remove from it:
    # every file gpupass mode wrote goes with the package.
    switched = plain_chroot.run("gpupass", "mode", "on-demand")
    assert switched.stdout.splitlines()[-1] == "gpupass mode: on-demand (was boot); effective after a reboot"
    assert (plain_chroot.root / MODE_STATE).read_text() == "on-demand\n"
    # Overrides only where their consumer's /etc directory is (no kmod, udev or dracut here).
    written = [line.removeprefix("wrote /") for line in switched.stdout.splitlines() if line.startswith("wrote /")]
    assert MODE_STATE in written and all((plain_chroot.root / path).is_file() for path in written)
    # The postinst's message (here from dpkg-reconfigure) follows the switched mode.
    configured = plain_chroot.run("dpkg-reconfigure", "gpupass-aurora-z").stdout
    assert "the dGPU (10de:25a2, 10de:2291) stays with its host\n    driver until the VM starts" in configured
    assert "vfio-pci claims" not in configured

    # Remove: no rule, unit or hook is left; the settings stay (a conffile) until purge.
    plain_chroot.run("apt-get", "remove", "-y", "gpupass-aurora-z")
    assert [path for path in written if (plain_chroot.root / path).exists()] == []
    left = {path for path in POWER_PIECES if os.path.lexists(plain_chroot.root / path)}
    assert left == {"etc/gpupass/power.conf"}
    plain_chroot.run("apt-get", "purge", "-y", "gpupass-aurora-z")
    plain_chroot.run("rm", deb)
    assert plain_chroot.files() ^ before == set()


def test_the_rom_ssdt_follows_the_stored_vbios_and_goes_with_remove(plain_chroot: chroot.Chroot, built: Path) -> None:
    """Stored vBIOS -> _ROM SSDT beside it; remove takes the SSDT (the vBIOS stays until purge),
    installing again writes it from the kept vBIOS, purge leaves nothing."""
    before = plain_chroot.files()
    deb = plain_chroot.copy_in(built / "gpupass-aurora-z.deb")
    rom = rom_image(0x10DE, 0x25A2, 0, units=8, seed=7)
    (plain_chroot.root / "tmp/update.rom").write_bytes(rom)
    state = plain_chroot.root / "var/lib/gpupass"
    plain_chroot.run("apt-get", "install", "-y", deb)
    assert not (state / "ssdt-rom.aml").exists()
    plain_chroot.run("gpupass", "vbios", "import", "/tmp/update.rom")
    assert (state / "ssdt-rom.aml").read_bytes() == acpi_table.ssdt(rom)

    plain_chroot.run("apt-get", "remove", "-y", "gpupass-aurora-z")
    assert sorted(p.name for p in state.iterdir()) == ["vbios.rom", "vbios.rom.source"]
    plain_chroot.run("apt-get", "install", "-y", deb)
    assert (state / "ssdt-rom.aml").read_bytes() == acpi_table.ssdt(rom)

    plain_chroot.run("apt-get", "purge", "-y", "gpupass-aurora-z")
    plain_chroot.run("rm", deb, "/tmp/update.rom")
    assert plain_chroot.files() ^ before == set()


HOOK_LINK = "etc/libvirt/hooks/qemu.d/gpupass-aurora-z"
POWER_PIECES = (
    "etc/gpupass/power.conf",
    "usr/lib/udev/rules.d/90-gpupass-aurora-z.rules",
    "usr/lib/systemd/system/gpupass-power.service",
    "usr/lib/gpupass/libvirt-qemu-hook",
    HOOK_LINK,
)


UNIT = "/usr/lib/systemd/system/gpupass-vbios.service"
POWER_UNIT = "/usr/lib/systemd/system/gpupass-power.service"


def test_units_pass_systemd_analyze_verify(plain_chroot: chroot.Chroot, built: Path) -> None:
    plain_chroot.run("apt-get", "install", "-y", plain_chroot.copy_in(built / "gpupass-aurora-z.deb"))
    for unit in (UNIT, POWER_UNIT):
        verified = plain_chroot.run("systemd-analyze", "verify", unit, check=False)
        assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", ""), verified.stderr
    # The libvirt hook is a POSIX shell script (what libvirt runs is the link, executable).
    plain_chroot.run("sh", "-n", "/" + HOOK_LINK)
    assert plain_chroot.run("/" + HOOK_LINK, "win11-gpu", "prepare").returncode == 0
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
    # Nor once the admin has added the line to the local file.
    local = plain_chroot.root / "etc/apparmor.d/local/abstractions/libvirt-qemu"
    local.parent.mkdir(parents=True)
    local.write_text("include if exists <abstractions/libvirt-qemu.d>\n")
    result = plain_chroot.run("apt-get", "install", "-y", "--reinstall", deb)
    assert "does not read /etc/apparmor.d/abstractions/libvirt-qemu.d/" not in result.stderr
    # A libvirt whose abstraction reads the directory gets no such notice.
    local.write_text("")
    abstraction.write_text("  include if exists <abstractions/libvirt-qemu.d>\n")
    result = plain_chroot.run("apt-get", "install", "-y", "--reinstall", deb)
    assert "does not read /etc/apparmor.d/abstractions/libvirt-qemu.d/" not in result.stderr
