"""The built .deb, checked by Debian's own tools: dpkg-deb and lintian."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.tool


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], check=True, capture_output=True, text=True).stdout


def test_build_leaves_versioned_deb_and_alias(built: Path, aurora_version: str) -> None:
    versioned = f"gpupass-aurora-z_{aurora_version}_all.deb"
    assert sorted(p.name for p in built.iterdir()) == ["gpupass-aurora-z.deb", versioned]
    assert (built / "gpupass-aurora-z.deb").read_bytes() == (built / versioned).read_bytes()


def test_package_ships_every_artifact(built: Path) -> None:
    listing = dpkg_deb("-c", str(built / "gpupass-aurora-z.deb"))
    shipped = {line.split()[-1].removeprefix(".") for line in listing.splitlines()}
    for path in (
        "/etc/default/grub.d/gpupass-aurora-z.cfg",
        "/usr/lib/modprobe.d/gpupass-aurora-z.conf",
        "/usr/share/initramfs-tools/modules.d/gpupass-aurora-z.conf",
        "/usr/share/gpupass/ssdt-battery.aml",
        "/usr/share/gpupass/domain.xml",
        "/usr/share/gpupass/models/aurora-z.toml",
        "/usr/lib/systemd/system/gpupass-vbios.service",
        "/usr/lib/dracut/dracut.conf.d/gpupass-aurora-z.conf",
        "/etc/apparmor.d/abstractions/libvirt-qemu.d/gpupass-aurora-z",
        "/etc/gpupass/power.conf",
        "/usr/lib/udev/rules.d/90-gpupass-aurora-z.rules",
        "/usr/lib/systemd/system/gpupass-power.service",
        "/usr/lib/gpupass/libvirt-qemu-hook",
        "/usr/lib/tmpfiles.d/gpupass-aurora-z.conf",
        "/usr/lib/udev/rules.d/70-gpupass-aurora-z-desktop.rules",
        "/usr/share/gpupass/modes/on-demand/modprobe.conf",
        "/usr/lib/gpupass/maintscript-functions.sh",
        "/usr/bin/gpupass",
        "/usr/lib/python3/dist-packages/gpupass/cli.py",
    ):
        assert path in shipped, path
    # The laptop side and the modules it shares with the build side; the build side stays behind.
    dist = "/usr/lib/python3/dist-packages/"
    source = ROOT / "pkg"
    laptop_side = sorted(
        f"{dist}{p.relative_to(source)}"
        for p in (source / "gpupass").rglob("*.py")
        if p.relative_to(source / "gpupass").parts[0] != "packaging"
    )
    assert sorted(p for p in shipped if p.startswith(dist) and p.endswith(".py")) == laptop_side
    assert f"{dist}gpupass/laptop/doctor/diagnose.py" in laptop_side
    assert f"{dist}gpupass/packaging/render.py" not in laptop_side
    # Merged /usr: nothing in the aliased top-level directories.
    assert [p for p in shipped if p.split("/")[1] in ("lib", "lib64", "bin", "sbin")] == []


def test_the_shipped_maintscript_functions_are_the_scripts_own(built: Path, tmp_path: Path) -> None:
    """gpupass mode runs the functions the maintainer scripts have pasted in, tokens filled in."""
    subprocess.run(["dpkg-deb", "-x", str(built / "gpupass-aurora-z.deb"), str(tmp_path)], check=True)
    shipped = (tmp_path / "usr/lib/gpupass/maintscript-functions.sh").read_text()
    subprocess.run(["dpkg-deb", "-e", str(built / "gpupass-aurora-z.deb"), str(tmp_path / "DEBIAN")], check=True)
    postrm = (tmp_path / "DEBIAN/postrm").read_text()
    assert shipped.strip() in postrm
    assert "#" + "KERNEL_ARGS#" not in shipped and "intel_iommu=on iommu=pt vfio-pci.ids=10de:25a2,10de:2291" in shipped


def test_shipped_artifacts_are_the_golden_files(built: Path, tmp_path: Path) -> None:
    """What the package build rendered (with Debian's jinja2 and iasl) is what the tests check."""
    subprocess.run(["dpkg-deb", "-x", str(built / "gpupass-aurora-z.deb"), str(tmp_path)], check=True)
    golden = ROOT / "tests" / "golden" / "aurora-z"
    for expected in golden.rglob("*"):
        if expected.is_file():
            rel = expected.relative_to(golden)
            assert (tmp_path / rel).read_bytes() == expected.read_bytes(), rel


def test_control_fields(built: Path) -> None:
    fields = dpkg_deb("-f", str(built / "gpupass-aurora-z.deb"))
    assert "Package: gpupass-aurora-z\n" in fields
    assert "Architecture: all\n" in fields
    assert "Section: admin\n" in fields
    # One laptop, one model.
    for field in ("Provides", "Conflicts", "Replaces"):
        assert f"{field}: gpupass, gpupass-model\n" in fields
    assert "Homepage: None" not in fields
    assert "Description: dGPU passthrough setup for the MECHREVO Aurora Z\n" in fields
    depends = next(line for line in fields.splitlines() if line.startswith("Depends:"))
    assert depends == "Depends: python3:any (>= 3.11~)"
    recommends = next(line for line in fields.splitlines() if line.startswith("Recommends:"))
    assert recommends == (
        "Recommends: libvirt-daemon-system, qemu-system-x86, ovmf, python3-libvirt, swtpm, swtpm-tools"
    )
    suggests = next(line for line in fields.splitlines() if line.startswith("Suggests:"))
    assert suggests == "Suggests: uefitool-cli, p7zip-full, innoextract"


def test_the_libvirt_hook_is_a_link_so_remove_takes_it_away(built: Path) -> None:
    """A regular file under /etc would be a conffile, kept after apt remove; the link is not one."""
    listing = dpkg_deb("-c", str(built / "gpupass-aurora-z.deb"))
    hook = next(line for line in listing.splitlines() if "/etc/libvirt/hooks/qemu.d/gpupass" in line)
    assert hook.startswith("lrwxrwxrwx")
    assert hook.endswith("./etc/libvirt/hooks/qemu.d/gpupass-aurora-z -> /usr/lib/gpupass/libvirt-qemu-hook")
    script = next(line for line in listing.splitlines() if line.endswith("./usr/lib/gpupass/libvirt-qemu-hook"))
    assert script.startswith("-rwxr-xr-x")


def test_conffiles_are_only_under_etc(built: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-e", str(built / "gpupass-aurora-z.deb"), str(tmp_path)], check=True)
    assert (tmp_path / "conffiles").read_text().split() == [
        "/etc/apparmor.d/abstractions/libvirt-qemu.d/gpupass-aurora-z",
        "/etc/default/grub.d/gpupass-aurora-z.cfg",
        "/etc/gpupass/power.conf",
    ]
    assert (tmp_path / "triggers").read_text().splitlines()[-1] == "activate-noawait update-initramfs"


def test_lintian_reports_no_errors_or_warnings(built: Path) -> None:
    # initial-upload-closes-no-bugs asks for a Debian ITP bug: these packages are not for Debian.
    result = subprocess.run(
        [
            "lintian",
            "--fail-on",
            "error,warning",
            "--suppress-tags",
            "initial-upload-closes-no-bugs",
            str(built / "gpupass-aurora-z.deb"),
        ],
        capture_output=True,
        text=True,
    )
    errors = [line for line in result.stdout.splitlines() if line.startswith(("E:", "W:"))]
    assert result.returncode == 0 and errors == [], result.stdout + result.stderr


def test_vbios_unit_is_enabled_but_not_started_at_install(built: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-e", str(built / "gpupass-aurora-z.deb"), str(tmp_path)], check=True)
    postinst = (tmp_path / "postinst").read_text()
    assert "deb-systemd-helper enable 'gpupass-vbios.service'" in postinst
    assert "deb-systemd-invoke" not in postinst, "the unit must wait for the boot where vfio-pci holds the GPU"


SCRATCH = (".nox", ".hypothesis", ".pytest_cache", ".ruff_cache", "__pycache__", "*.egg-info")


def scratch_files(directory: str, names: list[str]) -> set[str]:
    """What a checkout holds but a commit does not: tools' caches, and the build/ output at the top."""
    ignored = set(shutil.ignore_patterns(*SCRATCH)(directory, names))
    return ignored | ({"build"} if Path(directory) == ROOT else set())


def test_same_commit_builds_identical_debs(tmp_path: Path) -> None:
    """Two checkouts at different paths, built under different umasks, give the same bytes;
    each runs stdeb (a cache of its own), and the second once more with the first's cache."""
    debs = []
    builds = (
        ("first-checkout", 0o022, "first-cache"),
        ("a/much/longer/second/checkout", 0o077, "second-cache"),
        ("a/much/longer/second/checkout", 0o077, "first-cache"),
    )
    for name, umask, cache in builds:
        clone = tmp_path / name  # the working tree as it is, with its git history
        if not clone.exists():
            shutil.copytree(ROOT, clone, symlinks=True, ignore=scratch_files)
        out = tmp_path / f"out-{len(debs)}"
        env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        subprocess.run(
            [sys.executable, "-m", "gpupass", "build-deb", "aurora-z", "--out", str(out)],
            cwd=clone,
            env={**env, "PYTHONPATH": str(clone / "pkg"), "XDG_CACHE_HOME": str(tmp_path / cache)},
            preexec_fn=lambda umask=umask: os.umask(umask),
            check=True,
            capture_output=True,
        )
        debs.append((out / "gpupass-aurora-z.deb").read_bytes())
    # One entry in the first cache: the third build took stdeb's output from it.
    assert [len(p.name) for p in (tmp_path / "first-cache" / "gpupass" / "debianize").iterdir()] == [64]
    assert debs[0] == debs[1] == debs[2]
