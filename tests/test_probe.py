"""gpupass probe, on fixture trees built from published layouts (tests/layouts.py).

Every model probe makes is pinned exactly (tests/golden/probe/<layout>.toml and .json,
rewritten with --regenerate), every refusal by the exact lines the user sees; the reference
laptop's probe output renders what models/aurora-z.toml renders; each published-layout
laptop's models/<id>.toml is that probe output, marked not confirmed; and the pre-flight
checks pass on the machine each model was probed from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings

from gpupass import cli, model
from gpupass.laptop import machine, preflight
from gpupass.laptop.machine import Bar
from gpupass.laptop.onboarding import probe
from gpupass.packaging import debsrc, render

from . import make_models
from .conftest import ROOT
from .layouts import AURORA_Z, AURORA_Z_DGPU_BOOT, LAYOUTS, LENOVO_LEGION_5_15ARH05
from .strategies import machines
from .test_preflight import snapshot

GOLDEN = ROOT / "tests" / "golden" / "probe"
PROBED = [name for name in LAYOUTS if name not in ("desktop-only-gpu", "group-with-a-nic")]
EXAMPLES = int(os.environ.get("GPUPASS_HYPOTHESIS_EXAMPLES", "300"))
HINT = "hint: nothing was written; gpupass cannot set this machine up for dGPU passthrough as it is"


def probe_tree(root: Path) -> probe.Probed:
    before = snapshot(root)
    result = probe.probe(machine.read(root))
    assert snapshot(root) == before, "probe changed the tree"
    return result


def refusal(root: Path) -> list[str]:
    with pytest.raises(probe.ProbeRefused) as e:
        probe.probe(machine.read(root))
    return e.value.lines()


@pytest.mark.parametrize("name", PROBED)
def test_probed_model_is_exactly_as_recorded(name: str, tmp_path: Path, regenerate: bool) -> None:
    result = probe_tree(LAYOUTS[name].build(tmp_path))
    outputs = {f"{name}.toml": result.toml(), f"{name}.json": result.json()}
    if regenerate:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for file, text in outputs.items():
            (GOLDEN / file).write_text(text, encoding="utf-8")
    for file, text in outputs.items():
        assert text == (GOLDEN / file).read_text(encoding="utf-8"), f"{file} changed (run with --regenerate)"
    # The model validates as it is, and the JSON says the same as the TOML.
    parsed = model.parse(result.toml(), result.model_id, "probe")
    document = json.loads(result.json())
    assert document["model"] == tomllib.loads(result.toml())
    assert document["model_id"] == result.model_id
    assert document["warnings"] == list(result.warnings)
    sources = {"name", "cpu.vendor", "gpu.functions[0].subsystem_id", "battery.full_capacity_mwh"}
    assert set(document["sources"]) >= sources
    # gpupass check on the same machine passes.
    report = preflight.run_checks(parsed, tmp_path, in_container=False, env={})
    assert (report.problems, report.warnings) == ([], []), report


def test_reference_laptop_probes_to_models_aurora_z(tmp_path: Path) -> None:
    """The aurora-z fixture's probe output renders the same artifacts as models/aurora-z.toml."""
    result = probe_tree(AURORA_Z.build(tmp_path))
    probed = model.parse(result.toml(), "aurora-z", "probe")
    shipped = model.load(ROOT / "models/aurora-z.toml")
    assert probed == shipped
    assert render.render_all(probed) == render.render_all(shipped)
    assert result.model_id == "mechrevo-aurora-z"
    assert result.warnings == (
        "0000:01:00.0 has subsystem id 0000:0000: the guest will see the GPU maker's own ids; if the driver"
        " stays in Code 43, find the laptop's subsystem id (lspci -nnv, Windows' device manager) and set"
        " subsystem_id",
        # The write-up does not give the panel's resolution, so the fixture has no eDP connector.
        "no internal panel mode in /sys/class/drm/*-eDP-*/modes (no eDP connector): vm.panel is 1920x1080, what"
        " gpupass vm --looking-glass sizes its shared memory for; set yours",
    )


