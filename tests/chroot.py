"""Debian chroots made with mmdebstrap, for the install tier.

Each system is made once into a tarball, kept between runs until the archive changes
(make_tarball), and unpacked afresh for each test or row, so tests cannot see each other's
leftovers.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

SUITE = os.environ.get("GPUPASS_TEST_SUITE", "bookworm")
# The archives mmdebstrap takes a Debian suite from when given no mirror.
MIRROR = "http://deb.debian.org/debian"
# The environment of every program a chroot phase starts on the host (tar, mount, piuparts),
# fixed when the session starts: the phases run in threads beside the unit tier, whose tests
# may change the process's own (an emptied PATH, a GNUPGHOME of their own); chroot.run gives
# what runs inside its own.
HOST_ENV = dict(os.environ)

SECURITY = "http://deb.debian.org/debian-security"


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
    """A system of ``suite`` with ``include``, as mmdebstrap makes it from deb.debian.org (with
    the suite's updates and security archives where it has them).

    Kept between runs in the cache, keyed by what decides its contents: the archives' InRelease
    files (a new one on every archive update), the package list and mmdebstrap's version. Like
    the guest kernel (vm_smoke.debian_kernel) it is made again only when one of them changed,
    and the older tarball of the same package list is deleted then. Where an archive cannot be
    asked, the tarball is made in ``dest`` and not kept."""
    argv = ["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(include)}", suite]
    key = _tarball_key(argv)
    if key is None:
        tarball = dest / f"{suite}.tar"
        subprocess.run([*argv, str(tarball)], check=True)
        return tarball
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    label = f"{suite}-{hashlib.sha256(' '.join(argv).encode()).hexdigest()[:12]}"
    tarball = cache / f"{label}-{key}.tar"
    if tarball.is_file():
        return tarball
    partial = tarball.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
    try:
        subprocess.run([*argv[:-1], "--format=tar", suite, str(partial)], check=True)
        os.replace(partial, tarball)
    finally:
        partial.unlink(missing_ok=True)
    for stale in cache.glob(f"{label}-*.tar"):
        if stale != tarball:
            stale.unlink(missing_ok=True)
    return tarball


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpupass" / "chroots"


def _tarball_key(argv: list[str]) -> str | None:
    """What decides a tarball's contents besides ``argv``: each archive's InRelease and
    mmdebstrap's version. None when an archive does not answer (no network: nothing to key on)."""
    suite = argv[-1]
    version = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256(version.encode())
    for archive, dist in ((MIRROR, suite), (MIRROR, f"{suite}-updates"), (SECURITY, f"{suite}-security")):
        url = f"{archive}/dists/{dist}/InRelease"
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                digest.update(url.encode() + b"\0" + answer.read())
        except urllib.error.HTTPError as error:
            if error.code != 404:  # an archive the suite does not have (testing's security) is no key
                return None
        except OSError:
            return None
    return digest.hexdigest()[:16]


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
                subprocess.run([*argv, str(target)], check=True, env=HOST_ENV)
                done.append(target)
            yield
        finally:
            for target in reversed(done):
                subprocess.run(["umount", "--recursive", "--lazy", str(target)], check=True, env=HOST_ENV)

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


def release_stale_mounts(base: Path | None = None) -> list[str]:
    """Unmount what a killed session left mounted in its chroots (/dev, /proc, /dev/shm under
    its pytest-N directory), deepest first, before pytest one day deletes that directory: its
    rm -rf would go down a bind mount of /dev into the host's. A session is dead when its
    directory's .lock (pytest writes its pid there, and removes it at a normal exit) is gone
    or names no running process; a live session's mounts are left alone. Returns what it
    unmounted."""
    base = base or Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            points = [Path(line.split()[1].replace("\\040", " ")) for line in f]  # a space is \040 there
    except OSError:  # no /proc (a chroot without it): nothing to look at
        return []
    stale = []
    for point in points:
        if not point.is_relative_to(base) or point == base:
            continue
        session = base / point.relative_to(base).parts[0]
        if not session_alive(session):
            stale.append(point)
    for point in sorted(set(stale), key=lambda p: len(p.parts), reverse=True):
        subprocess.run(["umount", "--lazy", str(point)], capture_output=True, env=HOST_ENV)
    return [str(p) for p in stale]


def session_alive(session: Path) -> bool:
    try:
        pid = int((session / ".lock").read_text())
    except (OSError, ValueError):
        return False
    return Path(f"/proc/{pid}").exists()


def unpack(tarball: Path, dest: Path) -> Chroot:
    dest.mkdir()
    subprocess.run(["tar", "-C", str(dest), "-xf", str(tarball)], check=True, env=HOST_ENV)
    return Chroot(dest)


# What the test systems' initramfs tools are told beyond the release's defaults, so that each of
# the tier's thirty-odd image builds takes seconds, not twenty (measured in a Debian 12 system:
# 20 s with the default MODULES=most, 1.5 s with list; dracut 18 s, 10 s uncompressed). Neither
# changes how gpupass's pieces get in: initramfs-tools reads the modules.d lists and modprobe.d
# in every MODULES mode, and with "list" an image holds vfio-pci only because gpupass listed it;
# dracut's compressor only wraps the same archive. Real laptops keep their own settings.
FAST_IMAGES = {
    "initramfs-tools": ("etc/initramfs-tools/conf.d/zz-test-system", "MODULES=list\n"),
    "dracut": ("etc/dracut.conf.d/zz-test-system.conf", 'compress="cat"\n'),
}


def fast_images(release: Release, root: Chroot) -> None:
    path, text = FAST_IMAGES[release.initramfs]
    (root.root / path).write_text(text)


def system(release: Release, tarball: Path, dest: Path) -> Chroot:
    """``release``'s system unpacked in ``dest``, with what its packages' own postinsts do on a
    real machine (grub-pc's /etc/default/grub; Ubuntu 26.04's host-only dracut), and its
    initramfs tool set for fast images (FAST_IMAGES)."""
    root = unpack(tarball, dest)
    root.run("cp", "/usr/share/grub/default/grub", "/etc/default/grub")
    if release.initramfs == "dracut":
        # Ubuntu 26.04's dracut builds hostonly images: only what this machine needs, and
        # what the configuration forces.
        (root.root / "etc/dracut.conf.d/10-hostonly.conf").write_text('hostonly="yes"\n')
    fast_images(release, root)
    return root


def unpack_only(release: Release, tarball: Path, dest: Path) -> Chroot:
    """``release``'s system as mmdebstrap made it (piuparts' base: it sets up its own copy),
    its initramfs tool set for fast images (FAST_IMAGES)."""
    root = unpack(tarball, dest)
    fast_images(release, root)
    return root


class Rows:
    """Rows of a release-matrix test, run at once: ``body(release, root)`` for each release in
    ``chosen``, in threads, each in its own system (``make``: chroot.system, or unpack_only); the
    row's test waits for its own and gets what it returned or raises what it raised (an
    assertion, a skip). The body must keep to its own system: nothing process-wide (no chdir,
    no environment, no monkeypatch). tests/matrix.py starts them."""

    def __init__(self, chosen: list[Release], tarballs: dict[str, Path], scratch: Path, body, make=system) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(len(chosen), 1), thread_name_prefix=scratch.name)

        def row(release: Release):
            return body(release, make(release, tarballs[release.name], scratch / release.name))

        self._rows = {r.name: self._pool.submit(row, r) for r in chosen}

    def __contains__(self, name: str) -> bool:
        return name in self._rows

    def __getitem__(self, name: str):
        return self._rows[name].result()

    def result(self, release: Release):
        return self[release.name]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
