"""The same .deb on every supported release: install, remove and purge with a real kernel and
the release's own initramfs tool, GRUB's settings, libvirt's AppArmor abstraction and lintian.

No Ubuntu archive is reachable from here: Debian 13 with dracut stands in for Ubuntu 26.04
(dracut builds the initramfs there since 25.10), Debian 12 and 13 with initramfs-tools for
Ubuntu 24.04 (see chroot.RELEASES).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpupass import model, paths
from gpupass.laptop import machine
from gpupass.laptop.doctor import facts as doctor_facts
from gpupass.laptop.doctor import host as doctor_host
from gpupass.laptop.vm import pieces as vm_pieces
from gpupass.laptop.vm import xmledit

from . import chroot, libvirt
from .conftest import EACH_RELEASE, ROOT

pytestmark = pytest.mark.install

GRUB_ARGS = "intel_iommu=on iommu=pt vfio-pci.ids=10de:25a2,10de:2291"
ON_DEMAND_ARGS = "intel_iommu=on iommu=pt"
# Exactly how grub-mkconfig reads its settings.
GRUB_SETTINGS = (
    "if test -f /etc/default/grub; then . /etc/default/grub; fi; "
    'for x in /etc/default/grub.d/*.cfg; do if [ -e "$x" ]; then . "$x"; fi; done; '
    'printf %s "$GRUB_CMDLINE_LINUX_DEFAULT"'
)
MODPROBE = "usr/lib/modprobe.d/gpupass-aurora-z.conf"
VFIO_MODULES = {"vfio", "vfio_iommu_type1", "vfio_pci"}
# The line the postinst prints where libvirt's abstraction does not read the drop-in directory.
APPARMOR_FIX = (
    "    echo 'include if exists <abstractions/libvirt-qemu.d>' >> /etc/apparmor.d/local/abstractions/libvirt-qemu"
)
APPARMOR_NOTICE = "does not read /etc/apparmor.d/abstractions/libvirt-qemu.d/"
OLD_KERNEL = "6.1.0-0-amd64"


class Image:
    """The initramfs the next boot would use, read with its own tool's listing."""

    def __init__(self, system: chroot.Chroot, initramfs: str, kernel: str, scratch: str) -> None:
        self.system, self.initramfs, self.path = system, initramfs, f"/boot/initrd.img-{kernel}"
        if initramfs == "dracut":
            self.listing = system.run("lsinitrd", self.path).stdout
        else:
            self.listing = system.run("lsinitramfs", self.path).stdout
            system.run("unmkinitramfs", self.path, scratch)
            self.tree = system.root / scratch.lstrip("/")

    def has_module(self, name: str) -> bool:
        return re.search(rf"/{re.escape(name)}\.ko(\.xz|\.zst|\.gz)?$", self.listing, re.M) is not None

    def read(self, path: str) -> str:
        """A file of the image ('' when it has none)."""
        if self.initramfs == "dracut":
            if not re.search(rf" {re.escape(path)}$", self.listing, re.M):
                return ""
            return self.system.run("lsinitrd", "-f", path, self.path).stdout
        return "".join(p.read_text() for p in sorted(self.tree.glob(f"*/{path}")) + [self.tree / path] if p.is_file())

    def early_modules(self) -> set[str]:
        """The modules the initramfs loads before udev: conf/modules (initramfs-tools),
        rd.driver.pre= (dracut's force_drivers)."""
        if self.initramfs == "dracut":
            text = self.read("etc/cmdline.d/20-force_drivers.conf")
            return set(re.findall(r"rd\.driver\.pre=(\S+)", text))
        return set(self.read("conf/modules").split())


def apt(system: chroot.Chroot, *args: str) -> str:
    """apt-get's output: with /dev mounted it runs dpkg on a pseudo-terminal, so what the
    maintainer scripts print on stderr arrives on its stdout."""
    with system.mounts():
        result = system.run("apt-get", *args)
    return result.stdout + result.stderr


def triggers(output: str, release: chroot.Release) -> int:
    return output.count(f"Processing triggers for {release.initramfs}")


