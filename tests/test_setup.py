"""gpupass setup on fixture trees of published layouts (tests/layouts.py): what it plans, and
what it refuses before anything is changed. Installing for real is tests/test_setup_chroot.py."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpupass import cli, model
from gpupass.laptop import machine
from gpupass.laptop.onboarding import setup

from .layouts import AURORA_Z, AURORA_Z_DGPU_BOOT, LAYOUTS
from .test_probe import DGPU_BOOT, NIC_GROUP

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
# A published layout (tests/layouts.py names its post) that no file in models/ is for.
NOT_IN_MODELS = LAYOUTS["dell-xps-15-9570"]  # a published laptop no file in models/ is for


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """setup's /var/lib/gpupass/local, in a scratch directory: a test sees whether it was written."""
    local = tmp_path / "var-lib-gpupass-local"
    monkeypatch.setattr(setup, "LOCAL_DIR", local)
    return local


def not_installed(package: str) -> None:
    return None


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        pytest.param(lambda root: AURORA_Z.build(root, devices=AURORA_Z_DGPU_BOOT), [DGPU_BOOT], id="dgpu-boot"),
        pytest.param(lambda root: LAYOUTS["group-with-a-nic"].build(root), NIC_GROUP, id="group-with-a-nic"),
    ],
)
def test_refuses_where_probe_refuses_before_changing_anything(
    tmp_path: Path, state: Path, capsys, build, expected: list[str]
) -> None:
    root = build(tmp_path / "root")
    assert cli.main(["setup", "--root", str(root), "--yes"]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        *(f"gpupass: {line}" for line in expected),
        "gpupass: hint: nothing was written; gpupass cannot set this machine up for dGPU passthrough as it is",
    ]
    assert out == ""  # no summary, no apt
    assert not state.exists()


def test_published_laptop_plans_the_published_package(tmp_path: Path) -> None:
    snapshot = machine.read(AURORA_Z.build(tmp_path))
    chosen = setup.plan(snapshot, NOW, not_installed)
    assert (chosen.published, chosen.package, chosen.up_to_date) == (True, "gpupass-aurora-z", False)
    assert chosen.laptop.confirmed  # models/aurora-z.toml itself, not the probed copy
    installed = setup.plan(snapshot, NOW, lambda p: "0.1.0+3-1")
    assert installed.up_to_date


def test_other_laptop_plans_a_local_build_of_the_probed_model(tmp_path: Path) -> None:
    chosen = setup.plan(machine.read(NOT_IN_MODELS.build(tmp_path)), NOW, not_installed)
    assert (chosen.published, chosen.local_number, chosen.up_to_date) == (False, 1, False)
    text = chosen.probed.toml()
    assert "confirmed = false  # probed on this laptop by gpupass setup on 2026-12-04 12:00 UTC" in text
    assert not model.parse(text, chosen.laptop.id, "probed").confirmed  # and it validates


def test_run_twice_changes_nothing_and_a_changed_laptop_is_an_upgrade(tmp_path: Path, state: Path) -> None:
    snapshot = machine.read(NOT_IN_MODELS.build(tmp_path / "root"))
    first = setup.plan(snapshot, NOW, not_installed)
    state.mkdir()
    (state / f"{first.laptop.id}.toml").write_text(first.probed.toml())  # what build_local keeps
    installed = f"0.1.0+local{first.local_number}-1"
    again = setup.plan(snapshot, NOW, lambda p: installed)
    assert again.up_to_date and again.local_number == 1
    # The laptop changed since (another GPU id after a BIOS update): the same package, one version up.
    text = (state / f"{first.laptop.id}.toml").read_text().replace('id = "10de:1c8c"', 'id = "10de:1c8d"')
    (state / f"{first.laptop.id}.toml").write_text(text)
    changed = setup.plan(snapshot, NOW, lambda p: installed)
    assert (changed.up_to_date, changed.package, changed.local_number) == (False, first.package, 2)
    assert tomllib.loads(changed.probed.toml()) == changed.probed.data()


def test_dry_run_prints_the_summary_and_changes_nothing(tmp_path: Path, state: Path, capsys) -> None:
    root = NOT_IN_MODELS.build(tmp_path / "root")
    assert cli.main(["setup", "--root", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "laptop: Dell Inc. XPS 15 9570 (model dell-inc-xps-15-9570, package gpupass-dell-inc-xps-15-9570)"
    )
    assert "dGPU gpu: 0000:01:00.0 [10de:1c8c], IOMMU group 1" in out
    ids = "10de:1c8c"
    assert f"kernel arguments (GRUB drop-in): intel_iommu=on iommu=pt vfio-pci.ids={ids}" in out
    assert "gpupass vm define will make the VM 'win11-gpu' (16384 MiB, 10 vCPUs)" in out
    assert out[-1] == "--dry-run: nothing was changed"
    assert not state.exists()


def test_no_answer_changes_nothing(tmp_path: Path, state: Path, capsys) -> None:
    root = AURORA_Z.build(tmp_path / "root")
    assert setup.run(root, yes=False, dry_run=False, ask=lambda prompt: "n") == 1
    assert capsys.readouterr().out.splitlines()[-1] == "nothing was changed"
    assert not state.exists()


def test_a_local_build_without_the_build_side_says_what_to_install(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A model package's own command (the tool package replaced) has no build side."""
    monkeypatch.setattr(setup, "TOOL_SOURCE", tmp_path / "absent")
    monkeypatch.setattr(setup.paths, "SOURCE_ROOT", tmp_path / "usr-lib-python3")
    monkeypatch.setattr(setup, "installed_version", not_installed)
    root = NOT_IN_MODELS.build(tmp_path / "root")
    assert cli.main(["setup", "--root", str(root), "--yes"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "gpupass: building gpupass-dell-inc-xps-15-9570 needs gpupass's build side, which is not installed",
        "gpupass: hint: sudo apt install gpupass (it replaces the model package), then sudo gpupass setup again",
    ]
    assert not state.exists()
