"""Upgrades and model switches on every supported release, as users get them: version N
installed from the signed apt repository and set up, then N+1 (built from a commit that
changes the model) published there and taken with `apt-get upgrade`; and one model's
package installed over another's.

The systems are the release matrix's (conftest.release_tarballs, one tarball per release
per session); the builds and the repository are made once per session too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpupass import model, paths
from gpupass.laptop.vm import pieces as vm_pieces
from gpupass.laptop.vm import xmledit
from gpupass.packaging import debsrc, repo

from . import chroot, sysfs
from .conftest import EACH_RELEASE, ROOT, git, gpupass, scratch_clone, throwaway_key
from .test_releases import APPARMOR_FIX, GRUB_ARGS, GRUB_SETTINGS, MODPROBE, NATIVE_DOMAIN, Image, apt, newest_kernel
from .test_vbios import NVIDIA, RTX_3050_LAPTOP, rom_image

pytestmark = pytest.mark.install

PACKAGE = "gpupass-aurora-z"
# N+1's model fix: the audio function's id (the GRUB line and modprobe options follow it) ...
OLD_AUDIO, NEW_AUDIO = 'id = "10de:2291"', 'id = "10de:228e"'
NEW_GRUB_ARGS = GRUB_ARGS.replace("10de:2291", "10de:228e")
# ... and a changed AppArmor drop-in, so that dpkg has a new conffile to weigh against the admin's.
TEMPLATE_LINE = "# Changed in the next version (the upgrade test's commit).\n"
GRUB_DROP_IN = f"etc/default/grub.d/{PACKAGE}.cfg"
APPARMOR_DROP_IN = f"etc/apparmor.d/abstractions/libvirt-qemu.d/{PACKAGE}"
ADMIN_RULE = "  /srv/isos/** r,  # added by the admin\n"
# The admin's choice in gpupass power's conffile (unchanged by N+1: dpkg keeps it as it is).
POWER_CONF = "etc/gpupass/power.conf"
# dpkg's conffile choices for an upgrade nobody answers prompts for: keep a changed conffile the
# admin edited (the default answer), write the package's new one beside it as .dpkg-dist.
CONFFILE_OPTIONS = ("-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold")
# apt-get update refreshing only the gpupass repository: the rest of the system stays as the
# tarball made it, and nothing else is upgraded.
ONLY_GPUPASS = ("-o", "Dir::Etc::SourceList=/dev/null")
DOMAIN_FILE = "etc/libvirt/qemu/win11.xml"


@dataclass(frozen=True)
class Versions:
    old: str
    new: str
    repo_old: Path  # the repository holding version N (the "before" of an upgrade)
    repo_new: Path  # the same repository once N+1 is published into it


def build(clone: Path) -> Path:
    """``gpupass build-deb aurora-z`` in ``clone``, from its own sources and history."""
    result = gpupass(clone, "build-deb", "aurora-z", "--out", str(clone / "build"))
    assert result.returncode == 0, result.stderr
    return next((clone / "build").glob(f"{PACKAGE}_*_all.deb"))


OTHER = "hp-victus-16-rtx4060"
OTHER_GRUB_ARGS = "intel_iommu=on iommu=pt vfio-pci.ids=10de:28a0,10de:22be"


def make_other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model's package, to switch to."""
    model_file = ROOT / "models" / f"{OTHER}.toml"
    return debsrc.build_deb(model.load(model_file), model_file, tmp_path_factory.mktemp("other"))


@pytest.fixture(scope="session")
def versions(chroot_phases) -> Versions:
    return chroot_phases.versions


