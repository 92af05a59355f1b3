"""The shipped domain, defined in a real libvirtd: libvirt keeps every passthrough element.

libvirt's RelaxNG schema says the XML is well-formed; only the daemon says whether it will
take it, and what it keeps: libvirt silently drops what it does not use (an unused qemu
namespace, a misplaced attribute), so every element is read back from
``virsh dumpxml --inactive``.
"""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from lxml import etree

from gpupass import model, paths
from gpupass.packaging import render

from .conftest import MODELS, ROOT
from .libvirt import Daemon

pytestmark = pytest.mark.tool

QEMU_NS = {"qemu": "http://libvirt.org/schemas/domain/qemu/1.0"}
PROPERTY = "{http://libvirt.org/schemas/domain/qemu/1.0}property"
DOMAIN = "usr/share/gpupass/domain.xml"
DOMAIN_RNG = "/usr/share/libvirt/schemas/domain.rng"
NO_KVM = "unsupported configuration: Emulator '/usr/bin/qemu-system-x86_64' does not support virt type 'kvm'"


def rendered_domain(model_file: Path) -> tuple[model.Model, bytes]:
    loaded = model.load(model_file, f"models/{model_file.name}")
    return loaded, render.render_all(loaded)[DOMAIN]


def has_kvm(libvirtd: Daemon) -> bool:
    return libvirtd.virsh("domcapabilities", "--virttype", "kvm", check=False).returncode == 0


def define(libvirtd: Daemon, xml: bytes, tmp_path: Path) -> tuple[str, str]:
    """``virsh define`` the XML from a file: (exit status as 'ok'/'refused', stderr)."""
    path = tmp_path / "domain.xml"
    path.write_bytes(xml)
    result = libvirtd.virsh("define", str(path), check=False)
    return ("ok" if result.returncode == 0 else "refused"), result.stderr


def refusal(tmp_path: Path, message: str) -> str:
    return f"error: Failed to define domain from {tmp_path / 'domain.xml'}\nerror: {message}\n"


def without_kvm(xml: bytes) -> bytes:
    return xml.replace(b'<domain type="kvm"', b'<domain type="qemu"', 1)


def attrs(element: ET.Element | None) -> dict[str, str]:
    assert element is not None
    return dict(element.attrib)