@pytest.mark.parametrize("model_id", make_models.PUBLISHED_MODELS)
def test_published_layout_models_are_what_probe_makes_of_them(model_id: str) -> None:
    path = ROOT / "models" / f"{model_id}.toml"
    text = path.read_text(encoding="utf-8")
    assert text == make_models.model_text(model_id), f"{path} differs (python3 -m tests.make_models)"
    layout = LAYOUTS[make_models.PUBLISHED_MODELS[model_id]]
    assert f"# Layout published at {layout.source}\n" in text
    assert "NOT YET CONFIRMED ON THE HARDWARE" in text.splitlines()[0]
    loaded = model.load(path)
    assert loaded.confirmed is False
    probed = make_models.probed(layout.name)
    assert dataclasses.replace(model.parse(probed.toml(), model_id, "probe"), confirmed=False) == loaded


def test_published_models_cover_both_cpu_and_gpu_vendors() -> None:
    loaded = [model.load(ROOT / "models" / f"{m}.toml") for m in make_models.PUBLISHED_MODELS]
    assert {m.cpu.vendor for m in loaded} == {"intel", "amd"}
    assert {m.gpu_function.vendor for m in loaded} == {"10de", "1002"}


def test_amd_dgpu_behind_a_switch_next_to_an_amd_igpu(tmp_path: Path) -> None:
    """Both GPUs are vendor 1002: boot_vga tells them apart; the switch's ports stay on the host."""
    result = probe_tree(LAYOUTS["hp-victus-16-navi23"].build(tmp_path))
    functions = result.data()["gpu"]["functions"]
    assert [(f["address"], f["id"], f["role"], f["subsystem_id"]) for f in functions] == [
        ("0000:03:00.0", "1002:73ff", "gpu", "103c:8902"),
        ("0000:03:00.1", "1002:ab28", "audio", "103c:8902"),
    ]
    assert result.data()["host"]["softdep"] == ["amdgpu", "snd_hda_intel"]
    assert result.data()["gpu"]["mmio64_mb"] == 65536
    assert result.sources()["gpu.functions[0].address"] == (
        "the display-class device that is not the boot display (no boot_vga file (not VGA-class)),"
        " behind 0000:00:01.1 > 0000:01:00.0 > 0000:02:00.0"
    )


def test_turing_gpu_passes_all_four_functions_with_their_drivers(tmp_path: Path) -> None:
    result = probe_tree(LAYOUTS["turing-four-functions"].build(tmp_path))
    data = result.data()
    assert [(f["address"], f["role"]) for f in data["gpu"]["functions"]] == [
        ("0000:01:00.0", "gpu"),
        ("0000:01:00.1", "audio"),
        ("0000:01:00.2", "usb"),
        ("0000:01:00.3", "serial-bus"),
    ]
    assert data["host"]["softdep"] == [
        "i2c_nvidia_gpu",
        "nouveau",
        "nvidia",
        "nvidia_drm",
        "nvidia_modeset",
        "snd_hda_intel",
        "ucsi_ccg",
        "xhci_pci",
    ]
    assert result.warnings == (
        "no DMI sys_vendor: the guest's SMBIOS manufacturer is 'Unknown'; set the real one",
        "no DMI product_name: the guest's SMBIOS product is 'Unknown'; set the real one",
        "DMI chassis type 3 (desktop) is not a laptop's: gpupass is made for laptops whose dGPU has no panel;"
        " check every value by hand",
        "0000:01:00.0 has subsystem id 0000:0000: the guest will see the GPU maker's own ids; if the driver"
        " stays in Code 43, find the laptop's subsystem id (lspci -nnv, Windows' device manager) and set"
        " subsystem_id",
        "no battery found (/sys/class/power_supply/BAT*): the guest's fake battery takes gpupass's default"
        " values; a laptop has a battery, check that this is one",
        "no internal panel mode in /sys/class/drm/*-eDP-*/modes (no eDP connector): vm.panel is 1920x1080, what"
        " gpupass vm --looking-glass sizes its shared memory for; set yours",
    )


def test_3d_controller_without_audio(tmp_path: Path) -> None:
    data = probe_tree(LAYOUTS["lenovo-ideapad-5-15itl05"].build(tmp_path)).data()
    assert [(f["address"], f["id"], f["role"]) for f in data["gpu"]["functions"]] == [
        ("0000:01:00.0", "10de:1f97", "gpu")
    ]
    assert data["host"]["softdep"] == ["nouveau", "nvidia", "nvidia_drm", "nvidia_modeset"]
    # Battery in charge units: µAh × design µV.
    assert data["battery"] == {"design_capacity_mwh": 57001, "full_capacity_mwh": 53760, "design_voltage_mv": 15360}


