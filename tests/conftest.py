"""Shared fixtures. Golden files are rewritten with ``pytest --regenerate``
(``nox -s tests -- --regenerate``); CI runs without it and fails on drift."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gpupass import model
from gpupass.packaging import debsrc, toolpkg, version

from . import chroot

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.toml"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regenerate", action="store_true", help="rewrite golden files from the current output")


# GPUPASS_ONE_PER_TIER=1 (set by the fresh machine's inner run, tests/test_fresh_machine.py)
# runs only these, one per tier: what a new machine can break is a missing dependency, and
# each stands for its tier's by running the most distinct external tools of it.
ONE_PER_TIER = {
    # pip's install of the test extras into the session, and Debian's python3-libvirt seen
    # through --system-site-packages (libvirt's test driver).
    "unit": "tests/test_power.py::test_status_on_battery_with_the_vm_running",
    # The package build (build-essential, debhelper, dh-python, fakeroot, stdeb, jinja2,
    # iasl from acpica-tools), then lintian.
    "tool": "tests/test_package.py::test_lintian_reports_no_errors_or_warnings",
    # git (a scratch clone and its commits), gpg and reprepro (the signed repository),
    # mmdebstrap (the chroot) and piuparts.
    "install": "tests/test_piuparts.py::test_piuparts_fails_a_build_that_leaves_a_file_after_purge",
    # libvirtd, virtlogd and virsh, QEMU, OVMF, swtpm, busybox-static and apt-get download
    # (the guest's kernel).
    "vm": "tests/test_vm_smoke.py::test_guest_boots_once_with_every_check[aurora-z]",
}
ONE_PER_TIER_VARIABLE = "GPUPASS_ONE_PER_TIER"


def tier(item: pytest.Item) -> str:
    """The tier an item runs in (noxfile.PYTEST_TIERS): its vm, install or tool marker, else unit."""
    return next((name for name in ("vm", "install", "tool") if item.get_closest_marker(name)), "unit")


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every tier's representative is still there
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get(ONE_PER_TIER_VARIABLE):
        return
    wanted = set(ONE_PER_TIER.values())
    missing = wanted - {item.nodeid for item in items}
    if missing:
        raise pytest.UsageError(f"{ONE_PER_TIER_VARIABLE}: no such test (renamed?): {', '.join(sorted(missing))}")
    tiers = {item.nodeid: tier(item) for item in items if item.nodeid in wanted}
    misplaced = [f"{nodeid} ({tiers[nodeid]})" for name, nodeid in ONE_PER_TIER.items() if tiers[nodeid] != name]
    if misplaced:
        raise pytest.UsageError(f"{ONE_PER_TIER_VARIABLE}: not of the tier it stands for: {', '.join(misplaced)}")
    config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in wanted])
    items[:] = [item for item in items if item.nodeid in wanted]


TIER_ORDER = ("unit", "tool", "install", "vm")


class TierOrder:
    """The tiers one after another, fast ones first: unit, tool, install, vm. The install tier's
    chroot phases (tests/matrix.py) start at its first test and run in threads beside the tests
    that follow, which are then install tests only (a unit test that empties PATH would break
    a row's mount). The fresh machine's test only waits for its commands, which start when
    collection ends: it runs last, so that wait overlaps the whole session. (After every other
    reordering: pytest groups items by their session-scoped parameters; the sort is stable.)"""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        from .test_fresh_machine import TEST_NAME

        items.sort(key=lambda item: (item.name == TEST_NAME, TIER_ORDER.index(tier(item))))


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(TierOrder(), "gpupass-tier-order")
    chroot.release_stale_mounts()


# The fresh machine's set-up commands run beside the rest of the session (tests/test_fresh_machine.py).
def pytest_collection_finish(session: pytest.Session) -> None:
    from .test_fresh_machine import start_if_selected

    start_if_selected(session)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from .test_fresh_machine import stop_unchecked

    stop_unchecked()


@pytest.fixture(scope="session")
def regenerate(request: pytest.FixtureRequest) -> bool:
    return request.config.getoption("--regenerate")


@pytest.fixture(scope="session")
def aurora() -> model.Model:
    return model.load(ROOT / "models" / "aurora-z.toml", "models/aurora-z.toml")


@pytest.fixture(scope="session")
def aurora_text() -> str:
    return (ROOT / "models" / "aurora-z.toml").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def aurora_version() -> str:
    """The Debian version this checkout gives aurora-z's package (from its git history)."""
    return version.of_model(ROOT / "models" / "aurora-z.toml").debian


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, aurora: model.Model) -> Path:
    """build/ as `gpupass build-deb aurora-z` leaves it (in a scratch directory)."""
    out = tmp_path_factory.mktemp("build")
    debsrc.build_deb(aurora, ROOT / "models" / "aurora-z.toml", out)
    return out


