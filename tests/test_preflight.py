"""Pre-flight checks against sysfs/procfs trees built in tmp_path.

The trees copy the real layout: devices live under sys/devices/pci0000:00/..., and
sys/bus/pci/devices, iommu_group and the groups' devices/ entries are relative symlinks to them.
Every check runs through ``check()``, which also asserts that nothing in the tree changed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from gpupass.laptop.preflight import PreflightError, cli, detect_container, run_checks
from gpupass.model import load

from .sysfs import AURORA_Z_PCI, build_sysfs, changed, without

REPO = Path(__file__).parents[1]
AURORA_Z = load(REPO / "models/aurora-z.toml")
AMD_MODEL = dataclasses.replace(AURORA_Z, cpu=dataclasses.replace(AURORA_Z.cpu, vendor="amd"))


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under root with its kind, mode and content (or link target)."""
    out: dict[str, tuple[object, ...]] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top, name)
            rel = str(path.relative_to(root))
            st = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", st.st_mode)
            else:
                out[rel] = ("file", st.st_mode, path.read_bytes())
    return out


def check(root: Path, *, model=AURORA_Z, in_container=False, env=None):
    before = snapshot(root)
    report = run_checks(model, root=root, in_container=in_container, env={} if env is None else env)
    assert snapshot(root) == before, "the checks changed the tree"
    return report


def refusal(report) -> list[str]:
    with pytest.raises(PreflightError) as e:
        report.raise_if_refused()
    return e.value.lines()


HINT = "hint: fix the problems above, or set GPUPASS_FORCE=1 to install anyway"
OK_LINES = [
    "0000:01:00.0 is 10de:25a2 (gpu)",
    "0000:01:00.1 is 10de:2291 (audio)",
    "0000:01:00.0 is not the boot VGA device (the host keeps its display)",
    "this CPU is GenuineIntel (intel), as the model expects",
    "the firmware exposes an IOMMU (ACPI DMAR table)",
    "IOMMU group 14 holds only 0000:01:00.0, 0000:01:00.1 and PCI bridge 0000:00:01.0",
]
BOOT_VGA = (
    "0000:01:00.0 is the boot VGA device: passing it through would leave the host without a display"
    " (set the firmware's graphics mode to hybrid so that the iGPU drives the panel)"
)
NO_GPU = (
    "0000:01:00.0: no PCI device here (the model expects the gpu function 10de:25a2;"
    " is the dGPU switched off in the firmware setup?)"
)
NO_AUDIO = (
    "0000:01:00.1: no PCI device here (the model expects the audio function 10de:2291;"
    " is the dGPU switched off in the firmware setup?)"
)
NO_DMAR = (
    "no ACPI DMAR table (/sys/firmware/acpi/tables/DMAR): the firmware exposes no IOMMU;"
    " enable VT-d (IOMMU) in the firmware setup"
)
NO_IVRS = (
    "no ACPI IVRS table (/sys/firmware/acpi/tables/IVRS): the firmware exposes no IOMMU;"
    " enable AMD-Vi (IOMMU) in the firmware setup"
)
AMD_CPU = "this CPU is AuthenticAMD (amd), the model is for intel"
NVME_IN_GROUP = (
    "IOMMU group 14 also holds 0000:02:00.0 144d:a80a (NVMe controller, class 0x010802), which is not passed"
    " through: the whole group would go to the VM"
)
NO_GROUPS_NOTE = (
    "no IOMMU groups yet: the IOMMU is not on (normal before the first reboot with the package's"
    " kernel command line); the IOMMU group check is skipped, run `gpupass check` after the reboot"
)
CONTAINER = (
    "running in a container: these checks see the build host, not the laptop, so problems are only"
    " warnings and the image build goes on (run `gpupass check` on the laptop)"
)
CHROOT = (
    "no PCI devices under /sys/bus/pci/devices (a chroot?): the PCI device and IOMMU group checks are skipped"
    " and problems are only warnings (run `gpupass check` on the laptop)"
)


def test_reference_laptop_passes(tmp_path):
    report = check(build_sysfs(tmp_path))
    assert (report.problems, report.warnings, report.notes) == ([], [], [])
    assert report.passed == OK_LINES
    report.raise_if_refused()


def test_amd_laptop_with_amd_model_passes(tmp_path):
    report = check(build_sysfs(tmp_path, cpu="AuthenticAMD", tables=("IVRS", "DSDT")), model=AMD_MODEL)
    assert report.problems == []
    assert "this CPU is AuthenticAMD (amd), as the model expects" in report.passed
    assert "the firmware exposes an IOMMU (ACPI IVRS table)" in report.passed