@EACH_RELEASE
def test_install_remove_purge_boot_files(release: chroot.Release, chroot_phases) -> None:
    """Install, remove and purge on the release, with its kernel, initramfs tool, GRUB's
    settings and libvirt's AppArmor abstraction, each read back by its own tool (the three
    releases' rows at once, beside the other phases: tests/matrix.py)."""
    chroot_phases.rows["boot"].result(release)


def install_remove_purge_boot_files(release: chroot.Release, root: chroot.Chroot, built: Path) -> None:
    abstraction = (root.root / "etc/apparmor.d/abstractions/libvirt-qemu").read_text()
    reads_drop_ins = "include if exists <abstractions/libvirt-qemu.d>" in abstraction
    assert reads_drop_ins == (release.suite != "bookworm"), "the release's libvirt is not the one DESIGN.md says"
    # An older kernel next to the newest (its files only: the trigger rebuilds the newest's image).
    for name in (f"vmlinuz-{OLD_KERNEL}", f"initrd.img-{OLD_KERNEL}"):
        (root.root / "boot" / name).write_bytes(b"")
    newest = newest_kernel(root)
    rebuild = "dracut --regenerate-all --force" if release.initramfs == "dracut" else "update-initramfs -u -k all"
    before = root.files()
    assert root.run("sh", "-c", GRUB_SETTINGS).stdout == "quiet"
    deb = root.copy_in(built / "gpupass-aurora-z.deb")

    # Install: one initramfs rebuild, through the trigger, for the newest kernel; the older
    # one is named with the command that rebuilds it.
    installed = apt(root, "install", "-y", "--no-install-recommends", deb)
    assert triggers(installed, release) == 1, installed
    assert (
        f"gpupass: only the newest kernel's initramfs ({newest}) is rebuilt, and the next boot\n"
        "  starts that kernel by default. The other installed kernels keep an initramfs without vfio"
        f" (a GPU driver may take the GPU first) until: {rebuild}\n"
    ) in installed
    assert root.run("sh", "-c", GRUB_SETTINGS).stdout == f"quiet {GRUB_ARGS}"
    # The laptop command runs on the release's python3 (3.11 on Debian 12, 3.13 on Debian 13).
    check = root.run("gpupass", "check", check=False)
    assert check.stdout.splitlines()[0] == "gpupass check: MECHREVO Aurora Z (gpupass-aurora-z)", check
    # AppArmor: Debian 12's libvirt 9.0 does not read abstractions/libvirt-qemu.d, and the
    # exact line to add is printed; Debian 13's 11.3 does, and nothing is printed. Either way
    # apparmor_parser accepts the abstraction with the drop-in (once the line is added).
    if reads_drop_ins:
        assert APPARMOR_NOTICE not in installed
    else:
        assert APPARMOR_FIX in installed
        root.run("sh", "-c", APPARMOR_FIX.strip())
    check_apparmor_profile(root)
    check_looking_glass_file(root)

    image = Image(root, release.initramfs, newest, "/tmp/initrd-installed")
    assert image.has_module("vfio-pci"), "vfio-pci is not in the initramfs"
    # gpupass doctor finds it in the listing of the release's own tool (lsinitrd's is ls -l style).
    assert doctor_on_initramfs(root, image) == f"ok: vfio-pci is in the initramfs {image.path}"
    modprobe = image.read(MODPROBE)
    assert "options vfio-pci ids=10de:25a2,10de:2291" in modprobe
    assert "softdep nvidia pre: vfio-pci" in modprobe and "softdep nouveau pre: vfio-pci" in modprobe
    assert VFIO_MODULES <= image.early_modules()
    check_power_pieces(root, release)
    check_mode_switches(root, release, newest)

    # Remove: the next boot gives the GPU back to the host.
    removed = apt(root, "remove", "-y", "gpupass-aurora-z")
    assert triggers(removed, release) == 1, removed
    assert f"keep an initramfs in which vfio-pci claims the GPU until: {rebuild}\n" in removed
    assert (root.root / "etc/default/grub.d/gpupass-aurora-z.cfg").exists(), "a conffile stays until purge"
    assert root.run("sh", "-c", GRUB_SETTINGS).stdout == "quiet"
    assert not (root.root / MODPROBE).exists()
    assert not (root.root / TMPFILES).exists()
    image = Image(root, release.initramfs, newest, "/tmp/initrd-removed")
    assert image.read(MODPROBE) == ""
    assert not VFIO_MODULES & image.early_modules()
    assert "vfio-pci" not in modprobe_files(image)
    # gpupass power: no rule, unit or hook is left; its settings stay (a conffile) until purge.
    assert {p for p in POWER_PIECES if (root.root / p).exists() or (root.root / p).is_symlink()} == {POWER_CONF}

    # Purge: not a file of the package is left.
    apt(root, "purge", "-y", "gpupass-aurora-z")
    root.run("rm", "-rf", deb, "/tmp/initrd-installed", "/tmp/initrd-removed")
    assert root.files() ^ before == set()


