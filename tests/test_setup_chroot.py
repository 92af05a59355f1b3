"""`apt install gpupass`, then `gpupass setup`, in Debian 12 and Debian 13 + dracut systems
whose only source of gpupass is the project's signed repository (repo.publish, as `nox -s
publish` makes it, with a test key): the tool package and aurora-z's package in it.

On a published laptop's layout no file in models/ is for (tests/layouts.py, dell-xps-15-9570),
setup builds gpupass-dell-inc-xps-15-9570 and installs it in place of the tool; on aurora-z's layout it
installs gpupass-aurora-z from the repository and builds nothing. Both releases run at once
(each mostly waits on apt and dpkg), once per session; the tests read what they recorded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gpupass.packaging import repo, toolpkg

from . import chroot
from .conftest import ROOT, scratch_clone, throwaway_key
from .layouts import AURORA_Z, LAYOUTS
from .test_upgrade import initramfs_rebuilds

pytestmark = pytest.mark.install

ROWS = ("debian12", "debian13-dracut")
OTHER = LAYOUTS["dell-xps-15-9570"]  # published, and not in models/
OTHER_IDS = ("10de:1c8c",)
OTHER_PACKAGE = "gpupass-dell-inc-xps-15-9570"  # probe's id from the laptop's DMI strings
WATCHED = ("etc", "usr", "var/lib")  # what --dry-run must leave as it was
# README's command for a source checkout (checked against README.md below).
SOURCE_CHECKOUT_SETUP = "PYTHONPATH=pkg python3 -m gpupass setup"


@dataclass
class Run:
    release: chroot.Release
    steps: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)


def tree_state(root: Path) -> dict[str, tuple[int, int, int]]:
    """Path -> (mode, size, mtime) under WATCHED."""
    state = {}
    for top in WATCHED:
        for dirpath, dirnames, filenames in os.walk(root / top):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                state[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return state


def scenario(release: chroot.Release, root: chroot.Chroot, inputs: Inputs) -> Run:
    """One release's row (in a system as chroot.system sets it up), beside the other chroot
    phases (tests/matrix.py)."""
    run = Run(release)
    shutil.copytree(inputs.published, root.root / "srv/gpupass")
    (root.root / "etc/apt/sources.list.d/gpupass.sources").write_text(repo.sources_entry(Path("/srv/gpupass")))
    OTHER.build(root.root / "srv/other")
    AURORA_Z.build(root.root / "srv/aurora-z")

    def step(name: str, *argv: str) -> subprocess.CompletedProcess[str]:
        run.steps[name] = root.run(*argv, check=False)
        return run.steps[name]

    step("update", "apt-get", "update")
    step("install tool", "apt-get", "install", "--yes", "gpupass")
    before = tree_state(root.root)
    step("dry run", "gpupass", "setup", "--root", "/srv/other", "--dry-run")
    after = tree_state(root.root)
    run.facts["dry run changed"] = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    step("setup other", "gpupass", "setup", "--root", "/srv/other", "--yes")
    grub = root.root / f"etc/default/grub.d/{OTHER_PACKAGE}.cfg"
    run.facts["grub drop-in"] = grub.read_text() if grub.exists() else ""
    step("status", "dpkg-query", "-W", "-f=${Package} ${Version} ${db:Status-Abbrev}\n", "gpupass*")
    step("setup again", "gpupass", "setup", "--root", "/srv/other", "--yes")
    # The model package's files, and a few of the tool's (removed when the model replaced it).
    owned = set(root.run("dpkg-query", "-L", OTHER_PACKAGE, check=False).stdout.split())
    owned |= {f"/usr/share/gpupass/source/{p}" for p in ("pkg/gpupass/packaging/debsrc.py", "debian/rules")}
    step("remove", "apt-get", "remove", "--yes", OTHER_PACKAGE)
    step("purge", "apt-get", "purge", "--yes", OTHER_PACKAGE)
    run.facts["left behind"] = sorted(
        p
        for p in owned
        if p.startswith(("/etc/", "/usr/", "/var/"))
        and not os.path.isdir(root.root / p[1:])
        and os.path.lexists(root.root / p[1:])
    )
    run.facts["state left"] = sorted(
        p for p in ("var/lib/gpupass", "usr/share/gpupass", "etc/gpupass") if (root.root / p).exists()
    )
    step("reinstall tool", "apt-get", "install", "--yes", "gpupass")
    step("setup aurora-z", "gpupass", "setup", "--root", "/srv/aurora-z", "--yes")
    run.facts["local builds"] = (root.root / "var/lib/gpupass/local").exists()
    step("status aurora-z", "dpkg-query", "-W", "-f=${Package} ${Version} ${db:Status-Abbrev}\n", "gpupass*")
    # README's command from a source checkout, with the tool package's Depends from Debian and
    # no gpupass package installed.
    step("purge aurora-z", "apt-get", "purge", "--yes", "gpupass-aurora-z")
    step("build needs", "apt-get", "install", "--yes", *toolpkg.BUILD_NEEDS)
    shutil.copytree(inputs.checkout, root.root / "srv/checkout", symlinks=True)
    step("setup from checkout", "sh", "-c", f"cd /srv/checkout && {SOURCE_CHECKOUT_SETUP} --root /srv/other --yes")
    step("status checkout", "dpkg-query", "-W", "-f=${Package} ${Version} ${db:Status-Abbrev}\n", "gpupass*")
    shutil.rmtree(root.root)
    return run


@dataclass(frozen=True)
class Inputs:
    published: Path  # the signed repository with aurora-z's package and the tool
    checkout: Path  # a clone of this checkout, what README's source-checkout command runs in


def make_repository(tmp_path_factory: pytest.TempPathFactory, built: Path, built_tool: Path) -> Inputs:
    """The signed repository with aurora-z's package and the tool, as `nox -s publish` makes it,
    and a source checkout."""
    work = tmp_path_factory.mktemp("setup-repo")
    debs = [next(built.glob("gpupass-aurora-z_*_all.deb")), built_tool]
    with throwaway_key(work / "gnupg") as key:
        repo.publish(debs, work / "repo", key)
    checkout = scratch_clone(work / "checkout")
    shutil.rmtree(checkout / ".git")  # the command needs no git, and the laptop may have none
    return Inputs(work / "repo", checkout)


@pytest.fixture(params=ROWS)
def row(request: pytest.FixtureRequest, chroot_phases) -> Run:
    runs = chroot_phases.rows["setup"]
    if request.param not in runs:
        pytest.skip(f"{request.param} is not in GPUPASS_RELEASES")
    return runs[request.param]


def ok(run: Run, name: str) -> str:
    result = run.steps[name]
    assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def installed(status: str) -> list[str]:
    """The installed packages' "name version" lines of dpkg-query's listing (which also names
    packages dpkg only knows of: the removed tool, the virtual gpupass-model)."""
    return [line.removesuffix(" ii ") for line in status.splitlines() if line.endswith(" ii ")]


def test_apt_installs_the_tool_from_the_repository(row: Run) -> None:
    assert re.search(r"^Setting up gpupass \(", ok(row, "install tool"), re.M)


def test_dry_run_changes_nothing(row: Run) -> None:
    out = ok(row, "dry run")
    assert out.splitlines()[-1] == "--dry-run: nothing was changed"
    assert row.facts["dry run changed"] == []


def test_setup_builds_and_installs_the_probed_model_in_place_of_the_tool(row: Run) -> None:
    out = ok(row, "setup other")
    assert f"no published model matches: {OTHER_PACKAGE} is built here from the probed model" in out
    assert f"built and installed {OTHER_PACKAGE} ({OTHER_PACKAGE}.deb) from the probed model" in out
    assert "Removing gpupass (" in out  # the tool, replaced: no dpkg error, no prompt
    assert initramfs_rebuilds(out, row.release.initramfs) == 1
    assert out.splitlines()[-4:] == [
        "  1. reboot: the kernel arguments and the initramfs take effect at the next boot",
        "  2. sudo gpupass doctor: what is ready and what is not",
        "  3. sudo gpupass vm define: the Windows VM",
        "  4. gpupass report: once Windows runs on the GPU, the facts to confirm this model for the next person",
    ]
    assert f"vfio-pci.ids={','.join(OTHER_IDS)}" in row.facts["grub drop-in"]
    assert installed(ok(row, "status")) == [f"{OTHER_PACKAGE} 0.1.0+local1-1"]


def test_setup_again_changes_nothing(row: Run) -> None:
    assert ok(row, "setup again").splitlines()[-1] == (
        f"nothing to change: {OTHER_PACKAGE} 0.1.0+local1-1 is installed for this laptop"
    )


def test_remove_then_purge_leaves_no_file_of_either_package(row: Run) -> None:
    ok(row, "remove")
    ok(row, "purge")
    assert row.facts["left behind"] == []
    assert row.facts["state left"] == []


def test_a_published_laptop_gets_the_published_package_and_nothing_is_built(row: Run) -> None:
    ok(row, "reinstall tool")
    out = ok(row, "setup aurora-z")
    assert "installed gpupass-aurora-z from the configured repositories (a published model)" in out
    assert row.facts["local builds"] is False
    status = installed(ok(row, "status aurora-z"))
    assert len(status) == 1 and status[0].startswith("gpupass-aurora-z 0.1.0+"), status


def test_readme_s_source_checkout_command_builds_and_installs_the_probed_model(row: Run) -> None:
    """`sudo PYTHONPATH=pkg python3 -m gpupass setup` in a checkout (no git in it), with the tool
    package's Depends installed from Debian and no gpupass package: the same build and install."""
    assert f"`sudo {SOURCE_CHECKOUT_SETUP}`" in (ROOT / "README.md").read_text()
    ok(row, "purge aurora-z")
    ok(row, "build needs")
    out = ok(row, "setup from checkout")
    assert f"built and installed {OTHER_PACKAGE} ({OTHER_PACKAGE}.deb) from the probed model" in out
    assert installed(ok(row, "status checkout")) == [f"{OTHER_PACKAGE} 0.1.0+local1-1"]
