"""piuparts, Debian's own install/upgrade/purge QA, on a model's package.

piuparts installs the package in a copy of a chroot, purges it and compares the whole tree
with the one before; with the previous version in an apt repository it also installs that
one through apt, upgrades to the new .deb and purges. It runs on the release matrix's
Debian 12 and Debian 13 (initramfs-tools) systems (conftest.release_tarballs): one row per
Debian release, the dracut row's upgrade is tests/test_upgrade.py's.

`nox -s piuparts MODEL=<id>` runs this module for any model (GPUPASS_PIUPARTS_MODEL).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpupass.packaging import repo

from . import chroot
from .conftest import git, gpupass, new_signing_key, scratch_clone, stop_gpg_agent

pytestmark = pytest.mark.install

MODEL = os.environ.get("GPUPASS_PIUPARTS_MODEL", "aurora-z")
PIUPARTS_RELEASES = ("debian12", "debian13")
# A test build whose postinst leaves a file that purge does not take away.
LEFTOVER = "/etc/gpupass-leftover"
LEAK = f'if [ "$1" = configure ]; then\n\ttouch {LEFTOVER}\nfi\n\n#DEBHELPER#\n'


@dataclass(frozen=True)
class Builds:
    previous: Path  # a repository holding the model's version N
    new: Path  # version N+1, from a commit that changes the model file
    leaky: Path  # N+2: a postinst that leaves LEFTOVER behind


def build(clone: Path, out: Path) -> Path:
    result = gpupass(clone, "build-deb", MODEL, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return next(out.glob(f"gpupass-{MODEL}_*_all.deb"))


@pytest.fixture(scope="session")
def piuparts_builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    work = tmp_path_factory.mktemp("piuparts")
    clone = scratch_clone(work / "clone")
    previous = build(clone, work / "previous")
    model_file = clone / "models" / f"{MODEL}.toml"
    model_file.write_text(model_file.read_text() + "# A fix of the model file (piuparts' upgrade test).\n")
    git(clone, "commit", "--quiet", "-am", f"{MODEL}: the next version")
    new = build(clone, work / "new")
    postinst = clone / "debian/package.postinst"
    postinst.write_text(postinst.read_text().replace("\n#DEBHELPER#\n", "\n" + LEAK, 1))
    git(clone, "commit", "--quiet", "-am", "a postinst that leaves a file behind")
    leaky = build(clone, work / "leaky")

    home = work / "gnupg"
    key = new_signing_key(home)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GNUPGHOME", str(home))
        repo.publish([previous], work / "repo", key)
    stop_gpg_agent(home)
    return Builds(work / "repo", new, leaky)


@pytest.fixture
def base(release_tarball, tmp_path: Path) -> tuple[chroot.Release, Path]:
    """The release's system unpacked for piuparts' --existing-chroot (it works on a copy)."""
    release, tarball = release_tarball
    if release.name not in PIUPARTS_RELEASES:
        pytest.skip(f"piuparts runs on {', '.join(PIUPARTS_RELEASES)} (one row per Debian release)")
    return release, chroot.unpack(tarball, tmp_path / "base").root


# The initramfs the trigger writes again after purge has the same files as before the install
# (test_releases reads them back) but not the same bytes: image builds are not reproducible.
REBUILT_IMAGES = r"^/boot/initrd\.img-"


def piuparts(suite: str, base: Path, deb: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "piuparts",
            "--existing-chroot",
            str(base),
            "--distribution",
            suite,
            "--ignore-regexp",
            REBUILT_IMAGES,
            *options,
            str(deb),
        ],
        capture_output=True,
        text=True,
    )


def with_repository(published: Path) -> tuple[str, ...]:
    """The repository of version N, bind-mounted at its own path and signed as users have it."""
    keyring = published / repo.KEYRING
    return (
        "--bindmount",
        str(published),
        "--extra-repo",
        f"deb [signed-by={keyring}] file://{published} {repo.SUITE} {repo.COMPONENT}",
    )


def test_piuparts_install_purge_and_upgrade_from_the_repository(base, piuparts_builds: Builds) -> None:
    release, root = base
    result = piuparts(release.suite, root, piuparts_builds.new, *with_repository(piuparts_builds.previous))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "PASS: Installation and purging test." in log
    # Version N came from the repository (not the .deb), then the .deb was installed over it.
    assert "PASS: Installation, upgrade and purging tests." in log, log[-6000:]
    assert "PASS: All tests." in log


def test_piuparts_fails_a_build_that_leaves_a_file_after_purge(
    plain_chroot: chroot.Chroot, piuparts_builds: Builds
) -> None:
    """The check that matters here does not need a release's kernel: the plain Debian 12
    chroot (no initramfs to rebuild) shows that piuparts catches a leftover."""
    result = piuparts(chroot.SUITE, plain_chroot.root, piuparts_builds.leaky, "--no-upgrade-test")
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-6000:]
    assert re.search(rf"ERROR: FAIL: Package purging left files on system:\n  {LEFTOVER}\t not owned\n", log), log[
        -6000:
    ]
    assert "ERROR: FAIL: Installation and purging test." in log
