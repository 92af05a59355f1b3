"""piuparts, Debian's own install/upgrade/purge QA, on a model's package.

One piuparts run per release: its install-upgrade-purge test, in a copy of the chroot,
installs the previous version through apt from a repository, upgrades to the new .deb, purges,
and compares the whole tree with the one before. Its install-purge test (the new .deb alone)
is left out (--no-install-purge-test): the upgrade test makes the same checks after the same
purge (debsums, processes, broken symlinks, cron and logrotate files, the tree's metadata) and
adds the files moved between / and /usr, and version N's install is a fresh one. It runs on the
release matrix's Debian 12 and Debian 13 (initramfs-tools) systems (conftest.release_tarballs):
one row per Debian release, the dracut row's upgrade is tests/test_upgrade.py's.

The tool package gpupass (`apt install gpupass`, then `gpupass setup`) gets two install-purge
tests on Debian 13: alone, and replaced by a model package (--extra-old-packages installs the
tool from the repository first, then the model's .deb goes in over it: Conflicts/Replaces;
after the purge nothing of either may be left). It is Architecture: all and its Depends are the
same names on both releases, so one release covers it.

`nox -s piuparts MODEL=<id>` runs this module for any model (GPUPASS_PIUPARTS_MODEL).
"""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpupass.packaging import repo

from . import chroot
from .conftest import EACH_RELEASE, git, gpupass, scratch_clone, throwaway_key

pytestmark = pytest.mark.install

MODEL = os.environ.get("GPUPASS_PIUPARTS_MODEL", "aurora-z")
PIUPARTS_RELEASES = ("debian12", "debian13")
TOOL_RELEASE = "debian13"
# A test build whose postinst leaves a file that purge does not take away.
LEFTOVER = "/etc/gpupass-leftover"
LEAK = f'if [ "$1" = configure ]; then\n\ttouch {LEFTOVER}\nfi\n\n#DEBHELPER#\n'


@dataclass(frozen=True)
class Builds:
    previous: Path  # a repository holding the model's version N and the tool package
    new: Path  # version N+1, from a commit that changes the model file
    leaky: Path  # N+2: a postinst that leaves LEFTOVER behind
    versions: tuple[str, str, str]  # N, N+1, N+2
    tool: Path  # the tool package (gpupass build-tool)


def build(clone: Path, out: Path) -> Path:
    result = gpupass(clone, "build-deb", MODEL, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return next(out.glob(f"gpupass-{MODEL}_*_all.deb"))


@pytest.fixture(scope="session")
def piuparts_builds(chroot_phases) -> Builds:
    return chroot_phases.piuparts_builds


def make_builds(tmp_path_factory: pytest.TempPathFactory, tool: Path) -> Builds:
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

    with throwaway_key(work / "gnupg") as key:
        repo.publish([previous, tool], work / "repo", key)
    versions = tuple(field(deb, "Version") for deb in (previous, new, leaky))
    return Builds(work / "repo", new, leaky, versions, tool)


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True, text=True).stdout.strip()


def run_piuparts(release: chroot.Release, base: chroot.Chroot, builds: Builds) -> subprocess.CompletedProcess[str]:
    """piuparts on a release's system (unpacked for --existing-chroot; it works on a copy). Both
    releases run at once, beside the other chroot phases (tests/matrix.py)."""
    return piuparts(release.suite, base.root, builds.new, builds.previous)


