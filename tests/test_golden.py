"""Golden files: every file rendered for each shipped model, byte for byte.

After an intended change, rewrite them with ``nox -s tests -- --regenerate`` and
review the diff; CI runs without the flag and fails on any drift.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpupass import model
from gpupass.packaging import render

from .conftest import MODELS, ROOT

GOLDEN = ROOT / "tests" / "golden"


def golden_tree(model_file: Path) -> Path:
    return GOLDEN / model_file.stem


@pytest.mark.parametrize("model_file", MODELS, ids=lambda p: p.stem)
def test_rendered_files_match_golden(model_file: Path, regenerate: bool) -> None:
    files = render.render_all(model.load(model_file))
    tree = golden_tree(model_file)
    if regenerate:
        for old in sorted(tree.rglob("*"), reverse=True) if tree.exists() else []:
            old.unlink() if old.is_file() else old.rmdir()
        render.write_tree(files, tree)
    expected = {str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    assert sorted(files) == sorted(expected), "the set of rendered files changed (run with --regenerate)"
    for path, data in files.items():
        assert data == expected[path], f"{path} differs from {tree / path} (run with --regenerate if intended)"


MODE_VARIANTS = ("modprobe.conf", "dracut.conf", "udev.rules")


def test_every_artifact_kind_has_a_golden_file() -> None:
    """A new artifact module must bring its golden file along."""
    paths = {str(p.relative_to(GOLDEN / "aurora-z")) for p in (GOLDEN / "aurora-z").rglob("*") if p.is_file()}
    assert {
        "etc/default/grub.d/gpupass-aurora-z.cfg",
        "usr/lib/modprobe.d/gpupass-aurora-z.conf",
        "usr/share/initramfs-tools/modules.d/gpupass-aurora-z.conf",
        "usr/share/gpupass/domain.xml",
        "usr/share/gpupass/ssdt-battery.aml",
        "usr/share/gpupass/ssdt-battery.asl",
        "usr/share/gpupass/models/aurora-z.toml",
        "usr/lib/systemd/system/gpupass-vbios.service",
        "usr/lib/dracut/dracut.conf.d/gpupass-aurora-z.conf",
        "etc/apparmor.d/abstractions/libvirt-qemu.d/gpupass-aurora-z",
        "etc/gpupass/power.conf",
        "usr/lib/udev/rules.d/90-gpupass-aurora-z.rules",
        "usr/lib/systemd/system/gpupass-power.service",
        "usr/lib/gpupass/libvirt-qemu-hook",
        "usr/lib/tmpfiles.d/gpupass-aurora-z.conf",
        "usr/lib/udev/rules.d/70-gpupass-aurora-z-desktop.rules",
        *(f"usr/share/gpupass/modes/{m}/{n}" for m in ("boot", "on-demand") for n in MODE_VARIANTS),
    } == paths


def test_scripts_are_written_executable(tmp_path: Path) -> None:
    """The libvirt hook runs only when executable (libvirt checks the mode bits); the rest stay 0644."""
    render.write_tree(render.render_all(model.load(MODELS[0])), tmp_path)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*") if p.is_file()}
    assert {p for p, mode in modes.items() if mode == 0o755} == {"usr/lib/gpupass/libvirt-qemu-hook"}
    assert {mode for mode in modes.values()} == {0o644, 0o755}
