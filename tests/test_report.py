"""gpupass report on fixture trees: the set-up aurora-z laptop of test_doctor, salted with what
identifies its owner (tests/sysfs.py Identity) where a careless report would pick it up. libvirt's
answers and the initramfs listing are handed in as data, as doctor's tests do."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpupass import cli, model
from gpupass.laptop import files, machine
from gpupass.laptop.doctor import facts as doctor_facts
from gpupass.laptop.onboarding import report, software
from gpupass.laptop.power import status
from gpupass.laptop.rom.store import origin_record

from .conftest import ROOT
from .sysfs import Identity, build_identity
from .test_doctor import AURORA, INITRAMFS, KERNEL, laptop, libvirt
from .test_doctor import run as doctor
from .test_vbios import GPU_ROM

IDENTITY = Identity()
# Where a real laptop puts them and a careless report would copy them from: the vBIOS imported
# from the user's home, libvirt reached over ssh by user and IP address, the NVIDIA driver's
# build line (NVIDIA's builder's user@host), the root file system's UUID on the kernel command line.
ORIGIN = f"gpupass vbios import {IDENTITY.home}/Downloads/aurora-z.rom"
SSH_URI = f"qemu+ssh://{IDENTITY.user}@{IDENTITY.ip}/system"
NVRM = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build"
    "  (dvs-builder@U16-I3-B03-4-3)  Thu Feb 22 01:25:25 UTC 2024\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
)
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
# dpkg's status file as Debian 12 has it (fields trimmed).
DPKG_STATUS = """Package: qemu-system-x86
Status: install ok installed
Priority: optional
Architecture: amd64
Source: qemu
Version: 1:7.2+dfsg-7+deb12u7
Description: QEMU full system emulation binaries (x86)

Package: ovmf
Status: install ok installed
Architecture: all
Source: edk2
Version: 2022.11-6+deb12u1
Description: UEFI firmware for 64-bit x86 virtual machines
"""


def write(root: Path, path: str, data: str | bytes) -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_bytes(data.encode() if isinstance(data, str) else data)


def set_up(tmp_path: Path, *, salted: bool) -> Path:
    """The set-up aurora-z laptop with its software and the hook's record of a VM shutdown."""
    cmdline = f"BOOT_IMAGE=/vmlinuz-{KERNEL} root=UUID=7f3c2a55-1b9e-4d0c-9a51-0c5e8f4b2d11 ro quiet"
    root = laptop(tmp_path, cmdline=f"{cmdline} intel_iommu=on iommu=pt vfio-pci.ids=10de:25a2,10de:2291")
    write(root, "etc/os-release", OS_RELEASE)
    write(root, "var/lib/dpkg/status", DPKG_STATUS)
    write(root, "var/lib/gpupass/vbios.rom.source", origin_record(GPU_ROM.rom, "the GPU's ROM BAR"))
    record = status.release_record(AURORA, machine.read(root), "win11-gpu", 1764806400)
    write(root, "var/lib/gpupass/power-release.json", json.dumps(record))
    if salted:
        build_identity(root, IDENTITY)
        write(root, "var/lib/gpupass/vbios.rom.source", origin_record(GPU_ROM.rom, ORIGIN))
        write(root, "proc/driver/nvidia/version", NVRM)
    return root


def make(root: Path, *, as_json: bool = False, uri: str = "qemu:///system") -> str:
    lv = doctor_facts.Libvirt(uri, survey=libvirt().survey)
    return report.make(AURORA, root, as_json=as_json, initramfs=INITRAMFS, libvirt=lv)


def section(text: str, heading: str, fence: str = "```") -> list[str]:
    """The lines of the fenced block under ``## heading``."""
    after = text.split(f"## {heading}\n\n{fence}\n", 1)[1]
    return after.split("\n```\n", 1)[0].splitlines()