def test_pinning_intel_hybrid_takes_the_p_cores_others_leave_a_core_to_the_host(tmp_path: Path) -> None:
    hybrid = probe_tree(LAYOUTS["hp-victus-16-rtx4060"].build(tmp_path / "a")).data()
    assert hybrid["cpu"] == {"vendor": "intel", "performance_cpus": list(range(12)), "threads_per_core": 2}
    assert hybrid["vm"]["vcpus"] == 12
    ryzen = probe_tree(LENOVO_LEGION_5_15ARH05.build(tmp_path / "b")).data()
    assert ryzen["cpu"] == {
        "vendor": "amd",
        "performance_cpus": [1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15],
        "threads_per_core": 2,
    }
    assert ryzen["vm"]["vcpus"] == 14


# Refusals: the exact lines, and nothing written ------------------------------------------

ONLY_GPU = (
    "0000:02:00.0 10de:1c03 (VGA controller) is the only GPU and the boot display: passing it through would"
    " leave the host without a display (gpupass passes through a second, discrete GPU that drives no panel)"
)
DGPU_BOOT = (
    "0000:01:00.0 10de:25a2 (VGA controller) is the boot display: passing it through would leave the host"
    " without a display (set the firmware's graphics mode to hybrid so that the iGPU 0000:00:02.0 drives the"
    " panel, then probe again)"
)
NIC_GROUP = [
    "IOMMU group 12 also holds 0000:03:00.0 10ec:5287 (device, class 0xff0000), which is not passed through:"
    " the whole group would go to the VM",
    "IOMMU group 12 also holds 0000:03:00.1 10ec:8168 (Ethernet controller, class 0x020000), which is not"
    " passed through: the whole group would go to the VM",
]
NO_DMAR = (
    "no ACPI DMAR table (/sys/firmware/acpi/tables/DMAR): the firmware exposes no IOMMU; enable VT-d (IOMMU)"
    " in the firmware setup (the package then turns it on with the kernel argument intel_iommu=on)"
)
NO_IVRS = (
    "no ACPI IVRS table (/sys/firmware/acpi/tables/IVRS): the firmware exposes no IOMMU; enable AMD-Vi (IOMMU)"
    " in the firmware setup (the package then turns it on with the kernel argument amd_iommu=on)"
)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        pytest.param(lambda root: LAYOUTS["desktop-only-gpu"].build(root), [ONLY_GPU], id="desktop-only-gpu"),
        pytest.param(lambda root: LAYOUTS["group-with-a-nic"].build(root), NIC_GROUP, id="group-with-a-nic"),
        pytest.param(lambda root: AURORA_Z.build(root, devices=AURORA_Z_DGPU_BOOT), [DGPU_BOOT], id="dgpu-boot"),
        pytest.param(lambda root: AURORA_Z.build(root, tables=("DSDT", "FACP")), [NO_DMAR], id="no-dmar"),
        pytest.param(lambda root: LENOVO_LEGION_5_15ARH05.build(root, tables=("DSDT",)), [NO_IVRS], id="no-ivrs"),
    ],
)
def test_refusals_name_every_reason(tmp_path: Path, build, expected: list[str]) -> None:
    root = build(tmp_path)
    before = snapshot(root)
    assert refusal(root) == [*expected, HINT]
    assert snapshot(root) == before


def test_no_iommu_groups_yet_still_probes_with_a_warning(tmp_path: Path) -> None:
    result = probe_tree(AURORA_Z.build(tmp_path, iommu_groups=False))
    assert (
        "no IOMMU groups yet (the IOMMU is off until the package's kernel arguments): the group check waits for"
        " `gpupass check` after the first reboot"
    ) in result.warnings
    assert model.parse(result.toml(), "aurora-z", "probe") == model.load(ROOT / "models/aurora-z.toml")


# The command ------------------------------------------------------------------------------