def make_versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    """Version N and N+1 of aurora-z's package in a signed repository, built from a scratch
    clone before and after a commit that changes the model (and the AppArmor template)."""
    work = tmp_path_factory.mktemp("upgrade")
    clone = scratch_clone(work / "clone")
    old = shutil.copy2(build(clone), work)
    model_file = clone / "models/aurora-z.toml"
    model_file.write_text(model_file.read_text().replace(OLD_AUDIO, NEW_AUDIO))
    with (clone / "config-templates/apparmor-libvirt-qemu.j2").open("a") as template:
        template.write(TEMPLATE_LINE)
    git(clone, "commit", "--quiet", "-am", "aurora-z: the audio function's id")
    shutil.rmtree(clone / "build")
    new = shutil.copy2(build(clone), work)

    published = work / "repo"
    with throwaway_key(work / "gnupg") as key:
        repo.publish([Path(old)], published, key)
        shutil.copytree(published, work / "repo-old")
        repo.publish([Path(new)], published, key)
    return Versions(version_of(Path(old)), version_of(Path(new)), work / "repo-old", published)


def version_of(deb: Path) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()


def serve(root: chroot.Chroot, published: Path) -> None:
    """``published`` as the chroot's gpupass repository (replacing what it served), apt's lists refreshed."""
    inside = root.root / "srv/gpupass"
    shutil.rmtree(inside, ignore_errors=True)
    shutil.copytree(published, inside)
    (root.root / "etc/apt/sources.list.d/gpupass.sources").write_text(repo.sources_entry(Path("/srv/gpupass")))
    root.run("apt-get", "update", "-q", *ONLY_GPUPASS)


def status(root: chroot.Chroot) -> str:
    return root.run("dpkg-query", "-W", "-f=${Version} ${db:Status-Abbrev}", PACKAGE).stdout.strip()


def initramfs_rebuilds(output: str, initramfs: str) -> int:
    """Images written in one apt run, by the line the tool prints for each (Debian's
    update-initramfs and dracut's kernel hook alike: "<tool>: Generating /boot/initrd.img-...")."""
    tool = "dracut" if initramfs == "dracut" else "update-initramfs"
    return len(re.findall(rf"^{tool}: Generating /boot/initrd\.img-", output, re.M))


def attached_domain(aurora: model.Model) -> str:
    """The domain as `gpupass vm attach` leaves it defined: its journal in <metadata>."""
    root = xmledit.parse(NATIVE_DOMAIN)
    vm_pieces.apply(root, vm_pieces.Context(aurora))
    return xmledit.to_text(root)


@EACH_RELEASE
def test_upgrade_refused_upgrade_and_model_switch(release: chroot.Release, chroot_phases) -> None:
    """N installed and set up; N+1 refused on a laptop the model is not for (N stays, whole);
    then upgraded: one initramfs rebuild, the new GRUB line, the admin's conffile kept; then
    another model's package installed over it. (One system for the three: each step starts
    from the state the one before leaves, as on a laptop, and the release's set-up and first
    initramfs rebuild are paid once. The three releases' rows at once, beside the other
    phases: tests/matrix.py.)"""
    chroot_phases.rows["upgrade"].result(release)