@pytest.mark.parametrize("model_file", MODELS, ids=lambda p: p.stem)
def test_libvirt_keeps_every_passthrough_element(libvirtd: Daemon, model_file: Path, tmp_path: Path) -> None:
    loaded, xml = rendered_domain(model_file)
    if not has_kvm(libvirtd):
        # Without /dev/kvm libvirt refuses a kvm domain outright; say so, then check the
        # rest with the one attribute this machine cannot honour changed.
        assert define(libvirtd, xml, tmp_path) == ("refused", refusal(tmp_path, NO_KVM))
        xml = without_kvm(xml)
    assert define(libvirtd, xml, tmp_path) == ("ok", "")
    try:
        dumped = ET.fromstring(libvirtd.virsh("dumpxml", "--inactive", loaded.vm.name).stdout)
    finally:
        libvirtd.virsh("undefine", "--nvram", loaded.vm.name)
    assert loaded.vm.name not in libvirtd.virsh("list", "--all", "--name").stdout.split()

    # Both functions, with their host addresses, on one guest bus/slot; multifunction on 0.
    hostdevs = dumped.findall("devices/hostdev")
    assert [attrs(h) for h in hostdevs] == [{"mode": "subsystem", "type": "pci", "managed": "yes"}] * len(
        loaded.gpu.functions
    )
    guest_slots = set()
    for number, (hostdev, function) in enumerate(zip(hostdevs, loaded.gpu.functions, strict=True)):
        domain, bus, slot, fn = function.pci_parts
        host = {"domain": f"0x{domain:04x}", "bus": f"0x{bus:02x}", "slot": f"0x{slot:02x}", "function": f"0x{fn:x}"}
        assert attrs(hostdev.find("source/address")) == host
        rom = hostdev.find("rom")
        if function.role == "gpu":
            assert attrs(rom) == {"bar": "on", "file": str(paths.VBIOS_ROM)}
        else:
            assert rom is None
        guest = attrs(hostdev.find("address"))
        assert guest.pop("type") == "pci"
        assert guest.pop("function") == f"0x{number:x}"
        assert guest.pop("multifunction", None) == ("on" if number == 0 else None)
        guest_slots.add(tuple(sorted(guest.items())))
    assert len(guest_slots) == 1, guest_slots
    # Their bus is gpupass's root port: at its fixed address (the GPU's guest ACPI node is
    # known there), hotplug off (QEMU adds no hotplug methods to the node), kept by libvirt.
    (bus,) = {dict(slot)["bus"] for slot in guest_slots}
    port = dumped.find(f"devices/controller[@type='pci'][@index='{int(bus, 16)}']")
    target = attrs(port.find("target"))
    assert (port.get("model"), target.pop("hotplug"), attrs(port.find("alias"))) == (
        "pcie-root-port",
        "off",
        {"name": "ua-gpupass-port"},
    )
    address = {"type": "pci", "domain": "0x0000", "bus": "0x00", "slot": "0x1c", "function": "0x0"}
    assert attrs(port.find("address")) == address

    # The laptop's subsystem ids, on each function that has one, through its hostdev's user alias.
    aliases = [attrs(h.find("alias"))["name"] for h in hostdevs]
    assert aliases == [f.alias for f in loaded.gpu.functions]
    overrides = {
        device.get("alias"): {p.get("name"): (p.get("type"), p.get("value")) for p in device.iter(PROPERTY)}
        for device in dumped.findall("qemu:override/qemu:device", QEMU_NS)
    }
    assert overrides == {
        alias: {
            "x-pci-sub-vendor-id": ("unsigned", str(int(function.subsystem_id[:4], 16))),
            "x-pci-sub-device-id": ("unsigned", str(int(function.subsystem_id[5:], 16))),
        }
        for alias, function in zip(aliases, loaded.gpu.functions, strict=True)
        if function.subsystem_id
    }

    # The QEMU arguments: the 64-bit MMIO window, the battery SSDT and (NVIDIA) the _ROM SSDT.
    args = [a.get("value") for a in dumped.findall("qemu:commandline/qemu:arg", QEMU_NS)]
    rom_table = ["-acpitable", f"file={paths.ROM_AML}"] if loaded.gpu_function.vendor == "10de" else []
    assert args == [
        "-fw_cfg",
        f"opt/ovmf/X-PciMmio64Mb,string={loaded.gpu.mmio64_mb}",
        "-acpitable",
        f"file={paths.INSTALLED_AML}",
        *rom_table,
    ]

    # The real laptop's SMBIOS strings, used for the guest.
    entries = {e.get("name"): e.text for e in dumped.findall("sysinfo[@type='smbios']/system/entry")}
    smbios = loaded.smbios
    assert entries == {
        "manufacturer": smbios.manufacturer,
        "product": smbios.product,
        "version": smbios.version,
        "family": smbios.family,
    }
    assert attrs(dumped.find("os/smbios")) == {"mode": "sysinfo"}

    # The hidden hypervisor, with the features Windows and the NVIDIA driver need.
    features = dumped.find("features")
    assert features is not None
    assert features.find("acpi") is not None and features.find("apic") is not None
    assert attrs(features.find("kvm/hidden")) == {"state": "on"}
    assert attrs(features.find("hyperv/vendor_id")) == {"state": "on", "value": loaded.vm.hyperv_vendor_id}
    assert attrs(features.find("hyperv/vapic")) == {"state": "on"}

    # OVMF without Secure Boot, read-only code, variables from the template.
    loader = dumped.find("os/loader")
    assert loader is not None and loader.text == loaded.vm.ovmf_code
    assert loader.get("readonly") == "yes" and loader.get("type") == "pflash"
    assert loader.get("secure", "no") == "no"
    assert dumped.find("os").get("firmware") is None
    assert dumped.find("os/nvram").get("template") == loaded.vm.ovmf_vars
    assert dumped.find("os/type").get("machine").startswith("pc-q35-")

    # vCPUs pinned to the performance CPUs, on the host's own CPU model.
    pins = [(p.get("vcpu"), p.get("cpuset")) for p in dumped.findall("cputune/vcpupin")]
    assert pins == [(str(v), str(c)) for v, c in enumerate(loaded.cpu.performance_cpus[: loaded.vm.vcpus])]
    assert dumped.find("cpu").get("mode") == "host-passthrough"