def test_cli_writes_the_model_and_warnings(tmp_path: Path, capsys) -> None:
    root = AURORA_Z.build(tmp_path / "root")
    out = tmp_path / "aurora.toml"
    assert cli.main(["probe", "--root", str(root), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[0] == f"wrote {out} (proposed model id: mechrevo-aurora-z)"
    assert captured.err.splitlines()[1].startswith("gpupass: warning: 0000:01:00.0 has subsystem id 0000:0000")
    assert model.load(out).name == "MECHREVO Aurora Z"
    assert cli.main(["probe", "--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["cpu"]["vendor"] == "intel"


def test_cli_refusal_writes_nothing(tmp_path: Path, capsys) -> None:
    root = LAYOUTS["desktop-only-gpu"].build(tmp_path / "root")
    out = tmp_path / "model.toml"
    assert cli.main(["probe", "--root", str(root), "-o", str(out)]) == 1
    assert not out.exists()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [f"gpupass: {ONLY_GPU}", f"gpupass: {HINT}"]


# The snapshot ------------------------------------------------------------------------------


def test_machine_snapshot_reads_what_doctor_and_probe_need(tmp_path: Path) -> None:
    root = LAYOUTS["hp-victus-16-navi23"].build(tmp_path)
    before = snapshot(root)
    m = machine.read(root)
    assert snapshot(root) == before
    gpu = m.device("0000:03:00.0")
    assert (gpu.id, gpu.subsystem_id, gpu.class_code, gpu.boot_vga) == ("1002:73ff", "103c:8902", "0x038000", None)
    assert gpu.upstream == ("0000:02:00.0", "0000:01:00.0", "0000:00:01.1")
    assert gpu.bars == (
        Bar(0, 8 << 30, True, True, tuple(256 << 20 << n for n in range(6))),
        Bar(2, 256 << 20, True, True),
        Bar(5, 1 << 20, False, False),
    )
    assert gpu.iommu_group == "14" and m.iommu_groups["14"] == ("0000:03:00.0", "0000:03:00.1")
    igpu = m.device("0000:07:00.0")
    assert (igpu.boot_vga, igpu.driver) == (True, "amdgpu")
    assert (m.cpu_vendor_id, m.cpu_model, "svm" in m.cpu_flags) == (
        "AuthenticAMD",
        "AMD Ryzen 5 5600H with Radeon Graphics",
        True,
    )
    assert [c.core for c in m.cpus[:2]] == [(0, 6), (1, 7)] and m.performance_cores is None
    assert m.dmi == machine.Dmi(
        "HP", "Victus by HP Laptop 16-e0xxx", "Type1ProductConfigId", "103C_5335KV HP Victus", 10
    )
    assert m.batteries == (machine.Battery("BAT0", 70070, 70070, 15400, None, None, None),)
    assert ("IVRS" in m.acpi_tables, m.iommu_units) == (True, ("ivhd0",))
    assert m.cmdline == "BOOT_IMAGE=/vmlinuz root=/dev/mapper/root ro quiet splash"


def test_machine_snapshot_reads_runtime_power(tmp_path: Path) -> None:
    root = AURORA_Z.build(tmp_path)
    gpu_dir = root / "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0"
    (gpu_dir / "power").mkdir()
    (gpu_dir / "power/runtime_status").write_text("suspended\n")
    (gpu_dir / "power/control").write_text("auto\n")
    (gpu_dir / "power_state").write_text("D3cold\n")
    gpu = machine.read(root).device("0000:01:00.0")
    assert (gpu.runtime_status, gpu.power_control, gpu.power_state) == ("suspended", "auto", "D3cold")


# Property: any machine with a valid dGPU -------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None)
@given(machines())
def test_probe_of_any_valid_machine_validates_and_passes_check(snapshot_: machine.Machine) -> None:
    """For every generated machine with a dGPU that can be passed through, probe's model
    validates, and the pre-flight checks pass on that same machine."""
    result = probe.probe(snapshot_)
    probed = model.parse(result.toml(), result.model_id, "probe")
    assert json.loads(result.json())["model"] == tomllib.loads(result.toml())
    report = preflight.assess(probed, snapshot_, container=False, env={})
    assert (report.problems, report.warnings) == ([], [])
    # Every function of the dGPU's slot, the GPU first; the MMIO window holds its 64-bit BARs.
    gpu_slot = probed.gpu_function.address.rsplit(".", 1)[0]
    assert [f.address for f in probed.gpu.functions] == sorted(
        d.address for d in snapshot_.pci if d.address.startswith(gpu_slot + ".")
    )
    largest = sum(b.largest for f in probed.gpu.functions for b in snapshot_.device(f.address).bars if b.is_64bit)
    assert probed.gpu.mmio64_mb << 20 >= min(largest, 1 << 40)


def test_machine_strategy_reaches_the_interesting_cases() -> None:
    """Not stuck in a corner: hybrid Intel and AMD CPUs, a switch above the dGPU, four functions,
    IOMMU groups with bridges and none yet, every display class, no battery and no DMI strings."""
    from hypothesis import find

    from .test_properties import FIND

    def reaches(condition) -> None:
        find(machines(), condition, settings=FIND)

    reaches(lambda m: m.performance_cores is not None)
    reaches(lambda m: m.cpu_vendor_id == "AuthenticAMD" and any(len(c.core) == 2 for c in m.cpus))
    reaches(lambda m: any(len(d.upstream) == 3 for d in m.pci))
    reaches(lambda m: sum(d.address.startswith(m.pci[-1].slot) for d in m.pci) >= 4)
    reaches(lambda m: any(len(members) > 2 for members in m.iommu_groups.values()))
    reaches(lambda m: not m.iommu_groups)
    for cls in ("0x030200", "0x038000"):
        reaches(lambda m, cls=cls: any(d.class_code == cls for d in m.pci))
    reaches(lambda m: not m.batteries and m.dmi.vendor is None)


@pytest.mark.tool
def test_probed_amd_model_builds_a_deb_that_turns_on_amd_iommu(tmp_path: Path) -> None:
    """gpupass probe -o on an AMD laptop, then build-deb: the GRUB drop-in says amd_iommu=on."""
    root = LENOVO_LEGION_5_15ARH05.build(tmp_path / "root")
    model_file = tmp_path / "probed-legion.toml"
    assert cli.main(["probe", "--root", str(root), "-o", str(model_file)]) == 0
    probed = model.load(model_file)
    assert probed.cpu.vendor == "amd"
    deb = debsrc.build_deb(probed, model_file, tmp_path / "build")
    tree = tmp_path / "deb"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    grub = (tree / "etc/default/grub.d/gpupass-probed-legion.cfg").read_text(encoding="utf-8")
    assert "GRUB_CMDLINE_LINUX_DEFAULT:+$GRUB_CMDLINE_LINUX_DEFAULT }amd_iommu=on iommu=pt" in grub
    assert "vfio-pci.ids=10de:1f95,10de:10fa" in grub
    assert "intel_iommu" not in grub


def test_check_keeps_a_published_model_off_another_laptop(tmp_path: Path) -> None:
    """An unconfirmed model installs only where its layout matches: on the aurora-z it is refused."""
    navi = model.load(ROOT / "models/hp-victus-16-navi23.toml")
    report = preflight.run_checks(navi, AURORA_Z.build(tmp_path / "aurora"), in_container=False, env={})
    assert report.problems == [
        "0000:03:00.0: no PCI device here (the model expects the gpu function 1002:73ff; is the dGPU switched off"
        " in the firmware setup?)",
        "0000:03:00.1: no PCI device here (the model expects the audio function 1002:ab28; is the dGPU switched"
        " off in the firmware setup?)",
        "this CPU is GenuineIntel (intel), the model is for amd",
    ]
    own_root = LAYOUTS["hp-victus-16-navi23"].build(tmp_path / "navi")
    own = preflight.run_checks(navi, own_root, in_container=False, env={})
    assert (own.problems, own.warnings) == ([], [])


def test_check_reads_no_resizable_bar_sizes(tmp_path: Path) -> None:
    """Reading resourceN_resize wakes a runtime-suspended device: gpupass check leaves them alone."""
    root = AURORA_Z.build(tmp_path)
    with_rebar = machine.read(root).device("0000:01:00.0").bars
    without = machine.read(root, rebar=False).device("0000:01:00.0").bars
    assert with_rebar[1].resizable_sizes and without[1].resizable_sizes == ()
    assert [b.size for b in with_rebar] == [b.size for b in without]


def test_unlistable_iommu_group_is_refused(tmp_path: Path) -> None:
    root = AURORA_Z.build(tmp_path)
    devices = root / "sys/kernel/iommu_groups/14/devices"
    for link in devices.iterdir():
        link.unlink()
    devices.rmdir()
    devices.write_text("")  # listing it fails, as an unreadable directory would
    assert refusal(root) == [
        "IOMMU group 14 of the dGPU cannot be listed (/sys/kernel/iommu_groups/14/devices)",
        HINT,
    ]


def test_unreadable_function_id_is_refused(tmp_path: Path) -> None:
    root = AURORA_Z.build(tmp_path)
    (root / "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.1/device").write_text("garbage\n")
    assert refusal(root) == [
        "0000:01:00.1: cannot read its vendor/device id from /sys/bus/pci/devices/0000:01:00.1",
        HINT,
    ]