def upgrade_refused_upgrade_and_model_switch(
    release: chroot.Release, root: chroot.Chroot, versions: Versions, other_model: Path, aurora: model.Model
) -> None:
    serve(root, versions.repo_old)
    installed = apt(root, "install", "-y", "--no-install-recommends", PACKAGE)
    assert initramfs_rebuilds(installed, release.initramfs) == 1, installed
    assert status(root) == f"{versions.old} ii"
    assert root.run("sh", "-c", GRUB_SETTINGS).stdout == f"quiet {GRUB_ARGS}"

    # Set up as on the laptop: the vBIOS stored, the admin's AppArmor additions (on Debian 12
    # the line the postinst printed, in the admin's own file; everywhere a rule of theirs in
    # the package's drop-in, a conffile), a domain attached: libvirt keeps the definition
    # (and with it the attach journal) in /etc/libvirt/qemu, attach its backup in /var/lib/gpupass.
    (root.root / "tmp/gpu.rom").write_bytes(rom_image(NVIDIA, RTX_3050_LAPTOP, 0))
    root.run("gpupass", "vbios", "import", "/tmp/gpu.rom")
    if APPARMOR_FIX in installed:
        root.run("sh", "-c", APPARMOR_FIX.strip())
    with (root.root / APPARMOR_DROP_IN).open("a") as drop_in:
        drop_in.write(ADMIN_RULE)
    power_conf = root.root / POWER_CONF
    power_conf.write_text(power_conf.read_text().replace("on_battery = notify", "on_battery = shutdown"))
    (root.root / DOMAIN_FILE).write_text(attached_domain(aurora))
    (root.root / "var/lib/gpupass/domains").mkdir()
    (root.root / "var/lib/gpupass/domains/win11.20260101T000000Z.xml").write_text(NATIVE_DOMAIN)
    kept = {
        path: (root.root / path).read_bytes()
        for path in (paths.VBIOS_ROM.relative_to("/"), DOMAIN_FILE, APPARMOR_DROP_IN, POWER_CONF,
                     "var/lib/gpupass/domains/win11.20260101T000000Z.xml")
    }  # fmt: skip
    image = Image(root, release.initramfs, newest_kernel(root), "/tmp/initrd-old")
    assert "options vfio-pci ids=10de:25a2,10de:2291" in image.read(MODPROBE)

    # The package taken to another laptop (an AMD one): N+1's preinst refuses, as an install's
    # would. The chroot is given that laptop's /sys and /proc/cpuinfo (no /proc mounted over them).
    sysfs.build_sysfs(root.root, cpu="AuthenticAMD", tables=("IVRS", "DSDT"))
    serve(root, versions.repo_new)
    refused = root.run("apt-get", "upgrade", "-y", *CONFFILE_OPTIONS, check=False)
    assert refused.returncode != 0
    assert "error: this CPU is AuthenticAMD (amd), the model is for intel" in refused.stderr
    assert "hint: fix the problems above, or set GPUPASS_FORCE=1 to install anyway" in refused.stderr
    assert f"new {PACKAGE} package pre-installation script subprocess returned error exit status 1" in refused.stderr
    # N stays installed and whole: every file as the package shipped it but the admin's conffiles.
    assert status(root) == f"{versions.old} ii"
    verify = root.run("dpkg", "--verify", PACKAGE, check=False).stdout
    assert sorted(verify.splitlines()) == [f"??5?????? c /{APPARMOR_DROP_IN}", f"??5?????? c /{POWER_CONF}"]
    assert root.run("sh", "-c", GRUB_SETTINGS).stdout == f"quiet {GRUB_ARGS}"
    assert root.run("gpupass", "check", check=False).stdout.splitlines()[0] == (
        "gpupass check: MECHREVO Aurora Z (gpupass-aurora-z)"
    )

    # Back on the chroot (no PCI devices: problems are warnings; /proc is the host's), the
    # upgrade goes through.
    shutil.rmtree(root.root / "sys")
    (root.root / "sys").mkdir()
    (root.root / "proc/cpuinfo").unlink()
    upgraded = apt(root, "upgrade", "-y", *CONFFILE_OPTIONS)
    assert f"Unpacking {PACKAGE} ({versions.new}) over ({versions.old})" in upgraded
    # The preinst ran with "upgrade": its checks and their verdict are in the output.
    assert "warning: no PCI devices under /sys/bus/pci/devices (a chroot?)" in upgraded, upgraded
    assert re.search(r"^pre-flight checks passed with \d+ warnings?$", upgraded, re.M), upgraded
    assert initramfs_rebuilds(upgraded, release.initramfs) == 1, upgraded
    assert upgraded.count(f"Processing triggers for {release.initramfs}") == 1, upgraded
    assert status(root) == f"{versions.new} ii"
    image = Image(root, release.initramfs, newest_kernel(root), "/tmp/initrd-new")
    assert "options vfio-pci ids=10de:25a2,10de:228e" in image.read(MODPROBE)
    # The unedited GRUB drop-in is replaced silently; the edited AppArmor one is kept, and
    # the package's new version waits beside it as .dpkg-dist.
    assert root.run("sh", "-c", GRUB_SETTINGS).stdout == f"quiet {NEW_GRUB_ARGS}"
    assert not list((root.root / "etc/default/grub.d").glob("*.dpkg-*"))
    assert f"Installing new version of config file /{APPARMOR_DROP_IN}" not in upgraded
    dist = (root.root / f"{APPARMOR_DROP_IN}.dpkg-dist").read_text()
    assert dist.endswith(TEMPLATE_LINE) and ADMIN_RULE not in dist
    for path, content in kept.items():
        assert (root.root / path).read_bytes() == content, path

    switch_models(root, release, other_model)