def run_tool_piuparts(
    release: chroot.Release, base: chroot.Chroot, builds: Builds
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """The tool's two install-purge tests on one release, at once (piuparts copies the base)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        alone = pool.submit(install_purge, release.suite, base.root, builds.tool)
        replaced = pool.submit(
            install_purge,
            release.suite,
            base.root,
            builds.new,
            "--extra-old-packages=gpupass",
            *with_repository(builds.previous),
        )
        return alone.result(), replaced.result()


def install_purge(suite: str, base: Path, deb: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """piuparts' install-purge test alone (no upgrade test)."""
    return run(suite, base, deb, "--no-upgrade-test", *options)


def piuparts(suite: str, base: Path, deb: Path, previous: Path) -> subprocess.CompletedProcess[str]:
    """piuparts' install-upgrade-purge test alone: ``previous`` (a repository) through apt, then ``deb``."""
    return run(suite, base, deb, "--no-install-purge-test", *with_repository(previous))


# The initramfs the trigger writes again after purge has the same files as before the install
# (test_releases reads them back) but not the same bytes: image builds are not reproducible.
REBUILT_IMAGES = r"^/boot/initrd\.img-"


def run(suite: str, base: Path, deb: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """piuparts on ``deb`` in a copy of the system ``base`` (--existing-chroot)."""
    return subprocess.run(
        ["piuparts", "--existing-chroot", str(base), "--distribution", suite, "--ignore-regexp", REBUILT_IMAGES]
        + [*options, str(deb)],
        capture_output=True,
        text=True,
        env=chroot.HOST_ENV,  # not the session's own: this runs beside the unit tier
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


def assert_installed_upgraded_and_purged(log: str, old: str, new: str) -> None:
    """What dpkg printed in piuparts' one test: version N unpacked on a system without the
    package (through apt, from the repository), N+1 unpacked over it, then N+1 purged and
    the tree checked (debsums before the purge)."""
    package = f"gpupass-{MODEL}"
    steps = [
        f"Unpacking {package} ({old}) ...",
        f"Unpacking {package} ({new}) over ({old}) ...",
        "debsums",
        f"Purging configuration files for {package} ({new}) ...",
    ]
    assert_in_order(log, steps)


def assert_in_order(log: str, steps: list[str]) -> None:
    """``steps`` appear in ``log`` in this order; else the positions and the log's lines about gpupass."""
    where = [log.find(step) for step in steps]
    lines = "\n".join(line for line in log.splitlines() if "gpupass" in line and "DEBUG" not in line)
    assert -1 not in where and where == sorted(where), (dict(zip(steps, where, strict=True)), lines[-8000:])


@EACH_RELEASE
def test_piuparts_installs_upgrades_and_purges_from_the_repository(
    release: chroot.Release, chroot_phases, piuparts_builds: Builds
) -> None:
    if release.name not in PIUPARTS_RELEASES:
        pytest.skip(f"piuparts runs on {', '.join(PIUPARTS_RELEASES)} (one row per Debian release)")
    result = chroot_phases.rows["piuparts"][release.name]
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    old, new, _ = piuparts_builds.versions
    assert_installed_upgraded_and_purged(log, old, new)
    assert "PASS: Installation, upgrade and purging tests." in log, log[-6000:]
    assert "PASS: All tests." in log


def run_leftover(plain_chroot: chroot.Chroot, builds: Builds) -> subprocess.CompletedProcess[str]:
    """The same one test, with N+2 as the new .deb. It needs no release's kernel: the plain Debian
    12 chroot (no initramfs to rebuild) shows it. From the session's start, beside the other phases."""
    return piuparts(chroot.SUITE, plain_chroot.root, builds.leaky, builds.previous)


def test_piuparts_fails_a_build_that_leaves_a_file_after_purge(chroot_phases, piuparts_builds: Builds) -> None:
    """piuparts' purge check fails a build whose postinst leaves a file behind."""
    result = chroot_phases.jobs["leftover"].result()
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-6000:]
    old, _, leaky = piuparts_builds.versions
    assert_installed_upgraded_and_purged(log, old, leaky)
    assert re.search(rf"ERROR: FAIL: Package purging left files on system:\n  {LEFTOVER}\t not owned\n", log), log[
        -6000:
    ]
    assert "ERROR: FAIL: Installation, upgrade and purging tests." in log


@pytest.fixture(scope="module")
def tool_rows(chroot_phases, piuparts_builds: Builds):
    return chroot_phases.rows["tool"][TOOL_RELEASE]


def test_piuparts_installs_and_purges_the_tool(tool_rows, piuparts_builds: Builds) -> None:
    result = tool_rows[0]
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    tool = field(piuparts_builds.tool, "Version")
    assert_in_order(log, [f"Unpacking gpupass ({tool}) ...", f"Setting up gpupass ({tool}) ...", "debsums"])
    assert "PASS: Installation and purging test." in log and "PASS: All tests." in log, log[-6000:]


def test_piuparts_replaces_the_tool_with_a_model_and_purges_it(tool_rows, piuparts_builds: Builds) -> None:
    """The tool from the repository through apt, then the model's .deb over it: apt removes the
    tool (Conflicts/Replaces) without a prompt or an error; after the model's purge nothing of
    either is left (piuparts compares the tree with the one before the tool went in)."""
    result = tool_rows[1]
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    tool = field(piuparts_builds.tool, "Version")
    _, new, _ = piuparts_builds.versions
    package = f"gpupass-{MODEL}"
    assert_in_order(
        log,
        [
            f"Setting up gpupass ({tool}) ...",
            f"Removing gpupass ({tool}) ...",  # apt's plan for the model's Conflicts: no prompt, no error
            f"Setting up {package} ({new}) ...",
            "debsums",
            f"Purging configuration files for {package} ({new}) ...",
        ],
    )
    assert "PASS: Installation and purging test." in log and "PASS: All tests." in log, log[-6000:]