def broken(xml: bytes, old: bytes, new: bytes) -> bytes:
    assert xml.count(old) == 1, old
    return xml.replace(old, new)


# Schema-valid variants of the shipped domain that libvirt still refuses at define (as
# Debian 12's libvirt 9.0 words it), to show that a define which succeeds means something.
REFUSED = [
    pytest.param(
        lambda xml: broken(xml, b"<os>", b'<os firmware="efi">'),
        "loader attribute 'readonly' cannot be specified when firmware autoselection is enabled",
        id="firmware-autoselection-with-explicit-loader",
    ),
    pytest.param(
        # The audio function put on the GPU's guest function 0.
        lambda xml: broken(xml, b'function="0x1"/>\n    </hostdev>', b'function="0x0"/>\n    </hostdev>'),
        "XML error: Attempted double use of PCI Address 0000:01:00.0",
        id="duplicate-guest-pci-address",
    ),
]


@pytest.mark.parametrize("corrupt,message", REFUSED)
def test_libvirt_refuses_schema_valid_mistakes(libvirtd: Daemon, tmp_path: Path, corrupt, message: str) -> None:
    loaded, xml = rendered_domain(ROOT / "models" / "aurora-z.toml")
    variant = corrupt(xml if has_kvm(libvirtd) else without_kvm(xml))
    schema = etree.RelaxNG(etree.parse(DOMAIN_RNG))
    assert schema.validate(etree.fromstring(variant)), schema.error_log
    assert define(libvirtd, variant, tmp_path) == ("refused", refusal(tmp_path, message))
    assert loaded.vm.name not in libvirtd.virsh("list", "--all", "--name").stdout.split()


def test_qemu_gets_the_laptops_subsystem_ids(libvirtd: Daemon, tmp_path: Path) -> None:
    """libvirt turns the <qemu:override> into properties of the GPU's vfio-pci device, and
    this QEMU's vfio-pci has both (as uint32)."""
    loaded, xml = rendered_domain(ROOT / "models" / "hp-victus-16-navi23.toml")
    path = tmp_path / "domain.xml"
    # libvirt picks the passthrough driver (vfio) when the domain starts on a host that has it;
    # to only print the command line, name it.
    xml = xml.replace(b'managed="yes">', b'managed="yes">\n      <driver name="vfio"/>')
    path.write_bytes(xml if has_kvm(libvirtd) else without_kvm(xml))
    argv = libvirtd.virsh("domxml-to-native", "qemu-argv", str(path)).stdout
    devices = [json.loads(arg) for arg in re.findall(r"-device '(\{[^']*\})'", argv)]
    gpu = [d for d in devices if d.get("driver") == "vfio-pci" and d.get("id") == "ua-gpupass-0000-03-00-0"]
    assert len(gpu) == 1, argv
    assert (gpu[0]["x-pci-sub-vendor-id"], gpu[0]["x-pci-sub-device-id"]) == (0x103C, 0x8902)
    assert gpu[0]["host"] == "0000:03:00.0"
    help_text = subprocess.run(
        ["qemu-system-x86_64", "-device", "vfio-pci,help"], capture_output=True, text=True, check=True
    ).stdout
    assert "x-pci-sub-vendor-id=<uint32>" in help_text and "x-pci-sub-device-id=<uint32>" in help_text