def test_gpu_that_is_boot_vga_is_refused(tmp_path):
    devices = changed(changed(AURORA_Z_PCI, "0000:01:00.0", boot_vga="1"), "0000:00:02.0", boot_vga="0")
    report = check(build_sysfs(tmp_path, devices))
    assert report.problems == [BOOT_VGA]
    assert refusal(report) == [BOOT_VGA, HINT]


@pytest.mark.parametrize(("address", "message"), [("0000:01:00.0", NO_GPU), ("0000:01:00.1", NO_AUDIO)])
def test_missing_function_is_refused(tmp_path, address, message):
    report = check(build_sysfs(tmp_path, without(AURORA_Z_PCI, address)))
    assert report.problems == [message]
    assert refusal(report) == [message, HINT]


def test_other_device_at_the_address_is_refused(tmp_path):
    report = check(build_sysfs(tmp_path, changed(AURORA_Z_PCI, "0000:01:00.0", id="10de:25a0")))
    message = "0000:01:00.0 is 10de:25a0, the model expects 10de:25a2 (its gpu function): is this a MECHREVO Aurora Z?"
    assert report.problems == [message]


def test_amd_cpu_with_intel_model_is_refused(tmp_path):
    report = check(build_sysfs(tmp_path, cpu="AuthenticAMD", tables=("IVRS", "DSDT")))
    assert report.problems == [AMD_CPU]
    assert refusal(report) == [AMD_CPU, HINT]


@pytest.mark.parametrize(
    ("cpu", "message"),
    [
        ("HygonGenuine", "this CPU is HygonGenuine, neither Intel nor AMD (the model is for intel)"),
        (None, "cannot tell the CPU vendor: no vendor_id in /proc/cpuinfo (the model is for intel)"),
    ],
)
def test_unknown_cpu_is_refused(tmp_path, cpu, message):
    report = check(build_sysfs(tmp_path, cpu=cpu))
    assert report.problems == [message]


@pytest.mark.parametrize(
    ("model", "cpu", "message"), [(AURORA_Z, "GenuineIntel", NO_DMAR), (AMD_MODEL, "AuthenticAMD", NO_IVRS)]
)
def test_firmware_without_iommu_is_refused(tmp_path, model, cpu, message):
    report = check(build_sysfs(tmp_path, cpu=cpu, tables=("DSDT", "FACP")), model=model)
    assert report.problems == [message]
    assert refusal(report) == [message, HINT]


def test_dirty_iommu_group_is_refused(tmp_path):
    report = check(build_sysfs(tmp_path, changed(AURORA_Z_PCI, "0000:02:00.0", group=14)))
    assert report.problems == [NVME_IN_GROUP]
    assert refusal(report) == [NVME_IN_GROUP, HINT]
    assert not any(line.startswith("IOMMU group") for line in report.passed)


def test_each_intruder_in_the_group_is_named(tmp_path):
    devices = changed(changed(AURORA_Z_PCI, "0000:02:00.0", group=14), "0000:00:00.0", group=14)
    report = check(build_sysfs(tmp_path, devices))
    assert report.problems == [
        "IOMMU group 14 also holds 0000:00:00.0 8086:4621 (host bridge, class 0x060000), which is not passed"
        " through: the whole group would go to the VM",
        NVME_IN_GROUP,
    ]


def test_function_without_iommu_group_is_refused(tmp_path):
    root = build_sysfs(tmp_path)
    (root / "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.1/iommu_group").unlink()
    report = check(root)
    assert report.problems == [
        "0000:01:00.1 is in no IOMMU group although the IOMMU is on (no /sys/bus/pci/devices/0000:01:00.1/iommu_group)"
    ]


def test_no_iommu_groups_yet_passes_with_a_note(tmp_path):
    report = check(build_sysfs(tmp_path, iommu_groups=False))
    assert (report.problems, report.warnings) == ([], [])
    assert report.notes == [NO_GROUPS_NOTE]
    assert report.passed == OK_LINES[:-1]


@pytest.mark.parametrize("in_container", [True, lambda: True], ids=["bool", "callable"])
def test_container_warns_and_passes(tmp_path, in_container):
    # A CI build host: an Intel box without the dGPU and with the IOMMU off.
    build_host = {a: AURORA_Z_PCI[a] for a in ("0000:00:00.0", "0000:00:02.0")}
    report = check(build_sysfs(tmp_path, build_host, tables=("DSDT",)), in_container=in_container)
    assert report.problems == []
    assert report.warnings == [CONTAINER, NO_GPU, NO_AUDIO, NO_DMAR]
    report.raise_if_refused()


