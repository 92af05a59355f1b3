"""gpupass mode on the installed package's files (rendered into a fixture tree as dpkg would
unpack them): what each switch writes, that the way back leaves the package's tree exactly as
installed, how GRUB's drop-in reads the mode, and the refusals the user sees."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gpupass import cli, model
from gpupass.packaging import render

from .conftest import ROOT

AURORA = model.load(ROOT / "models" / "aurora-z.toml")
OVERRIDES = {
    "etc/modprobe.d/gpupass-aurora-z.conf": "modprobe.conf",
    "etc/dracut.conf.d/gpupass-aurora-z.conf": "dracut.conf",
    "etc/udev/rules.d/70-gpupass-aurora-z-desktop.rules": "udev.rules",
}
GRUB_DROP_IN = "etc/default/grub.d/gpupass-aurora-z.cfg"


def installed(root: Path, dracut: bool = True) -> Path:
    """The package's files under ``root``, and the /etc directories their consumers own."""
    render.write_tree(render.render_all(AURORA), root)
    for directory in ("etc/modprobe.d", "etc/udev/rules.d", *(("etc/dracut.conf.d",) if dracut else ())):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/gpupass").mkdir(parents=True)
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def mode(root: Path, *args: str, capsys) -> tuple[int, str, str]:
    status = cli.main(["mode", *args, "--root", str(root)])
    out, err = capsys.readouterr()
    return status, out, err


def grub_cmdline(root: Path) -> str:
    """GRUB's kernel command line as grub-mkconfig would source the drop-in, its absolute paths
    moved under ``root``."""
    script = (root / GRUB_DROP_IN).read_text()
    for directory in ("/usr/share/gpupass", "/var/lib/gpupass"):
        script = script.replace(directory, f"{root}{directory}")
    shell = f'GRUB_CMDLINE_LINUX_DEFAULT=quiet\n{script}\nprintf %s "$GRUB_CMDLINE_LINUX_DEFAULT"'
    return subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True).stdout


def test_on_demand_masks_the_boot_files_and_back_leaves_the_package_as_installed(tmp_path: Path, capsys) -> None:
    root = installed(tmp_path)
    pristine = tree(root)
    assert mode(root, capsys=capsys) == (0, "boot\n", "")
    assert grub_cmdline(root) == "quiet intel_iommu=on iommu=pt vfio-pci.ids=10de:25a2,10de:2291"

    status, out, _ = mode(root, "on-demand", capsys=capsys)
    assert status == 0
    assert out.splitlines()[-1] == "gpupass mode: on-demand (was boot); effective after a reboot"
    for path in (*OVERRIDES, "var/lib/gpupass/mode"):
        assert f"wrote /{path}" in out.splitlines()
    after = tree(root)
    assert set(after) - set(pristine) == {*OVERRIDES, "var/lib/gpupass/mode"}
    for path, name in OVERRIDES.items():
        assert after[path] == pristine[f"usr/share/gpupass/modes/on-demand/{name}"]
    modprobe = after["etc/modprobe.d/gpupass-aurora-z.conf"].decode()
    assert "vfio-pci" not in modprobe.replace("gpupass gpu claim hands it to vfio-pci", "")
    assert "options nvidia NVreg_DynamicPowerManagement=0x02" in modprobe
    assert "force_drivers" not in after["etc/dracut.conf.d/gpupass-aurora-z.conf"].decode()
    rule = 'SUBSYSTEM=="drm", KERNEL=="card[0-9]*", KERNELS=="0000:01:00.0", TAG+="mutter-device-ignore"'
    assert rule in after["etc/udev/rules.d/70-gpupass-aurora-z-desktop.rules"].decode().splitlines()
    assert after["var/lib/gpupass/mode"] == b"on-demand\n"
    assert grub_cmdline(root) == "quiet intel_iommu=on iommu=pt"
    assert mode(root, capsys=capsys) == (0, "on-demand\n", "")

    status, out, _ = mode(root, "boot", capsys=capsys)
    assert (status, out) == (0, "gpupass mode: boot (was on-demand); effective after a reboot\n")
    assert tree(root) == pristine
    assert grub_cmdline(root) == "quiet intel_iommu=on iommu=pt vfio-pci.ids=10de:25a2,10de:2291"


def test_no_dracut_override_where_dracut_is_not_installed(tmp_path: Path, capsys) -> None:
    root = installed(tmp_path, dracut=False)
    assert mode(root, "on-demand", capsys=capsys)[0] == 0
    assert not (root / "etc/dracut.conf.d").exists()
    assert (root / "etc/modprobe.d/gpupass-aurora-z.conf").is_file()


def test_switching_to_the_current_mode_again_changes_nothing(tmp_path: Path, capsys) -> None:
    root = installed(tmp_path)
    mode(root, "on-demand", capsys=capsys)
    before = tree(root)
    assert mode(root, "on-demand", capsys=capsys)[0] == 0
    assert tree(root) == before
    assert not [p for p in root.rglob(".*") if p.is_file()], "a temporary file was left"


def test_refuses_without_a_model_package(tmp_path: Path, capsys) -> None:
    status, out, err = mode(tmp_path, "on-demand", capsys=capsys)
    assert (status, out) == (1, "")
    assert err.splitlines()[0] == (
        "gpupass: /usr/share/gpupass/models: 0 model files (expected the installed package's one)"
    )
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_state_file_it_did_not_write(tmp_path: Path, capsys) -> None:
    root = installed(tmp_path)
    (root / "var/lib/gpupass/mode").write_text("sometimes\n")
    status, _, err = mode(root, capsys=capsys)
    assert status == 1
    expected = "gpupass: /var/lib/gpupass/mode: 'sometimes' is not a mode (expected boot or on-demand)"
    assert err.splitlines()[0] == expected


def test_refuses_to_switch_when_not_root(tmp_path: Path) -> None:
    """As a user, before reading or writing anything: the command on the real root. As root, the
    user is nobody, with a world-readable copy of the package and the system's python3 (the
    checkout and its venv may be in root's own 0700 home)."""
    argv = [sys.executable, "-m", "gpupass", "mode", "on-demand"]
    pkg = ROOT / "pkg"
    shared = None
    if os.geteuid() == 0:
        shared = Path(tempfile.mkdtemp())
        pkg = Path(shutil.copytree(ROOT / "pkg/gpupass", shared / "pkg/gpupass")).parent
        for directory, _dirs, files in os.walk(shared):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(Path(directory) / name, 0o644)
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", *argv[1:]]
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(pkg)}, cwd="/"
        )
    finally:
        if shared is not None:
            shutil.rmtree(shared)
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "gpupass: gpupass mode on-demand writes to /etc and /var/lib/gpupass: run it as root (sudo)\n"
    )


@pytest.mark.parametrize("mode_", model.MODES)
def test_kernel_args_of_each_mode(mode_: str) -> None:
    ids = ("vfio-pci.ids=10de:25a2,10de:2291",) if mode_ == "boot" else ()
    assert AURORA.kernel_args_for(mode_) == ("intel_iommu=on", "iommu=pt", *ids)