def switch_models(root: chroot.Chroot, release: chroot.Release, other_model: Path) -> None:
    """`apt install ./gpupass-<other>.deb` over the installed model: gpupass-model's conflict
    removes the first, one initramfs rebuild, and of the first only its (inert) conffiles stay."""
    first = set(root.run("dpkg-query", "-L", PACKAGE).stdout.split())
    conffiles = set(root.run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout.split()[::2])
    assert conffiles == {f"/{GRUB_DROP_IN}", f"/{APPARMOR_DROP_IN}", f"/{POWER_CONF}"}
    switched = apt(root, "install", "-y", "--no-install-recommends", root.copy_in(other_model))
    assert f"Removing {PACKAGE} (" in switched, switched
    assert f"Setting up gpupass-{OTHER} (" in switched, switched
    assert initramfs_rebuilds(switched, release.initramfs) == 1, switched
    assert root.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", PACKAGE).stdout.strip() == "rc"
    second = set(root.run("dpkg-query", "-L", f"gpupass-{OTHER}").stdout.split())
    left = {p for p in first - second if (root.root / p.lstrip("/")).is_file()}
    assert left == conffiles - second
    # power.conf is every model's (the same bytes in each package): the admin's settings carry
    # over to the second model as they were, without a conffile prompt.
    assert conffiles & second == {f"/{POWER_CONF}"}
    assert "\non_battery = shutdown\n" in (root.root / POWER_CONF).read_text()
    # The first's GRUB drop-in is inert (its model file is gone): the line is the second's alone.
    assert root.run("sh", "-c", GRUB_SETTINGS).stdout == f"quiet {OTHER_GRUB_ARGS}"
    image = Image(root, release.initramfs, newest_kernel(root), "/tmp/initrd-other")
    assert "options vfio-pci ids=10de:28a0,10de:22be" in image.read(f"usr/lib/modprobe.d/gpupass-{OTHER}.conf")
    assert image.read(MODPROBE) == ""


def test_an_edited_grub_drop_in_is_kept_on_upgrade(plain_chroot: chroot.Chroot, versions: Versions) -> None:
    """dpkg's conffile logic for the GRUB drop-in the admin edited: kept, the package's new one
    beside it as .dpkg-dist, the admin's arguments still what grub-mkconfig reads. (dpkg's own
    logic, the same on every release: checked in the plain chroot, without an initramfs rebuild.)"""
    root = plain_chroot
    (root.root / "etc/default").mkdir(exist_ok=True)
    (root.root / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    serve(root, versions.repo_old)
    root.run("apt-get", "install", "-y", "--no-install-recommends", PACKAGE)
    drop_in = root.root / GRUB_DROP_IN
    edited = drop_in.read_text().replace("iommu=pt", "iommu=pt pcie_aspm=off")
    drop_in.write_text(edited)

    serve(root, versions.repo_new)
    upgraded = root.run("apt-get", "upgrade", "-y", *CONFFILE_OPTIONS)
    assert f"Unpacking {PACKAGE} ({versions.new}) over ({versions.old})" in upgraded.stdout
    assert status(root) == f"{versions.new} ii"
    assert drop_in.read_text() == edited
    assert "10de:228e" in (root.root / f"{GRUB_DROP_IN}.dpkg-dist").read_text()
    edited_args = GRUB_ARGS.replace("iommu=pt", "iommu=pt pcie_aspm=off")
    assert root.run("sh", "-c", GRUB_SETTINGS).stdout == f"quiet {edited_args}"
