"""Model validation: every bad file is refused with the exact lines the user sees."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from gpupass import guest, model
from gpupass.errors import GpupassError, ModelError
from gpupass.packaging import debsrc
from gpupass.packaging.artifacts import modelfile

from .conftest import ROOT

SRC = "models/x.toml"

# (what to replace in models/aurora-z.toml, replacement, the lines printed for it)
BAD = [
    pytest.param(
        'id = "10de:2291"',
        'id = "10de:229"',
        ["gpu.functions[1].id: '10de:229' is not a vendor:device id (expected 1234:abcd)"],
        id="short-id",
    ),
    pytest.param(
        'address = "0000:01:00.0"',
        'address = "01:00.0"',
        [
            "gpu.functions[0].address: '01:00.0' is not a PCI address"
            " (expected domain:bus:slot.function in lower-case hex, slot 00-1f, function 0-7, e.g. 0000:01:00.0)"
        ],
        id="short-address",
    ),
    pytest.param(
        'vendor = "intel"',
        'vendor = "arm"',
        ["cpu.vendor: 'arm' is not allowed (expected one of intel, amd)"],
        id="cpu-vendor",
    ),
    pytest.param(
        "mmio64_mb = 65536",
        "mmio64_mb = 65000",
        ["gpu.mmio64_mb: 65000 is not a power of two (expected a power of two from 2048 to 1048576 MiB)"],
        id="mmio-not-power-of-two",
    ),
    pytest.param(
        "mmio64_mb = 65536",
        'mmio64_mb = "64G"',
        ["gpu.mmio64_mb: '64G' is not an integer (expected a power of two from 2048 to 1048576 MiB)"],
        id="mmio-string",
    ),
    pytest.param(
        "memory_mib = 16384",
        "memory_mib = 512",
        ["vm.memory_mib: 512 is out of range (expected an integer from 1024 to 1048576 MiB)"],
        id="memory-low",
    ),
    pytest.param(
        "vcpus = 8",
        "vcpus = 10",
        ["vm.vcpus: 10 vCPUs but only 8 performance CPUs to pin them to (expected at most 8)"],
        id="too-many-vcpus",
    ),
    pytest.param(
        "vcpus = 8",
        "vcpus = 7",
        ["vm.vcpus: 7 is not a multiple of cpu.threads_per_core=2 (expected whole cores)"],
        id="odd-vcpus",
    ),
    pytest.param(
        "OVMF_CODE_4M.fd",
        "OVMF_CODE_4M.secboot.fd",
        [
            "vm.ovmf_code: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd' is a Secure Boot build"
            " (expected e.g. /usr/share/OVMF/OVMF_CODE_4M.fd)"
        ],
        id="secure-boot-loader",
    ),
    pytest.param(
        "OVMF_CODE_4M.fd",
        "OVMF_CODE_4M.ms.fd",
        [
            "vm.ovmf_code: '/usr/share/OVMF/OVMF_CODE_4M.ms.fd' is a Secure Boot build"
            " (expected e.g. /usr/share/OVMF/OVMF_CODE_4M.fd)"
        ],
        id="ms-keys-loader",
    ),
    pytest.param(
        "OVMF_VARS_4M.fd",
        "OVMF_VARS_4M.ms.fd",
        [
            "vm.ovmf_vars: '/usr/share/OVMF/OVMF_VARS_4M.ms.fd' is a Secure Boot build"
            " (expected e.g. /usr/share/OVMF/OVMF_VARS_4M.fd)"
        ],
        id="ms-keys-varstore",
    ),
    pytest.param(
        'address = "0000:01:00.0"',
        'address = "0000:01:20.0"',
        [
            "gpu.functions[0].address: '0000:01:20.0' is not a PCI address"
            " (expected domain:bus:slot.function in lower-case hex, slot 00-1f, function 0-7, e.g. 0000:01:00.0)"
        ],
        id="slot-out-of-range",
    ),
    pytest.param(
        "full_capacity_mwh = 39950",
        "full_capacity_mwh = 50000",
        [
            "battery.full_capacity_mwh: 50000 exceeds battery.design_capacity_mwh=47000"
            " (expected at most the design capacity)"
        ],
        id="battery-over-design",
    ),
    pytest.param(
        'model = "GPUPASS BAT0"',
        'model = "BAT\\"0"',
        ["battery.model: 'BAT\"0' is not an ACPI string (expected 1 to 16 letters, digits, blanks and ._-)"],
        id="asl-quote",
    ),
    pytest.param(
        'oem_id = "GPUPAS"',
        'oem_id = "GPUPASS"',
        ["acpi.oem_id: 'GPUPASS' is not an ACPI OEM id (expected 1 to 6 of A-Z 0-9 _)"],
        id="oem-id-long",
    ),
    pytest.param(
        'role = "audio"',
        'role = "gpu"',
        ["gpu.functions[1].role: a second 'gpu' function (expected exactly one, listed first)"],
        id="two-gpus",
    ),
    pytest.param(
        'address = "0000:01:00.1"',
        'address = "0000:01:00.0"',
        ["gpu.functions[1].address: '0000:01:00.0' is listed twice (expected each function once)"],
        id="duplicate-address",
    ),
    pytest.param(
        "performance_cpus = [0, 1, 2, 3, 4, 5, 6, 7]",
        "performance_cpus = [0, 1, 1, 3, 4, 5, 6, 7]",
        ["cpu.performance_cpus[2]: 1 is listed twice (expected unique items)"],
        id="duplicate-cpu",
    ),
    pytest.param(
        "threads_per_core = 2",
        "threads_per_core = 2\nsmt = true",
        ["cpu.smt: unknown field (expected one of: vendor, performance_cpus, threads_per_core)"],
        id="unknown-field",
    ),
    pytest.param(
        'manufacturer = "MECHREVO"',
        'manufacturer = "MECH\\tREVO"',
        ["smbios.manufacturer: 'MECH\\tREVO' has a control character (expected printable text of 1 to 64 characters)"],
        id="control-char",
    ),
    pytest.param(
        "blacklist = []",
        'blacklist = ["Nouveau"]',
        ["host.blacklist[0]: 'Nouveau' is not a kernel module name (expected e.g. nouveau)"],
        id="module-name",
    ),
    pytest.param(
        "confirmed = true",
        'confirmed = "yes"',
        ["confirmed: 'yes' is not a boolean (expected true or false)"],
        id="confirmed-not-boolean",
    ),
    pytest.param(
        'role = "audio"',
        'role = "audio"\nsubsystem_id = "103C:8902"',
        [
            "gpu.functions[1].subsystem_id: '103C:8902' is not a subsystem vendor:device id"
            ' (expected 1234:abcd, or "" when unknown)'
        ],
        id="subsystem-id-upper-case",
    ),
    pytest.param(
        "[smbios]",
        "[smbios_typo]",
        [
            "smbios: missing (expected a table)",
            "smbios_typo: unknown field (expected one of: name, confirmed, mode, cpu, gpu, host, vm, smbios, battery,"
            " acpi, guest)",
        ],
        id="table-typo",
    ),
]


@pytest.mark.parametrize("old,new,expected", BAD)
def test_bad_model_lists_every_problem(aurora_text: str, old: str, new: str, expected: list[str]) -> None:
    assert old in aurora_text
    with pytest.raises(ModelError) as e:
        model.parse(aurora_text.replace(old, new, 1), "x", SRC)
    assert sorted(e.value.problems) == sorted(f"{SRC}: {line}" for line in expected)


def test_all_problems_at_once(aurora_text: str) -> None:
    text = aurora_text.replace('vendor = "intel"', 'vendor = "arm"').replace('id = "10de:2291"', 'id = "nope"')
    with pytest.raises(ModelError) as e:
        model.parse(text, "x", SRC)
    assert e.value.problems == [
        f"{SRC}: cpu.vendor: 'arm' is not allowed (expected one of intel, amd)",
        f"{SRC}: gpu.functions[1].id: 'nope' is not a vendor:device id (expected 1234:abcd)",
    ]


def test_not_toml() -> None:
    with pytest.raises(ModelError, match=r"^models/x.toml: not valid TOML: Expected '=' after a key"):
        model.parse("this is not toml", "x", SRC)


def test_bad_model_id() -> None:
    with pytest.raises(ModelError) as e:
        model.parse("", "Aurora_Z", "models/Aurora_Z.toml")
    assert e.value.problems == [
        "models/Aurora_Z.toml: 'Aurora_Z' is not a model id"
        " (expected a file name of lower-case letters, digits and -, e.g. aurora-z.toml)"
    ]


def test_defaults_fill_in(aurora_text: str) -> None:
    # Drop the optional tables: defaults take their place.
    text = aurora_text.split("[host]")[0] + "[smbios]" + aurora_text.split("[smbios]")[1].split("[acpi]")[0]
    m = model.parse(text, "x", SRC)
    assert m.host.softdep[0] == "nouveau" and m.host.blacklist == ()
    assert m.vm.ovmf_code == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    assert (m.acpi.oem_id, m.acpi.oem_table_id, m.acpi.oem_revision) == ("GPUPAS", "BATTERY", 1)


def test_model_is_frozen(aurora: model.Model) -> None:
    with pytest.raises(AttributeError):
        aurora.vm.vcpus = 2  # type: ignore[misc]


def test_resolved_model_round_trips(aurora: model.Model) -> None:
    """The model.toml the package ships parses back to the same model."""
    assert model.parse(modelfile.to_toml(aurora), aurora.id, "model.toml") == aurora


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT / "pkg"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "gpupass", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_cli_prints_problems_without_traceback(tmp_path: Path, aurora_text: str) -> None:
    bad = tmp_path / "models" / "bad.toml"
    bad.parent.mkdir()
    bad.write_text(aurora_text.replace('id = "10de:2291"', 'id = "10de:25a"'))
    out = tmp_path / "out"
    result = run_cli("build-deb", str(bad), "--out", str(out))
    assert result.returncode == 1
    assert result.stderr == (
        f"gpupass: {bad}: gpu.functions[1].id: '10de:25a' is not a vendor:device id (expected 1234:abcd)\n"
    )
    assert result.stdout == ""
    assert not out.exists(), "nothing may be written for a bad model"


def test_cli_unknown_model_lists_known_ones() -> None:
    result = run_cli("validate", "aurora-y")
    assert result.returncode == 1
    assert result.stderr == (
        "gpupass: unknown model 'aurora-y' (known models: aurora-z, hp-victus-16-navi23, hp-victus-16-rtx4060,"
        " lenovo-ideapad-5-15itl05, lenovo-legion-5-15arh05)\n"
    )


def test_cli_validate_ok() -> None:
    result = run_cli("validate", "aurora-z")
    assert (result.returncode, result.stdout) == (
        0,
        "models/aurora-z.toml: ok (MECHREVO Aurora Z, package gpupass-aurora-z)\n",
    )


def test_subsystem_id_is_optional_and_empty_means_unknown(aurora_text: str) -> None:
    assert model.parse(aurora_text, "x", SRC).gpu_function.subsystem_id == ""
    text = aurora_text.replace('role = "gpu"', 'role = "gpu"\nsubsystem_id = "1d05:1192"', 1)
    assert model.parse(text, "x", SRC).gpu_function.subsystem_id == "1d05:1192"


def test_unconfirmed_model_says_so_in_the_package_description(aurora: model.Model) -> None:
    confirmed = debsrc.description(aurora)
    assert "not yet confirmed" not in confirmed
    assert "pass its NVIDIA GPU (10de:25a2, 10de:2291)" in " ".join(confirmed.split())
    unconfirmed = " ".join(debsrc.description(dataclasses.replace(aurora, confirmed=False)).split())
    assert (
        "This model was written from a hardware layout published online and is not yet confirmed on the hardware;"
        " the package's pre-flight checks refuse to install it on a laptop that does not match."
    ) in unconfirmed
    navi = model.load(ROOT / "models/hp-victus-16-navi23.toml")
    assert "pass its AMD GPU (1002:73ff, 1002:ab28)" in " ".join(debsrc.description(navi).split())


def test_an_unknown_guest_layout_has_no_acpi_path() -> None:
    """Where QEMU's name for the GPU's node was never read from a booted guest, gpupass refuses."""
    with pytest.raises(GpupassError) as e:
        guest.acpi_path(guest.Layout(port_slot=0x02, port_function=0, function=0))
    assert e.value.lines() == [
        "the guest ACPI path of the GPU is not known for root port 00:02.0, device function 0",
        "hint: gpupass knows it for: root port 00:1c.0, device function 0",
    ]
    assert guest.gpu_acpi_path() == r"\_SB.PCI0.SE0.S00"


# guest.nvpcf (experimental) ------------------------------------------------------------


def test_nvpcf_is_off_by_default_and_takes_its_values(aurora: model.Model, aurora_text: str) -> None:
    assert not aurora.guest.nvpcf and not aurora.nvpcf
    on = aurora_text + (
        "\n[guest]\nnvpcf = true\nnvpcf_tpp_offset_w = 80\nnvpcf_max_tgp_offset_w = 35\nnvpcf_min_tgp_offset_w = -5\n"
    )
    m = model.parse(on, "x", SRC)
    assert m.nvpcf
    g = m.guest
    assert (g.nvpcf_ctgp_offset_w, g.nvpcf_tpp_offset_w, g.nvpcf_max_tgp_offset_w, g.nvpcf_min_tgp_offset_w) == (
        0,
        80,
        35,
        -5,
    )
    assert not g.nvpcf_on_battery


def test_nvpcf_is_refused_for_a_gpu_that_is_not_nvidia() -> None:
    text = (ROOT / "models" / "hp-victus-16-navi23.toml").read_text(encoding="utf-8") + "\n[guest]\nnvpcf = true\n"
    with pytest.raises(ModelError) as e:
        model.parse(text, "x", SRC)
    assert e.value.problems == [
        f"{SRC}: guest.nvpcf: true for a 1002 GPU (expected false: NVPCF is NVIDIA's, vendor 10de)"
    ]


@pytest.mark.parametrize(
    "settings,expected",
    [
        (
            "nvpcf_max_tgp_offset_w = 10\nnvpcf_min_tgp_offset_w = 20\n",
            "guest.nvpcf_min_tgp_offset_w: 20 exceeds guest.nvpcf_max_tgp_offset_w=10 (expected at most the maximum)",
        ),
        (
            "nvpcf_tpp_offset_w = 256\n",
            "guest.nvpcf_tpp_offset_w: 256 is out of range (expected an integer from -255 to 255 W)",
        ),
        ("nvpcf = 1\n", "guest.nvpcf: 1 is not a boolean (expected true or false)"),
    ],
    ids=["min-over-max", "tpp-out-of-range", "not-a-boolean"],
)
def test_bad_nvpcf_values_are_refused(aurora_text: str, settings: str, expected: str) -> None:
    with pytest.raises(ModelError) as e:
        model.parse(aurora_text + "\n[guest]\n" + settings, "x", SRC)
    assert e.value.problems == [f"{SRC}: {expected}"]