@pytest.fixture(scope="session")
def built_tool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tool package as `gpupass build-tool` builds it (in a scratch directory)."""
    return toolpkg.build(tmp_path_factory.mktemp("build-tool"))


def new_signing_key(home: Path) -> str:
    """A throwaway key in a private keyring at ``home``; returns its fingerprint."""
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    gpg = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(
        [*gpg, "--quick-gen-key", "gpupass test <test@gpupass.example>", "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
        env=env,
    )
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys"], check=True, capture_output=True, text=True, env=env
    ).stdout
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def stop_gpg_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False, capture_output=True)


@contextlib.contextmanager
def throwaway_key(home: Path) -> Iterator[str]:
    """A throwaway key in a private keyring at ``home``, $GNUPGHOME for the block; yields its
    fingerprint, then stops the gpg-agent that keyring started."""
    key = new_signing_key(home)
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("GNUPGHOME", str(home))
            yield key
    finally:
        stop_gpg_agent(home)


@pytest.fixture
def signing_key(tmp_path: Path) -> Iterator[str]:
    """throwaway_key for one test."""
    with throwaway_key(tmp_path / "gnupg") as key:
        yield key


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=gpupass test", "-c", "user.email=test@gpupass.example"]
    return subprocess.run(["git", "-C", str(repo), *identity, *args], check=True, capture_output=True, text=True).stdout


def scratch_clone(dest: Path) -> Path:
    """An independent clone of this checkout with its uncommitted changes committed on top:
    what the working tree holds, in a clean tree whose history tests may change."""
    git(ROOT, "clone", "--quiet", "--no-local", str(ROOT), str(dest))
    files = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, files):
        src, dst = ROOT / name, dest / name
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif dst.exists():  # deleted in the working tree
            dst.unlink()
    git(dest, "add", "-A")
    if git(dest, "status", "--porcelain"):
        git(dest, "commit", "--quiet", "-m", "the working tree's uncommitted changes")
    return dest


def clean_environment() -> dict[str, str]:
    """The environment without what would pin a build to this checkout or this date."""
    return {k: v for k, v in os.environ.items() if k not in ("GPUPASS_SOURCE", "SOURCE_DATE_EPOCH")}


def gpupass(clone: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m gpupass ...`` run from ``clone``'s own sources."""
    return subprocess.run(
        [sys.executable, "-m", "gpupass", *args],
        cwd=clone,
        env={**clean_environment(), "PYTHONPATH": str(clone / "pkg"), **(env or {})},
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="session")
def plain_chroot_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chroot.require_root_tools()
    # apt-utils: autopkgtest serves the .deb under test to the testbed with apt-ftparchive.
    return chroot.make_tarball(tmp_path_factory.mktemp("chroot"), include=("python3", "systemd", "apt-utils"))


@pytest.fixture
def plain_chroot(plain_chroot_tarball: Path, tmp_path: Path) -> chroot.Chroot:
    return chroot.unpack(plain_chroot_tarball, tmp_path / "root")


# The release matrix's systems, shared by every install-tier module that tests on each release
# (test_releases, test_upgrade): each tarball is made once per session.
@pytest.fixture(scope="session")
def release_tarballs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """For each release, a system with a kernel, its initramfs tool, GRUB's common files, and
    libvirt with AppArmor (whose abstraction decides the AppArmor notice). Made all at once:
    mmdebstrap waits on the mirror and on dpkg as much as on a core."""
    chroot.require_root_tools()
    releases = chroot.releases()
    dests = [tmp_path_factory.mktemp(release.name) for release in releases]

    def make(release: chroot.Release, dest: Path) -> Path:
        include = ("python3", release.initramfs, "linux-image-amd64", "grub2-common", "systemd")
        include += ("libvirt-daemon-system", "apparmor", *release.extra)
        return chroot.make_tarball(dest, include=include, suite=release.suite)

    with ThreadPoolExecutor(max_workers=len(releases)) as pool:
        return dict(zip((r.name for r in releases), pool.map(make, releases, dests), strict=True))


@pytest.fixture(scope="session", params=chroot.releases(), ids=lambda r: r.name)
def release_tarball(request: pytest.FixtureRequest, release_tarballs: dict[str, Path]):
    return request.param, release_tarballs[request.param.name]


@pytest.fixture
def system(release_tarball, tmp_path: Path):
    release, tarball = release_tarball
    return release, chroot.system(release, tarball, tmp_path / "root")


# A parameter for a test whose rows run at once (tests/matrix.py): the release itself.
EACH_RELEASE = pytest.mark.parametrize("release", chroot.releases(), ids=lambda r: r.name)


# One libvirtd for the whole session, shared by the libvirt and vm-smoke tests.
from .libvirt import libvirtd_fixture  # noqa: E402, F401  (provides the "libvirtd" fixture)

# The install tier's chroot phases, started together at its first test.
from .matrix import chroot_phases, chroot_phases_started  # noqa: E402, F401