@pytest.fixture(scope="module")
def salted(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    root = set_up(tmp_path_factory.mktemp("salted"), salted=True)
    return make(root, uri=SSH_URI), json.loads(make(root, as_json=True, uri=SSH_URI))


@pytest.mark.parametrize("salt", sorted(IDENTITY.salts().items()), ids=lambda s: s[0])
def test_nothing_identifying_is_in_the_report(salted: tuple[str, dict], salt: tuple[str, str]) -> None:
    _, value = salt
    text, data = salted
    assert value.lower() not in text.lower()
    assert value.lower() not in json.dumps(data).lower()


def test_the_report_ends_with_what_it_left_out_and_what_it_replaced(salted: tuple[str, dict]) -> None:
    text, data = salted
    last = text.splitlines()[-1]
    assert last == (
        "left out: serial numbers, UUIDs, MAC addresses, the host name, the machine id,"
        " user names (1 replaced by [user name]), home paths (2 replaced by [home]),"
        " IP addresses (1 replaced by [IP address]), user@host addresses, the vBIOS's bytes"
    )
    assert data["left_out"][-1] == "the vBIOS's bytes"
    assert [item.split(" (")[0] for item in data["left_out"]] == [
        "serial numbers", "UUIDs", "MAC addresses", "the host name", "the machine id", "user names",
        "home paths", "IP addresses", "user@host addresses", "the vBIOS's bytes",
    ]  # fmt: skip
    # Facts that carried an identifier are kept, with the placeholder where it stood.
    assert "- source: gpupass vbios import [home]/Downloads/aurora-z.rom" in text
    assert "ok: libvirt 9.0.0 answers at qemu+ssh://[user name]@[IP address]/system" in text
    assert data["vbios"]["source"] == "gpupass vbios import [home]/Downloads/aurora-z.rom"
    # The driver's version number, not its build line.
    assert "- host NVIDIA driver: 550.54.14" in text
    assert data["software"]["nvidia_driver"] == "550.54.14"


def test_the_report_holds_the_facts_a_maintainer_needs(tmp_path: Path) -> None:
    text = make(set_up(tmp_path, salted=False))
    assert text.splitlines()[:19] == [
        "# gpupass report: MECHREVO Aurora Z (gpupass-aurora-z)",
        "",
        "Written by gpupass 0.1.0 for a maintainer to confirm the model; nothing was sent anywhere.",
        "",
        "## The laptop",
        "",
        "- model: aurora-z (confirmed: yes)",
        "- DMI vendor / product / version / family: MECHREVO / Aurora Z / 1.0 / Aurora",
        "- CPU: 12th Gen Intel(R) Core(TM) i7-12450H",
        f"- kernel: {KERNEL}",
        "- distribution: Debian GNU/Linux 12 (bookworm)",
        "- libvirt: 9.0.0",
        "- QEMU: 1:7.2+dfsg-7+deb12u7 (qemu-system-x86)",
        "- OVMF: 2022.11-6+deb12u1 (ovmf)",
        "- host NVIDIA driver: none loaded",
        "",
        "## gpupass doctor",
        "",
        "```",
    ]
    assert section(text, "IOMMU groups of the dGPU") == [  # both functions in group 14 (passthrough-notes.md)
        "IOMMU group 14:",
        # The root port above it shares the group, as on many Intel laptops.
        "  0000:00:01.0 [8086:460d] class 0x060400, driver pcieport",
        "  0000:01:00.0 [10de:25a2] class 0x030000, driver vfio-pci",
        "  0000:01:00.1 [10de:2291] class 0x040300, driver vfio-pci",
    ]
    assert (
        "## The dGPU with the VM off (D3cold?)\n\nlast release of win11-gpu at 2025-12-04T00:00:00Z: the dGPU slept"
        " (D3cold): 0000:01:00.0 suspended (D3cold), 0000:01:00.1 suspended (D3cold), 0000:00:01.0 suspended (D3cold)\n"
    ) in text
    for box in ("[ ] working  [ ] Code 43", "`_ROM` table (guest.acpi_rom): [ ] not tried", "NVPCF / Dynamic Boost"):
        assert box in text


def test_the_doctor_section_is_what_gpupass_doctor_prints(tmp_path: Path) -> None:
    root = set_up(tmp_path, salted=False)
    _, lines = doctor(root)
    assert section(make(root), "gpupass doctor") == lines
    data = json.loads(make(root, as_json=True))
    assert data["doctor"]["lines"] == lines
    assert data["doctor"]["status"] == 0


def test_the_model_section_validates_as_gpupass_validate_loads_it(tmp_path: Path, salted: tuple[str, dict]) -> None:
    text, data = salted
    toml = "\n".join(section(text, "The model file (aurora-z.toml)", "```toml")) + "\n"
    assert model.parse(toml, "aurora-z", "report") == AURORA
    assert model.parse(data["model"]["toml"], "aurora-z", "report") == AURORA


def test_the_vbios_is_described_by_its_header_never_included(salted: tuple[str, dict]) -> None:
    text, data = salted
    sha = hashlib.sha256(GPU_ROM.rom).hexdigest()
    assert "\n".join(text.split("## vBIOS (header facts; the ROM itself is not included)\n\n")[1].splitlines()[:5]) == (
        "- source: gpupass vbios import [home]/Downloads/aurora-z.rom\n"
        "- vendor:device: 10de:25a2\n"
        # GPU_ROM's three images: code types 0x00, 0x70, 0x03, of 2, 1 and 2 units of 512 bytes.
        "- images: x86 PC-AT legacy (10de:25a2, 1024 bytes); NVIDIA (10de:25a2, 512 bytes);"
        " EFI (10de:25a2, 1024 bytes)\n"
        f"- size: {len(GPU_ROM.rom)} bytes\n"
        f"- sha256: {sha}"
    )
    assert {k: data["vbios"][k] for k in ("vendor", "device", "size", "sha256", "valid")} == {
        "vendor": "10de", "device": "25a2", "size": len(GPU_ROM.rom), "sha256": sha, "valid": True,
    }  # fmt: skip
    assert GPU_ROM.rom[:64].hex() not in text + json.dumps(data)


def test_report_out_writes_the_file_and_says_where_to_file_it(tmp_path: Path) -> None:
    root = set_up(tmp_path, salted=False)
    out, err = tmp_path / "report.md", io.StringIO()
    lv = libvirt()
    assert report.cli(AURORA, root, out_file=str(out), stderr=err, initramfs=INITRAMFS, libvirt=lv) == 0
    assert out.read_text(encoding="utf-8") == make(root)
    assert err.getvalue() == (
        f"wrote {out}: open an issue at the project's issue tracker and paste it (nothing was sent anywhere)\n"
    )


def test_without_out_the_report_goes_to_stdout_and_where_to_file_it_to_stderr(tmp_path: Path) -> None:
    root = set_up(tmp_path, salted=False)
    out, err = io.StringIO(), io.StringIO()
    assert report.cli(AURORA, root, stdout=out, stderr=err, initramfs=INITRAMFS, libvirt=libvirt()) == 0
    assert out.getvalue() == make(root)
    assert err.getvalue() == (
        "gpupass: to share it, open an issue at the project's issue tracker and paste it (nothing was sent anywhere)\n"
    )


def test_an_interrupted_write_keeps_the_old_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = set_up(tmp_path, salted=False)
    out = tmp_path / "reports" / "report.md"
    out.parent.mkdir()
    out.write_text("the last report\n")

    def write_half_then_fail(file, data: bytes) -> None:
        file.write(data[: len(data) // 2])
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(files, "write_all", write_half_then_fail)
    status_, err = cli_main(["report", "--model", "aurora-z", "--root", str(root), "--out", str(out)])
    assert (status_, err) == (1, f"gpupass: cannot write {out}: No space left on device\n")
    assert out.read_text() == "the last report\n"
    assert os.listdir(out.parent) == ["report.md"]


def cli_main(argv: list[str]) -> tuple[int, str]:
    """``gpupass ARGV`` (libvirt's test driver: no daemon asked); exit status and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status_ = cli.main([*argv, "--connect", "test:///default"])
    return status_, err.getvalue()


def test_the_command_writes_json_with_out(tmp_path: Path) -> None:
    root = set_up(tmp_path, salted=False)
    out = tmp_path / "report.json"
    assert cli_main(["report", "--model", "aurora-z", "--root", str(root), "--json", "--out", str(out)]) == (
        0,
        f"wrote {out}: open an issue at the project's issue tracker and paste it (nothing was sent anywhere)\n",
    )
    data = json.loads(out.read_text(encoding="utf-8"))
    assert (data["model"]["id"], data["left_out"][-1]) == ("aurora-z", "the vBIOS's bytes")


def test_no_installed_model_is_refused_with_its_reason() -> None:
    """As doctor: without --model, the installed package's model (none on the test machine)."""
    result = subprocess.run([sys.executable, "-m", "gpupass", "report"], capture_output=True, text=True, cwd=ROOT)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "gpupass: /usr/share/gpupass/models: 0 model files (expected the installed package's one)\n"
        "gpupass: hint: install a gpupass-<model> package, or pass --model\n",
    )


@pytest.mark.parametrize("problem", ["No such file or directory", "Not a directory"])
def test_an_unreadable_root_is_refused_with_its_reason(tmp_path: Path, problem: str) -> None:
    root = tmp_path / "laptop"
    if problem == "Not a directory":
        root.write_text("")
    assert cli_main(["report", "--model", "aurora-z", "--root", str(root)]) == (
        1,
        f"gpupass: {root}: cannot be read: {problem}\n"
        "gpupass: hint: --root names the laptop's file system (default: /)\n",
    )


def test_software_versions_are_read_as_single_values(tmp_path: Path) -> None:
    removed = "Status: deinstall ok config-files\nArchitecture: all"  # ovmf removed, its conffiles kept
    installed = "Status: install ok installed\nArchitecture: all"
    write(tmp_path, "var/lib/dpkg/status", DPKG_STATUS.replace(installed, removed))
    assert software.package_versions(tmp_path, ("qemu-system-x86", "ovmf")) == {
        "qemu-system-x86": "1:7.2+dfsg-7+deb12u7",
        "ovmf": None,
    }
    assert software.package_versions(tmp_path / "none", ("ovmf",)) is None
    assert software.distribution(tmp_path) is None
    write(tmp_path, "usr/lib/os-release", "PRETTY_NAME='Ubuntu 24.04.1 LTS'\n")
    assert software.distribution(tmp_path) == "Ubuntu 24.04.1 LTS"
    assert software.nvidia_driver(tmp_path) is None
    write(tmp_path, "proc/driver/nvidia/version", NVRM)
    assert software.nvidia_driver(tmp_path) == "550.54.14"
    write(tmp_path, "sys/module/nvidia/version", "535.183.01\n")
    assert software.nvidia_driver(tmp_path) == "535.183.01"


def test_identifier_shapes_are_replaced_wherever_they_come_from() -> None:
    from gpupass.laptop.onboarding import identifiers

    scrubber = identifiers.Scrubber(identifiers.Identifiers())
    kept = "0000:01:00.0 [10de:25a2] class 0x030000; 1:7.2+dfsg-7+deb12u7; 6.1.0-28-amd64; 550.54.14; 03:13:18"
    assert scrubber.scrub(kept) == kept
    assert scrubber.scrub("fe80::1c2b:3aff:fe4d:5e6f 10.0.0.7 AA-BB-CC-DD-EE-FF /home/bob/x") == (
        "[IP address] [IP address] [MAC address] [home]/x"
    )
    assert re.search(r"\[", scrubber.scrub(IDENTITY.product_uuid.upper()))


def test_the_machines_own_identifiers_are_found_and_replaced(tmp_path: Path) -> None:
    """The second line of defence reads each identifier where the machine keeps it."""
    from gpupass.laptop.onboarding import identifiers

    root = build_identity(laptop(tmp_path), IDENTITY)
    found = identifiers.read(root)
    assert found.values == {
        "serial number": (IDENTITY.board_serial, IDENTITY.product_serial, IDENTITY.battery_serial),
        "UUID": (IDENTITY.product_uuid,),
        "MAC address": (IDENTITY.mac,),  # lo's 00:00:00:00:00:00 is nobody's
        "host name": (IDENTITY.hostname,),
        "machine id": (IDENTITY.machine_id,),
        "home path": (IDENTITY.home,),
        "user name": (IDENTITY.user,),  # not root, nobody or libvirt-qemu (uid 64055)
    }
    scrubber = identifiers.Scrubber(found)
    text = scrubber.scrub(" ".join(f"<{v}>" for _, v in sorted(IDENTITY.salts().items())))
    assert text == (
        "<[serial number]> <[serial number]> <[home]> <[host name]> <[IP address]> <[MAC address]> <[machine id]>"
        " <[serial number]> <[UUID]> <[user name]>"
    )
    assert scrubber.replaced == {
        "serial number": 3, "UUID": 1, "MAC address": 1, "host name": 1, "machine id": 1, "home path": 1,
        "user name": 1, "IP address": 1,
    }  # fmt: skip