def test_chroot_without_pci_devices_warns_and_passes(tmp_path):
    report = check(build_sysfs(tmp_path, pci_bus=False, tables=("DSDT",)))
    assert report.problems == []
    assert report.warnings == [CHROOT, NO_DMAR]
    assert report.passed == ["this CPU is GenuineIntel (intel), as the model expects"]


def test_gpupass_force_turns_refusals_into_warnings(tmp_path):
    devices = changed(AURORA_Z_PCI, "0000:02:00.0", group=14)
    report = check(build_sysfs(tmp_path, devices, tables=("DSDT",)), env={"GPUPASS_FORCE": "1"})
    assert report.problems == []
    assert report.warnings == ["GPUPASS_FORCE=1: installing despite 2 problems:", NO_DMAR, NVME_IN_GROUP]
    report.raise_if_refused()


@pytest.mark.parametrize("value", ["0", "yes", ""])
def test_gpupass_force_other_than_1_still_refuses(tmp_path, value):
    report = check(build_sysfs(tmp_path, tables=("DSDT",)), env={"GPUPASS_FORCE": value})
    assert report.problems == [NO_DMAR]


def test_gpupass_force_with_nothing_to_force_notes_it(tmp_path):
    report = check(build_sysfs(tmp_path), env={"GPUPASS_FORCE": "1"})
    assert (report.problems, report.warnings) == ([], [])
    assert report.notes == ["GPUPASS_FORCE=1 is set, but nothing needed forcing"]


def several_problems(root: Path) -> Path:
    devices = changed(changed(AURORA_Z_PCI, "0000:01:00.0", boot_vga="1"), "0000:02:00.0", group=14)
    return build_sysfs(root, without(devices, "0000:01:00.1"), cpu="AuthenticAMD", tables=("DSDT",))


SEVERAL = [NO_AUDIO, BOOT_VGA, AMD_CPU, NO_IVRS, NVME_IN_GROUP]


def test_several_problems_are_all_listed(tmp_path):
    report = check(several_problems(tmp_path))
    assert report.problems == SEVERAL
    assert refusal(report) == [*SEVERAL, HINT]
    assert report.passed == ["0000:01:00.0 is 10de:25a2 (gpu)"]


def run_cli(root: Path, capsys, **kwargs) -> tuple[int, list[str]]:
    before = snapshot(root)
    code = cli(AURORA_Z, root, **{"in_container": False, "env": {}, **kwargs})
    assert snapshot(root) == before, "the checks changed the tree"
    captured = capsys.readouterr()
    assert captured.err == ""
    return code, captured.out.splitlines()


def test_cli_passes_with_ok_lines(tmp_path, capsys):
    code, out = run_cli(build_sysfs(tmp_path), capsys)
    assert code == 0
    assert out == [
        "gpupass check: MECHREVO Aurora Z (gpupass-aurora-z)",
        *(f"ok: {line}" for line in OK_LINES),
        "pre-flight checks passed",
    ]


def test_cli_prints_notes_and_warnings(tmp_path, capsys):
    code, out = run_cli(build_sysfs(tmp_path, iommu_groups=False, tables=("DSDT",)), capsys, in_container=True)
    assert code == 0
    assert out == [
        "gpupass check: MECHREVO Aurora Z (gpupass-aurora-z)",
        *(f"ok: {line}" for line in OK_LINES[:4]),
        f"note: {NO_GROUPS_NOTE}",
        f"warning: {CONTAINER}",
        f"warning: {NO_DMAR}",
        "pre-flight checks passed with 2 warnings",
    ]


def test_cli_refuses_with_every_problem_and_the_hint(tmp_path, capsys):
    code, out = run_cli(several_problems(tmp_path), capsys)
    assert code == 1
    assert out == [
        "gpupass check: MECHREVO Aurora Z (gpupass-aurora-z)",
        "ok: 0000:01:00.0 is 10de:25a2 (gpu)",
        *(f"error: {line}" for line in SEVERAL),
        HINT,
        "refused: 5 problems",
    ]


@pytest.mark.parametrize(
    ("command", "markers", "expected"),
    [
        (("true",), (), True),
        (("false",), (".dockerenv",), False),  # systemd-detect-virt's answer wins when it runs
        (("gpupass-no-such-command",), (), False),
        (("gpupass-no-such-command",), (".dockerenv",), True),
        (("gpupass-no-such-command",), ("run/.containerenv",), True),
    ],
)
def test_detect_container(tmp_path, command, markers, expected):
    for marker in markers:
        (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / marker).touch()
    assert detect_container(tmp_path, command) is expected
