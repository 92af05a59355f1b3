"""Debian chroots made with mmdebstrap, for the install tier.

The chroot is built once per test session into a tarball and unpacked afresh for each
test, so tests cannot see each other's leftovers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SUITE = os.environ.get("GPUPASS_TEST_SUITE", "bookworm")


@dataclass(frozen=True)
class Release:
    """A supported release as the install tier builds it: a Debian suite and its initramfs tool."""

    name: str
    suite: str
    initramfs: str  # the package that builds the initramfs: initramfs-tools or dracut
    stands_in_for: str = ""
    extra: tuple[str, ...] = ()  # more packages for the tests of this release only


# What gpupass vm attach needs against a release's own libvirtd: its QEMU driver probes the
# emulator, the UEFI domain's firmware descriptors come with ovmf, gpupass talks to libvirt
# through python3-libvirt (libvirt-daemon-system is in every release's system already).
NATIVE_ACPI_TABLE_PACKAGES = ("qemu-system-x86", "ovmf", "python3-libvirt")

# No Ubuntu archive is reachable from here: Debian 13 with dracut stands in for Ubuntu 26.04
# (dracut by default since 25.10), the initramfs-tools releases for Ubuntu 24.04.
RELEASES = (
    Release("debian12", "bookworm", "initramfs-tools"),
    # Debian 13's lintian checks the .deb here; Debian 12's runs on the host (tool tier).
    # Debian 13's libvirt (11.3) takes the battery table natively: gpupass vm attach runs
    # against its own daemon there (test_releases, ..._natively_on_the_releases_libvirtd).
    Release(
        "debian13",
        "trixie",
        "initramfs-tools",
        "Ubuntu 24.04's initramfs-tools",
        extra=("lintian", *NATIVE_ACPI_TABLE_PACKAGES),
    ),
    Release("debian13-dracut", "trixie", "dracut", "Ubuntu 26.04"),
)


def releases() -> tuple[Release, ...]:
    """The release matrix; GPUPASS_RELEASES=debian12,... narrows it (the fresh-machine test's inner run)."""
    wanted = os.environ.get("GPUPASS_RELEASES")
    if not wanted:
        return RELEASES
    return tuple(r for r in RELEASES if r.name in wanted.split(","))


# Bookkeeping that changes on every dpkg/apt run, not files a package leaves behind.
VOLATILE = ("var/lib/dpkg/", "var/lib/apt/", "var/cache/", "var/log/", "tmp/", "run/", "proc/", "dev/", "sys/")


def require_root_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("the install tier needs root (chroot, mount)")
    if not shutil.which("mmdebstrap"):
        pytest.fail("mmdebstrap not found: apt-get install mmdebstrap")


def make_tarball(dest: Path, include: tuple[str, ...], suite: str = SUITE) -> Path:
    tarball = dest / f"{suite}.tar"
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(include)}", suite, str(tarball)],
        check=True,
    )
    return tarball


@dataclass
class Chroot:
    root: Path

    def run(
        self, *argv: str, check: bool = True, env: dict[str, str] | None = None, network: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside; ``network=False`` runs it in a new network namespace (no network at all)."""
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
        isolate = [] if network else ["unshare", "--net"]
        result = subprocess.run(
            [*isolate, "chroot", str(self.root), *argv],
            capture_output=True,
            text=True,
            env={**full_env, **(env or {})},
        )
        if check and result.returncode:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    @contextlib.contextmanager
    def mounts(self) -> Iterator[None]:
        """/dev and /proc inside, as a package builder (sbuild, Launchpad) has them; /dev/shm its
        own (a postinst's systemd-tmpfiles makes Looking Glass's file there, not on this machine)."""
        done = []
        try:
            for argv, target in (
                (["mount", "--rbind", "/dev"], self.root / "dev"),
                (["mount", "-t", "tmpfs", "tmpfs"], self.root / "dev/shm"),
                (["mount", "-t", "proc", "proc"], self.root / "proc"),
            ):
                subprocess.run([*argv, str(target)], check=True)
                done.append(target)
            yield
        finally:
            for target in reversed(done):
                subprocess.run(["umount", "--recursive", "--lazy", str(target)], check=True)

    def copy_in(self, path: Path) -> str:
        shutil.copy2(path, self.root / "tmp" / path.name)
        return f"/tmp/{path.name}"

    def files(self) -> set[str]:
        """Every path in the chroot but the package managers' own bookkeeping."""
        found = set()
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel + "/"
            if rel.startswith(VOLATILE):
                dirnames[:] = []
                continue
            found.update(rel + name for name in dirnames + filenames)
        return found


def unpack(tarball: Path, dest: Path) -> Chroot:
    dest.mkdir()
    subprocess.run(["tar", "-C", str(dest), "-xf", str(tarball)], check=True)
    return Chroot(dest)
