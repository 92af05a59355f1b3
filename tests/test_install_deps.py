"""tools/install-deps names a Debian package for every external tool gpupass and its tests run.

A tool missing there fails only on a new machine (the developer's has it by hand); this tier
is fast, so the gap shows on every run instead.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from gpupass.packaging import tools

ROOT = Path(__file__).resolve().parents[1]

# Tools the tests run directly (not through gpupass.packaging.tools.run), and their packages.
TEST_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "chroot": "coreutils",
    "unshare": "util-linux",
    "setpriv": "util-linux",
    "mount": "mount",
    "umount": "mount",
    "tar": "tar",
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "virsh": "libvirt-clients",
    "virt-xml-validate": "libvirt-clients",
    "xmllint": "libxml2-utils",  # what virt-xml-validate runs
    "qemu-system-x86_64": "qemu-system-x86",
    # libvirtd runs them for the domain's TPM 2.0 (vm-smoke boots it).
    "swtpm": "swtpm",
    "swtpm_setup": "swtpm-tools",
    "busybox": "busybox-static",
    "apparmor_parser": "apparmor",
    "modprobe": "kmod",
    "dpkg-deb": "dpkg",
    "lintian": "lintian",
    "iasl": "acpica-tools",
    "reprepro": "reprepro",
    "gpg": "gnupg",
    "gpgconf": "gpgconf",
    "git": "git",
    "nox": "nox",
    "dpkg-query": "dpkg",
    "readlink": "coreutils",
    "qemu-img": "qemu-utils",
    "virt-install": "virtinst",
    "dscverify": "devscripts",
    "dpkg": "dpkg",
    "dpkg-parsechangelog": "dpkg-dev",
    "lsinitramfs": "initramfs-tools-core",  # through gpupass doctor (laptop/command.run)
    "UEFIExtract": "uefitool-cli",  # test_firmware, and gpupass vbios from-update (laptop/command.run)
    "7z": "p7zip-full",  # test_firmware, and gpupass vbios from-update (laptop/command.run)
    "udevadm": "udev",
    "piuparts": "piuparts",
    "autopkgtest": "autopkgtest",
}
# Essential: on every Debian and Ubuntu system, never named in install-deps.
ESSENTIAL = {"coreutils", "util-linux", "mount", "tar", "dpkg"}


def install_deps_packages() -> dict[str, set[str]]:
    """{"build": {...}, "test": {...}} as tools/install-deps installs them."""
    text = (ROOT / "tools" / "install-deps").read_text(encoding="utf-8")
    lists = {name: set(words.split()) for name, words in re.findall(r'^([A-Z]+)="([^"]*)"', text, re.M | re.S)}
    return {"build": lists["BUILD"], "test": lists["BUILD"] | lists["TEST"]}


def test_every_tool_of_the_wrapper_has_its_package_in_install_deps() -> None:
    packages = install_deps_packages()["test"]
    missing = {tool: pkg for tool, pkg in tools.PROVIDERS.items() if pkg not in packages | ESSENTIAL}
    assert missing == {}, f"tools/install-deps does not install: {missing}"


def test_every_tool_the_tests_run_has_its_package_in_install_deps() -> None:
    packages = install_deps_packages()["test"]
    missing = {tool: pkg for tool, pkg in TEST_TOOLS.items() if pkg not in packages | ESSENTIAL}
    assert missing == {}, f"tools/install-deps does not install: {missing}"


def test_the_tests_run_no_tool_the_table_above_does_not_name() -> None:
    """Every program the tests name in a subprocess argv is in TEST_TOOLS (or is python/sh)."""
    called = set()
    for path in sorted((ROOT / "tests").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        called |= set(re.findall(r'(?:subprocess\.(?:run|Popen)|\.run)\(\s*\[\s*"([a-z][\w.+-]*)"', text))
        called |= set(re.findall(r'shutil\.which\("([a-z][\w.+-]*)"', text))
    called -= {"sh", "python3", "rm", "cp"}
    assert called - TEST_TOOLS.keys() == set(), (
        f"add these to TEST_TOOLS with their package: {called - TEST_TOOLS.keys()}"
    )


def test_the_named_packages_provide_the_tools() -> None:
    """Where a tool is installed here, dpkg agrees on which package owns it."""
    for tool, package in {**tools.PROVIDERS, **TEST_TOOLS}.items():
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if not found:
            continue
        real = subprocess.run(["readlink", "-f", found], capture_output=True, text=True).stdout.strip()
        owners = set()
        for candidate in {found, real, real.replace("/usr/", "/", 1), found.replace("/usr/", "/", 1)}:
            query = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
            owners |= {line.split(":")[0] for line in query.stdout.splitlines()}
        if owners:
            # The named package ships the tool, or depends on the package that does (gnupg -> gpg).
            depends = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", package], capture_output=True, text=True)
            names = {package} | set(re.findall(r"(?:^|, |\| )([a-z0-9][a-z0-9.+-]+)", depends.stdout))
            assert owners & names, f"{tool}: install-deps names {package}, but {', '.join(sorted(owners))} has it"
