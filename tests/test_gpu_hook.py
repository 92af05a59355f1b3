"""gpupass gpu claim | release --for-domain, as the libvirt hook runs them with the domain's XML
on stdin: nothing in boot mode or for a domain without the model's dGPU; in on-demand mode the
same claim, whose refusal (exit 1, the reason on stderr) stops the domain from starting."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gpupass import cli

from .sysfs import process
from .test_gpu import ALICE, GPU
from .test_gpu_switch import KILL, nouveau

MODEL = str(Path(__file__).resolve().parents[1] / "models/aurora-z.toml")
DOMAIN = """<domain type="kvm"><name>win11-gpu</name><devices>{}</devices></domain>"""
# As libvirt writes a hostdev (domain_conf.c: virDomainHostdevDefFormatSubsys), managed or not.
HOSTDEV = (
    "<hostdev mode='subsystem' type='pci' managed='{}'><source>"
    "<address domain='0x0000' bus='0x{:02x}' slot='0x00' function='0x0'/></source></hostdev>"
)
WITH_DGPU = DOMAIN.format(HOSTDEV.format("no", 1))
WITH_DGPU_MANAGED = DOMAIN.format(HOSTDEV.format("yes", 1))
WITH_OTHER_DEVICE = DOMAIN.format(HOSTDEV.format("no", 5))
WITHOUT_HOSTDEV = DOMAIN.format("")


def tree(root: Path, mode: str | None) -> Path:
    nouveau(root)
    for address in (GPU, "0000:01:00.1"):
        (root / "sys/bus/pci/devices" / address / "driver_override").write_text("(null)\n")
    for driver in ("nouveau", "snd_hda_intel"):
        (root / "sys/bus/pci/drivers" / driver / "unbind").write_text("")
    (root / "sys/bus/pci/drivers_probe").write_text("")
    if mode:
        (root / "var/lib/gpupass").mkdir(parents=True)
        (root / "var/lib/gpupass/mode").write_text(f"{mode}\n")
    process(root, 3300, "firefox-esr", ALICE, {40: "/dev/dri/card1"})
    return root


def hook(root: Path, action: str, domain_xml: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(domain_xml))
    return cli.main(["gpu", action, "--for-domain", "--model", MODEL, "--root", str(root)])


def untouched(root: Path) -> bool:
    return (root / "sys/bus/pci/devices" / GPU / "driver_override").read_text() == "(null)\n"


@pytest.mark.parametrize(
    "mode,domain_xml",
    [(None, WITH_DGPU), ("boot", WITH_DGPU), ("on-demand", WITHOUT_HOSTDEV), ("on-demand", WITH_OTHER_DEVICE)],
    ids=["model's-boot-mode", "switched-to-boot", "no-hostdev", "another-device"],
)
@pytest.mark.parametrize("action", ["claim", "release"])
def test_the_hook_leaves_other_domains_and_boot_mode_alone(
    tmp_path: Path, mode, domain_xml: str, action: str, monkeypatch, capsys
) -> None:
    root = tree(tmp_path, mode)
    assert hook(root, action, domain_xml, monkeypatch) == 0
    assert capsys.readouterr() == ("", "")
    assert untouched(root)


@pytest.mark.parametrize("domain_xml", [WITH_DGPU, WITH_DGPU_MANAGED], ids=["managed-no", "managed-yes"])
def test_in_on_demand_mode_a_holder_stops_the_domain_with_the_reason(
    tmp_path: Path, domain_xml: str, monkeypatch, capsys
) -> None:
    root = tree(tmp_path, "on-demand")
    assert hook(root, "claim", domain_xml, monkeypatch) == 1
    assert capsys.readouterr().err.splitlines() == [
        "gpupass: claim refused, nothing was written:",
        f"gpupass: pid 3300 (firefox-esr, user alice) holds /dev/dri/card1 of 0000:01:00.0{KILL} 3300",
        "gpupass: hint: gpupass gpu holders lists what holds the dGPU",
    ]
    assert untouched(root)
    (root / "proc/3300/fd/40").unlink()
    assert hook(root, "claim", domain_xml, monkeypatch) == 0
    assert capsys.readouterr().out == "claim: 0000:01:00.0, 0000:01:00.1 handed to vfio-pci\n"
    assert (root / "sys/bus/pci/devices" / GPU / "driver_override").read_text() == "vfio-pci"


def test_a_broken_domain_xml_is_named(tmp_path: Path, monkeypatch, capsys) -> None:
    root = tree(tmp_path, "on-demand")
    assert hook(root, "claim", "<domain>", monkeypatch) == 1
    assert capsys.readouterr().err.startswith("gpupass: the domain XML on stdin: no element found: line 1")
    assert untouched(root)