POWER_CONF = "etc/gpupass/power.conf"
UDEV_RULE = "usr/lib/udev/rules.d/90-gpupass-aurora-z.rules"
POWER_PIECES = (
    POWER_CONF,
    UDEV_RULE,
    "usr/lib/systemd/system/gpupass-power.service",
    "usr/lib/gpupass/libvirt-qemu-hook",
    "etc/libvirt/hooks/qemu.d/gpupass-aurora-z",
)


def check_power_pieces(root: chroot.Chroot, release: chroot.Release) -> None:
    """The release's own tools on the udev rule (udevadm verify, where the release has it: systemd
    253 and later) and the unit (systemd-analyze verify)."""
    unit = root.run("systemd-analyze", "verify", "/usr/lib/systemd/system/gpupass-power.service", check=False)
    assert (unit.returncode, unit.stdout, unit.stderr) == (0, "", ""), unit.stderr
    if release.suite == "bookworm":
        return  # Debian 12's udevadm (systemd 252) has no verify; tests/test_power_udev.py runs udevadm test
    verified = root.run("udevadm", "verify", "/" + UDEV_RULE, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The same check refuses a broken rule (an assignment where a match belongs), so the pass means something.
    broken = root.root / "tmp/broken.rules"
    broken.write_text(
        (root.root / UDEV_RULE).read_text().replace('SUBSYSTEM=="power_supply"', 'SUBSYSTEM="power_supply"')
    )
    assert root.run("udevadm", "verify", "/tmp/broken.rules", check=False).returncode != 0
    broken.unlink()


ETC_MODPROBE = "etc/modprobe.d/gpupass-aurora-z.conf"
MODE_FILES = (
    ETC_MODPROBE,
    "etc/dracut.conf.d/gpupass-aurora-z.conf",
    "etc/udev/rules.d/70-gpupass-aurora-z-desktop.rules",
    "var/lib/gpupass/mode",
)


def switch_mode(root: chroot.Chroot, release: chroot.Release, mode: str, was: str) -> None:
    """gpupass mode as root on the release: one initramfs rebuild, by the release's own trigger."""
    with root.mounts():
        result = root.run("gpupass", "mode", mode)
    output = result.stdout + result.stderr
    assert f"gpupass mode: {mode} (was {was}); effective after a reboot" in output, output
    assert triggers(output, release) == 1, output
    assert root.run("gpupass", "mode").stdout == f"{mode}\n"


def vfio_config(root: chroot.Chroot, kernel: str) -> list[str]:
    """The package's vfio-pci lines as kmod applies them (the /etc override masking /usr/lib's file
    of the same name): the ids and the softdeps that load vfio-pci first."""
    config = root.run("modprobe", "-c", "-S", kernel).stdout.splitlines()
    return [line for line in config if line.startswith("options vfio_pci ") or line.endswith(" pre: vfio-pci")]


def check_mode_switches(root: chroot.Chroot, release: chroot.Release, newest: str) -> None:
    """Boot mode to on-demand and back: GRUB's line, kmod's configuration and the initramfs each
    time, read by their own tools. (apt remove from on-demand mode: test_install.py, where no
    initramfs is rebuilt.)"""
    switch_mode(root, release, "on-demand", "boot")
    assert root.run("sh", "-c", GRUB_SETTINGS).stdout == f"quiet {ON_DEMAND_ARGS}"
    assert vfio_config(root, newest) == []
    image = Image(root, release.initramfs, newest, "/tmp/initrd-on-demand")
    # The image carries the override, so kmod masks the boot-mode file there too.
    override = image.read(ETC_MODPROBE)
    assert "options nvidia NVreg_DynamicPowerManagement=0x02" in override and "vfio-pci ids" not in override
    if release.initramfs == "dracut":
        assert not VFIO_MODULES & image.early_modules()
    else:
        # initramfs-tools reads modules.d without masking: vfio loads early, with no ids it binds nothing.
        assert VFIO_MODULES <= image.early_modules()

    switch_mode(root, release, "boot", "on-demand")
    assert root.run("sh", "-c", GRUB_SETTINGS).stdout == f"quiet {GRUB_ARGS}"
    assert "options vfio_pci ids=10de:25a2,10de:2291" in vfio_config(root, newest)
    image = Image(root, release.initramfs, newest, "/tmp/initrd-boot")
    assert image.read(ETC_MODPROBE) == ""
    assert "options vfio-pci ids=10de:25a2,10de:2291" in image.read(MODPROBE)
    assert VFIO_MODULES <= image.early_modules()
    assert [p for p in MODE_FILES if (root.root / p).exists()] == []
    root.run("rm", "-rf", "/tmp/initrd-on-demand", "/tmp/initrd-boot")


def doctor_on_initramfs(root: chroot.Chroot, image: Image) -> str:
    """gpupass doctor's initramfs line for the image, as on the laptop running its kernel."""
    kernel = image.path.removeprefix("/boot/initrd.img-")
    snapshot = machine.Machine(pci=(), kernel_release=kernel)
    listed = doctor_facts.Initramfs(image.path, tuple(image.listing.splitlines()))
    unasked = doctor_facts.Libvirt("qemu:///system", problem="not asked")
    facts = doctor_facts.Facts("win11-gpu", None, listed, None, "", frozenset(), {}, unasked)
    model_ = model.load(ROOT / "models" / "aurora-z.toml")
    return "\n".join(f.line() for f in doctor_host.check_initramfs(model_, snapshot, facts))


def modprobe_files(image: Image) -> str:
    names = re.findall(r" ((?:usr/)?lib/modprobe\.d/\S+\.conf|etc/modprobe\.d/\S+\.conf)$", image.listing, re.M)
    return "".join(image.read(name) for name in sorted(set(names)))


def check_apparmor_profile(root: chroot.Chroot) -> None:
    """A VM profile as virt-aa-helper writes one, reduced to the include that matters."""
    profile = root.root / "etc/apparmor.d/gpupass-test-vm"
    profile.write_text("#include <tunables/global>\nprofile vm {\n  #include <abstractions/libvirt-qemu>\n}\n")
    with root.mounts():
        expanded = root.run("apparmor_parser", "--preprocess", "/etc/apparmor.d/gpupass-test-vm").stdout
        rules = ("/var/lib/gpupass/vbios.rom r,", "/usr/share/gpupass/ssdt-battery.aml r,")
        for rule in (*rules, "/dev/shm/looking-glass rw,", "/dev/kvmfr0 rw,"):  # and Looking Glass's memory
            assert rule in expanded
        root.run("apparmor_parser", "--skip-kernel-load", "--skip-cache", "/etc/apparmor.d/gpupass-test-vm")
    profile.unlink()


TMPFILES = "usr/lib/tmpfiles.d/gpupass-aurora-z.conf"


def check_looking_glass_file(root: chroot.Chroot) -> None:
    """The release's systemd-tmpfiles makes Looking Glass's shared memory file from the package's
    entry, for group kvm with mode 0660 (in the chroot's own /dev/shm)."""
    with root.mounts():
        root.run("systemd-tmpfiles", "--create", "/" + TMPFILES)
        made = root.run("stat", "-c", "%F %a %U %G %s", "/dev/shm/looking-glass").stdout
    assert made == "regular empty file 660 root kvm 0\n"


def newest_kernel(root: chroot.Chroot) -> str:
    return root.run("sh", "-c", "linux-version list | linux-version sort | tail -n 1").stdout.strip()


def test_lintian_of_the_release_reports_no_errors_or_warnings(system, built: Path) -> None:
    """The release's own lintian (Debian 13's knows merged /usr and newer checks)."""
    release, root = system
    if "lintian" not in release.extra:
        pytest.skip(f"lintian runs in {', '.join(r.name for r in chroot.RELEASES if 'lintian' in r.extra)} only")
    deb = root.copy_in(built / "gpupass-aurora-z.deb")
    # initial-upload-closes-no-bugs asks for a Debian ITP bug: these packages are not for Debian.
    result = root.run(
        "lintian", "--fail-on", "error,warning", "--suppress-tags", "initial-upload-closes-no-bugs", deb, check=False
    )
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


RECOMMENDS = ("libvirt-daemon-system", "qemu-system-x86", "ovmf", "python3-libvirt", "swtpm", "swtpm-tools")


def test_apt_install_brings_the_vm_stack_by_its_recommends(system, built: Path) -> None:
    """The Recommends resolve on the release: apt's plan for a plain install takes them along."""
    release, root = system
    deb = root.copy_in(built / "gpupass-aurora-z.deb")
    with root.mounts():
        root.run("apt-get", "update", "-q")
        plan = root.run("apt-get", "install", "--simulate", deb).stdout
    installed = set(root.run("dpkg-query", "-W", "-f=${Package}\\n").stdout.split())
    for name in RECOMMENDS:
        assert name in installed or re.search(rf"^Inst {re.escape(name)} ", plan, re.M), (name, plan)
    assert re.search(r"^Inst gpupass-aurora-z ", plan, re.M), plan


SUGGESTS = ("uefitool-cli", "p7zip-full", "innoextract")


def test_the_suggests_exist_on_the_release(system) -> None:
    """What gpupass vbios from-update names for apt install is in the release's archive."""
    release, root = system
    with root.mounts():
        root.run("apt-get", "update", "-q")
        shown = root.run("apt-cache", "show", "--no-all-versions", *SUGGESTS, check=False)
    assert {name for name in SUGGESTS if re.search(rf"^Package: {re.escape(name)}$", shown.stdout, re.M)} == set(
        SUGGESTS
    ), (release.name, shown.stdout[-2000:], shown.stderr)


# --- gpupass vm attach against the release's own libvirtd -------------------------------------

# The release's libvirtd in the chroot, set up as tests/libvirt.py sets up the host's (see
# QEMU_CONF there): the chroot is thrown away, so its own /etc/libvirt is rewritten.
CHROOT_LIBVIRTD_CONF = """\
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""
CHROOT_QEMU_CONF = """\
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
# No private /dev per domain: libvirt cannot make its mounts private inside a chroot ("Failed
# disable mount propagation out of the root filesystem"), and only the hook test starts one.
namespaces = [ ]
"""
# In a mount, PID and network namespace of its own: /dev, /proc and /sys are mounted into
# the chroot there only, and go with the namespace; the chroot's default network (a bridge
# and its firewall rules) would be made in that namespace, not the host's. The socket is a
# file in the chroot's /run/libvirt, so a client chrooted from outside reaches it.
CHROOT_DAEMON = """\
set -eu
root=$1
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
chroot "$root" sh -c 'virtlogd --daemon && libvirtd'
"""
# As tests/libvirt.py's NAMESPACE (the namespace goes with the test process), with a
# network namespace and without --mount-proc (proc is mounted in the chroot instead).
CHROOT_NAMESPACE = (
    "setpriv", "--pdeathsig", "KILL",
    "unshare", "--mount", "--propagation", "private", "--pid", "--net", "--fork", "--kill-child",
)  # fmt: skip
# A shut-off UEFI q35 domain, as small as libvirt takes it; never started.
NATIVE_DOMAIN = """\
<domain type="qemu">
  <name>win11</name>
  <memory unit="MiB">4096</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <loader readonly="yes" type="pflash">/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template="/usr/share/OVMF/OVMF_VARS_4M.fd"/>
    <boot dev="hd"/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
</domain>
"""


@contextlib.contextmanager
def release_libvirtd(root: chroot.Chroot) -> Iterator[None]:
    """The release's libvirtd and virtlogd running in the chroot, until the block ends."""
    for name, text in (("libvirtd.conf", CHROOT_LIBVIRTD_CONF), ("qemu.conf", CHROOT_QEMU_CONF)):
        (root.root / "etc/libvirt" / name).write_text(text)
    for link in (root.root / "etc/libvirt/qemu/networks/autostart").glob("*.xml"):
        link.unlink()
    log = root.root / "var/log/libvirt/libvirtd.log"
    process = subprocess.Popen(
        [*CHROOT_NAMESPACE, "sh", "-c", CHROOT_DAEMON, "sh", str(root.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + libvirt.START_TIMEOUT
        while (probe := root.run("virsh", "-c", "qemu:///system", "version", check=False)).returncode:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                output = process.communicate()[0].decode(errors="replace")
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                pytest.fail(f"the release's libvirtd did not answer:\n{probe.stderr}\n{output}\n{tail}")
            time.sleep(0.2)
        yield
    finally:
        process.kill()  # SIGKILL: unshare passes it on to the namespace's init, and all in it go
        process.wait()


def test_attach_puts_the_battery_table_in_natively_on_the_releases_libvirtd(
    system, built: Path, aurora: model.Model
) -> None:
    """Debian 13's libvirt (11.2 or later) takes the SSDT as <os><acpi><table type="raw">.

    The installed gpupass vm attach runs on the release's python3 and python3-libvirt against
    its own libvirtd, on a shut-off UEFI domain; libvirt's dumpxml and the QEMU command line
    it would run are read back; detach gives the domain back as it was.
    """
    release, root = system
    if not set(chroot.NATIVE_ACPI_TABLE_PACKAGES) <= set(release.extra):
        pytest.skip("libvirt takes the battery table natively from 11.2 on: Debian 13's libvirt only")
    apt(root, "install", "-y", "--no-install-recommends", root.copy_in(built / "gpupass-aurora-z.deb"))
    aml = str(paths.INSTALLED_AML)
    (root.root / "tmp/win11.xml").write_text(NATIVE_DOMAIN)

    def virsh(*args: str) -> str:
        return root.run("virsh", "--quiet", "-c", "qemu:///system", *args).stdout

    with release_libvirtd(root):
        version = root.run("python3", "-c", "import libvirt; print(libvirt.open('qemu:///system').getLibVersion())")
        assert int(version.stdout) >= vm_pieces.NATIVE_ACPI_TABLE_VERSION, version.stdout
        virsh("define", "/tmp/win11.xml")
        original = virsh("dumpxml", "--inactive", "win11")

        attached_out = root.run("gpupass", "vm", "attach", "win11").stdout
        assert attached_out.splitlines()[-1].startswith("win11: passthrough attached;"), attached_out
        attached = virsh("dumpxml", "--inactive", "win11")
        domain = ET.fromstring(attached)
        os_ = domain.find("os")
        assert [(t.get("type"), t.text) for t in os_.iterfind("acpi/table")] == [("raw", aml)], attached
        # libvirt takes one table per type: the vBIOS _ROM SSDT stays a QEMU argument.
        args = [a.get("value") for a in domain.iterfind("qemu:commandline/qemu:arg", xmledit.NAMESPACES)]
        assert args == ["-fw_cfg", f"{vm_pieces.MMIO_OPTION},string=65536", "-acpitable", f"file={paths.ROM_AML}"], (
            attached
        )
        assert vm_pieces.missing_pieces(attached, aurora) == []
        assert root.run("gpupass", "vm", "attach", "win11").stdout == "win11: nothing to change\n"

        # The QEMU command line libvirt makes of it (without the hostdevs: no VFIO here):
        # the battery table once, from the native element, then the _ROM table.
        without_hostdevs = xmledit.parse(attached)
        devices = without_hostdevs.find("devices")
        for hostdev in devices.findall("hostdev"):
            devices.remove(hostdev)
        (root.root / "tmp/win11-argv.xml").write_text(xmledit.to_text(without_hostdevs))
        argv = virsh("domxml-to-native", "qemu-argv", "/tmp/win11-argv.xml").split()
        tables = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-acpitable"]
        assert tables == [f"file={aml}", f"file={paths.ROM_AML}"], argv
        # The Hyper-V enlightenments attach added, each one QEMU's hv- flag on this release too.
        cpu = argv[argv.index("-cpu") + 1].split(",")
        hv = {flag.split("=")[0] for flag in cpu if flag.startswith("hv-")}
        expected = {f"hv-{name}" for name, _, _ in vm_pieces.HYPERV_ENLIGHTENMENTS}
        assert hv == expected | {"hv-time", "hv-stimer-direct", "hv-vendor-id"}, argv

        detached_out = root.run("gpupass", "vm", "detach", "win11").stdout
        assert detached_out.splitlines()[-1].startswith("win11: passthrough detached;"), detached_out
        assert virsh("dumpxml", "--inactive", "win11") == original


HOOKED_DOMAIN = """\
<domain type="qemu">
  <name>hooked</name>
  <memory unit="MiB">128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
  </os>
</domain>
"""


# A domain passing the model's dGPU through (libvirt defines it without the device present).
PASSTHROUGH_DOMAIN = HOOKED_DOMAIN.replace("hooked", "passthrough").replace(
    "</os>",
    "</os>\n  <devices>\n    <hostdev mode='subsystem' type='pci' managed='yes'>\n"
    "      <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>\n"
    "    </hostdev>\n  </devices>",
)


def test_the_libvirt_hook_records_what_the_dgpu_did_on_release(system, built: Path) -> None:
    """The release's libvirtd runs the package's hook (the link in /etc/libvirt/hooks/qemu.d) when
    a domain it applies to is released, and the installed gpupass power record writes its record
    (here of the test machine's /sys, which has no aurora-z dGPU: the record says so).

    In on-demand mode the hook's claim at "prepare begin" refuses for the domain that passes the
    dGPU through (the machine has none at 0000:01:00.0), so it does not start and virsh's error
    carries the reason; the domain without it starts as before."""
    release, root = system
    if not set(chroot.NATIVE_ACPI_TABLE_PACKAGES) <= set(release.extra):
        pytest.skip("QEMU is in Debian 13's chroot only (chroot.RELEASES)")
    if Path("/sys/bus/pci/devices/0000:01:00.0").exists():
        pytest.skip("this machine has a PCI device at 0000:01:00.0, which the hook's claim would move")
    apt(root, "install", "-y", "--no-install-recommends", root.copy_in(built / "gpupass-aurora-z.deb"))
    (root.root / "etc/gpupass/power.conf").write_text("domain = hooked\n")
    (root.root / "tmp/hooked.xml").write_text(HOOKED_DOMAIN)
    (root.root / "tmp/passthrough.xml").write_text(PASSTHROUGH_DOMAIN)
    # The state gpupass mode on-demand writes (its initramfs rebuild is test_install_remove_purge's).
    state = root.root / str(paths.MODE_STATE).lstrip("/")
    state.parent.mkdir(exist_ok=True)
    state.write_text("on-demand\n")
    record = root.root / str(paths.RELEASE_RECORD).lstrip("/")
    with release_libvirtd(root):
        root.run("virsh", "-c", "qemu:///system", "define", "/tmp/passthrough.xml")
        refused = root.run("virsh", "-c", "qemu:///system", "start", "passthrough", check=False)
        assert refused.returncode == 1, refused
        for reason in ("claim refused, nothing was written:", "no PCI device at 0000:01:00.0 (the model's gpu"):
            assert reason in refused.stderr, refused.stderr
        state = root.run("virsh", "-c", "qemu:///system", "domstate", "passthrough").stdout
        assert state.strip() == "shut off"
        root.run("virsh", "-c", "qemu:///system", "define", "/tmp/hooked.xml")
        root.run("virsh", "-c", "qemu:///system", "start", "hooked")  # SeaBIOS with nothing to boot: it waits
        root.run("virsh", "-c", "qemu:///system", "destroy", "hooked")  # the test's own stop; then "release"
        deadline = time.monotonic() + 120  # the hook's record waits 5 s for the dGPU to settle
        while not record.exists():
            assert time.monotonic() < deadline, "no release record"
            time.sleep(0.5)
    written = json.loads(record.read_text())
    assert written["domain"] == "hooked"
    assert (written["asleep"], written["why"]) == (False, "no PCI device at 0000:01:00.0")
    assert record.stat().st_mode & 0o777 == 0o644  # gpupass power status reads it as any user
