"""gpupass vm: the passthrough pieces put into a user's domain and taken out again.

The unit tests run the pieces on XML in memory; the tool tests run ``gpupass vm`` against
domains as virt-install (Debian's virtinst) writes them for a Windows 11 guest, defined in
a real libvirtd, and read back what libvirt kept (``virsh dumpxml``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpupass import cli, model, paths
from gpupass.errors import GpupassError
from gpupass.laptop import machine
from gpupass.laptop.vm import attach as vm_attach
from gpupass.laptop.vm import define as vm_define
from gpupass.laptop.vm import pieces as vm_pieces
from gpupass.laptop.vm import xmledit
from gpupass.packaging import render

from .conftest import MODELS, ROOT
from .libvirt import Daemon

GOLDEN = ROOT / "tests" / "golden" / "vm"
DOMAIN = "usr/share/gpupass/domain.xml"
# A hybrid Intel laptop like the reference one: P-cores with SMT 0-7, E-cores 8-11.
LAPTOP_CPUS = tuple(range(12))
QEMU = {"qemu": xmledit.NAMESPACES["qemu"]}

# A Windows 11 domain as virt-install writes it, cut down to what the pieces look at.
SMALL_DOMAIN = """\
<domain type="kvm">
  <name>win11</name>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://microsoft.com/win/11"/>
    </libosinfo:libosinfo>
  </metadata>
  <vcpu placement="static">4</vcpu>
  <os firmware="efi">
    <type arch="x86_64" machine="q35">hvm</type>
    <firmware>
      <feature enabled="yes" name="secure-boot"/>
    </firmware>
    <boot dev="hd"/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <hyperv mode="custom">
      <vapic state="on"/>
    </hyperv>
  </features>
  <devices>
    <controller type="pci" index="0" model="pcie-root"/>
    <controller type="pci" index="1" model="pcie-root-port"/>
    <controller type="pci" index="2" model="pcie-root-port"/>
  </devices>
</domain>
"""


# --- in memory ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cpus,text", [((0,), "0"), ((0, 1), "0-1"), ((8, 9, 10, 11), "8-11"), ((0, 1, 2, 5, 7, 8), "0-2,5,7-8")]
)
def test_cpusets_are_written_as_libvirt_writes_them(cpus: tuple[int, ...], text: str) -> None:
    assert vm_pieces.cpuset(cpus) == text
    assert machine.cpu_list(text) == cpus  # the snapshot's reader of the kernel's lists


def test_emulator_threads_go_to_the_cpus_the_vcpus_leave(aurora: model.Model) -> None:
    assert vm_pieces.emulator_cpus(aurora, 8, LAPTOP_CPUS) == (8, 9, 10, 11)
    assert vm_pieces.emulator_cpus(aurora, 4, LAPTOP_CPUS) == (4, 5, 6, 7, 8, 9, 10, 11)
    assert vm_pieces.emulator_cpus(aurora, 8, range(8)) == ()


def test_more_vcpus_than_performance_cpus_is_refused(aurora: model.Model) -> None:
    with pytest.raises(GpupassError) as error:
        vm_pieces.vcpu_pins(aurora, 12)
    assert error.value.lines() == [
        "the domain has 12 vCPUs, the model has 8 performance CPUs (0-7) to pin them to",
        "hint: give the domain at most 8 vCPUs (virsh setvcpus NAME 8 --config --maximum), then attach again",
    ]


def test_a_path_finds_what_ensure_created() -> None:
    root = ET.fromstring("<domain><devices/></domain>")
    editor = xmledit.Editor(root)
    path = "devices/hostdev[@type='pci'][source/address/@bus='0x01'][.='x']"
    created = editor.ensure(path)
    assert ET.tostring(created) == b'<hostdev type="pci">x<source><address bus="0x01" /></source></hostdev>'
    assert xmledit.find(root, path) is created
    assert editor.ensure(path) is created
    assert xmledit.path_steps("a/b[c/@d='e/f']/g") == ["a", "b[c/@d='e/f']", "g"]


def test_undo_in_another_process_restores_the_document_exactly() -> None:
    """The journal is all undo needs: write the edited document out, parse it anew, undo."""
    root = xmledit.parse(SMALL_DOMAIN)
    editor = xmledit.Editor(root, owner="test")
    pin = editor.ensure("cputune/vcpupin[@vcpu='0']")
    editor.set(pin, "cputune/vcpupin[@vcpu='0']", "cpuset", "0")
    editor.set(editor.ensure("os", container=True), "os", "firmware", None)
    editor.remove("os/firmware")
    editor.add_pair("qemu:commandline", "qemu:arg", "-fw_cfg", "opt/x,string=1")
    edited = xmledit.to_text(root)
    assert "secure-boot" not in edited.split("<gpupass:attach")[0]

    again = xmledit.Editor(xmledit.parse(edited))
    assert again.journaled
    again.undo()
    assert xmledit.to_text(again.root) == xmledit.to_text(xmledit.parse(SMALL_DOMAIN))


def test_a_user_element_put_into_a_container_gpupass_added_stays(aurora: model.Model) -> None:
    root = xmledit.parse(SMALL_DOMAIN)
    vm_pieces.apply(root, vm_pieces.Context(aurora))
    root.find("cputune").append(ET.Element("iothreadpin", iothread="1", cpuset="3"))
    editor = xmledit.Editor(xmledit.parse(xmledit.to_text(root)))
    editor.undo()
    assert [(e.tag, e.attrib) for e in editor.root.find("cputune")] == [
        ("iothreadpin", {"iothread": "1", "cpuset": "3"})
    ]


def test_missing_pieces_names_each_one(aurora: model.Model) -> None:
    """One line per piece, as ``gpupass doctor`` will print them."""
    assert vm_pieces.missing_pieces(SMALL_DOMAIN, aurora) == [
        "hostdevs (one multifunction guest slot, vBIOS rom): add a pcie-root-port for them;"
        " add hostdev 0000:01:00.0; add hostdev 0000:01:00.1",
        "64-bit MMIO window: add qemu:commandline; add qemu:commandline/qemu:arg -fw_cfg"
        " opt/ovmf/X-PciMmio64Mb,string=65536",
        "battery table: add qemu:commandline; add qemu:commandline/qemu:arg -acpitable"
        " file=/usr/share/gpupass/ssdt-battery.aml",
        "vBIOS _ROM table: add qemu:commandline; add qemu:commandline/qemu:arg -acpitable"
        " file=/var/lib/gpupass/ssdt-rom.aml",
        "SMBIOS sysinfo: add sysinfo[@type='smbios']; add os/smbios",
        "firmware without Secure Boot: remove os/@firmware (was 'efi'); remove os/firmware; add os/loader;"
        " add os/nvram",
        "hidden KVM: add features/kvm",
        "Hyper-V vendor id: add features/hyperv/vendor_id",
        "Hyper-V enlightenments: add features/hyperv/relaxed; add features/hyperv/spinlocks;"
        " add features/hyperv/vpindex; add features/hyperv/runtime; add features/hyperv/synic;"
        " add features/hyperv/stimer; add features/hyperv/reset; add features/hyperv/frequencies;"
        " add features/hyperv/tlbflush; add features/hyperv/ipi; add clock",
        "vCPU pinning to performance CPUs: add cputune",
    ]
    # A half-done domain: what is wrong in it, with the value found.
    half = SMALL_DOMAIN.replace(
        '<vcpu placement="static">4</vcpu>', '<vcpu>2</vcpu><cputune><vcpupin vcpu="0" cpuset="5"/></cputune>'
    ).replace(
        "</devices>",
        '<hostdev mode="subsystem" type="pci"><source><address domain="0x0000" bus="0x01" slot="0x00"'
        ' function="0x0"/></source><address type="pci" domain="0x0000" bus="0x02" slot="0x00" function="0x0"/>'
        "</hostdev></devices>",
    )
    lines = vm_pieces.missing_pieces(half, aurora)
    assert lines[0] == (
        "hostdevs (one multifunction guest slot, vBIOS rom): add a pcie-root-port for them;"
        " set hostdev 0000:01:00.0/@managed='yes'; add hostdev 0000:01:00.0/rom;"
        " set hostdev 0000:01:00.0/address[@type='pci']/@bus='0x03' (was '0x02');"
        " set hostdev 0000:01:00.0/address[@type='pci']/@multifunction='on'; add hostdev 0000:01:00.1"
    )
    assert lines[-1] == (
        "vCPU pinning to performance CPUs: set cputune/vcpupin[@vcpu='0']/@cpuset='0' (was '5');"
        " add cputune/vcpupin[@vcpu='1']"
    )


@pytest.mark.parametrize("model_file", MODELS, ids=lambda p: p.stem)
def test_the_shipped_domain_misses_nothing(model_file: Path) -> None:
    """The generated domain and attach agree, down to the aliases the subsystem-id overrides
    name (hp-victus-16-navi23 has subsystem ids)."""
    loaded = model.load(model_file)
    shipped = render.render_all(loaded)[DOMAIN].decode()
    assert vm_pieces.missing_pieces(shipped, loaded) == []


@pytest.mark.parametrize("native", [False, True], ids=["qemu-commandline", "native-acpi-table"])
def test_an_attached_domain_misses_nothing_and_a_second_attach_changes_nothing(
    aurora: model.Model, native: bool
) -> None:
    root = xmledit.parse(SMALL_DOMAIN)
    vm_pieces.apply(root, vm_pieces.Context(aurora, native_acpi_table=native, host_cpus=LAPTOP_CPUS))
    attached = xmledit.to_text(root)
    assert vm_pieces.missing_pieces(attached, aurora, LAPTOP_CPUS) == []
    again = xmledit.parse(attached)
    assert (
        vm_pieces.apply(again, vm_pieces.Context(aurora, native_acpi_table=native, host_cpus=LAPTOP_CPUS)).changes == []
    )
    tables = [t.text for t in root.iterfind("os/acpi/table[@type='raw']")]
    args = [a.get("value") for a in root.iterfind("qemu:commandline/qemu:arg", QEMU)]
    aml, rom_aml = str(paths.INSTALLED_AML), str(paths.ROM_AML)
    if native:  # libvirt takes one "raw" table, the battery's: the _ROM table stays an argument
        assert (tables, args[2:]) == ([aml], ["-acpitable", f"file={rom_aml}"])
    else:
        assert tables == [] and args[2:] == ["-acpitable", f"file={aml}", "-acpitable", f"file={rom_aml}"]
    assert root.find("cputune/emulatorpin").get("cpuset") == "4-11"  # 4 vCPUs on CPUs 0-3


def test_the_users_own_hostdevs_are_moved_onto_one_slot_and_back(aurora: model.Model) -> None:
    """virt-manager puts the GPU and its audio function on two root ports; attach moves both
    onto gpupass's own port (whose guest ACPI node is known), and detach moves them back."""
    functions = "".join(
        f"""<hostdev mode="subsystem" type="pci" managed="yes">
      <source><address domain="0x0000" bus="0x01" slot="0x00" function="0x{n}"/></source>
      <address type="pci" domain="0x0000" bus="0x0{n + 1}" slot="0x00" function="0x0"/>
    </hostdev>"""
        for n in (0, 1)
    )
    original = SMALL_DOMAIN.replace("</devices>", functions + "</devices>")
    root = xmledit.parse(original)
    vm_pieces.apply(root, vm_pieces.Context(aurora))
    guest = [h.find("address").attrib for h in root.iterfind("devices/hostdev")]
    assert guest == [
        {"type": "pci", "domain": "0x0000", "bus": "0x03", "slot": "0x00", "function": "0x0", "multifunction": "on"},
        {"type": "pci", "domain": "0x0000", "bus": "0x03", "slot": "0x00", "function": "0x1"},
    ]
    port = xmledit.find(root, vm_pieces.PORT_PATH)
    assert (port.get("index"), port.find("target").attrib, port.find("address").attrib) == (
        "3",
        {"hotplug": "off"},
        {"type": "pci", "domain": "0x0000", "bus": "0x00", "slot": "0x1c", "function": "0x0"},
    )
    editor = xmledit.Editor(xmledit.parse(xmledit.to_text(root)))
    editor.undo()
    assert xmledit.to_text(editor.root) == xmledit.to_text(xmledit.parse(original))


def test_a_device_at_the_ports_guest_address_is_refused(aurora: model.Model) -> None:
    taken = SMALL_DOMAIN.replace(
        "</devices>",
        '<controller type="usb" model="qemu-xhci"><address type="pci" domain="0x0000" bus="0x00" slot="0x1c"'
        ' function="0x0"/></controller></devices>',
    )
    with pytest.raises(GpupassError) as e:
        vm_pieces.apply(xmledit.parse(taken), vm_pieces.Context(aurora))
    assert e.value.lines() == [
        "the domain's controller qemu-xhci sits at guest PCI address 00:1c, where gpupass puts the GPU's root port",
        "hint: move it (remove its <address> and libvirt picks another), then attach again",
    ]


def with_subsystem_id(m: model.Model, sub: str) -> model.Model:
    gpu, *rest = m.gpu.functions
    first = dataclasses.replace(gpu, subsystem_id=sub)
    return dataclasses.replace(m, gpu=dataclasses.replace(m.gpu, functions=(first, *rest)))


def test_a_known_subsystem_id_becomes_a_qemu_override_of_the_aliased_gpu(aurora: model.Model) -> None:
    root = xmledit.parse(SMALL_DOMAIN)
    vm_pieces.apply(root, vm_pieces.Context(with_subsystem_id(aurora, "1d05:1234")))
    gpu = xmledit.find(root, vm_pieces.hostdev_path(aurora.gpu_function))
    assert gpu.find("alias").get("name") == "ua-gpupass-0000-01-00-0"
    device = root.find("qemu:override/qemu:device", QEMU)
    assert device.get("alias") == "ua-gpupass-0000-01-00-0"
    props = [p.attrib for p in device.iterfind("qemu:frontend/qemu:property", QEMU)]
    assert props == [
        {"name": "x-pci-sub-vendor-id", "type": "unsigned", "value": str(0x1D05)},
        {"name": "x-pci-sub-device-id", "type": "unsigned", "value": str(0x1234)},
    ]
    # Without one (the field's default '', or given as ''), no alias and no override.
    for m in (aurora, with_subsystem_id(aurora, "")):
        plain = xmledit.parse(SMALL_DOMAIN)
        vm_pieces.apply(plain, vm_pieces.Context(m))
        assert plain.find("qemu:override", QEMU) is None and plain.find("devices/hostdev/alias") is None


@pytest.mark.parametrize(
    "os_xml,why",
    [
        (
            '<os firmware="efi"/>',
            "firmware autoselection may pick a Secure Boot firmware (it did not exclude secure-boot)",
        ),
        ('<os firmware="efi"><firmware><feature enabled="no" name="secure-boot"/></firmware></os>', ""),
        ('<os><loader secure="yes">/x/OVMF_CODE.fd</loader></os>', "its loader has secure='yes' (/x/OVMF_CODE.fd)"),
        (
            "<os><loader>/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</loader></os>",
            "its loader /usr/share/OVMF/OVMF_CODE_4M.secboot.fd is a Secure Boot build",
        ),
        ("<os><loader>/usr/share/OVMF/OVMF_CODE_4M.fd</loader></os>", ""),
    ],
)
def test_secure_boot_is_recognised(os_xml: str, why: str) -> None:
    assert vm_pieces.secure_boot(ET.fromstring(f"<domain>{os_xml}</domain>")) == why


DOMAIN_RNG = Path("/usr/share/libvirt/schemas/domain.rng")


@pytest.mark.tool
def test_the_native_acpi_table_sits_where_libvirts_schema_wants_it(aurora: model.Model) -> None:
    """libvirt 11.2's <os><acpi><table type="raw">, checked against the installed schema.

    The daemon here (Debian 12, libvirt 9.0) predates the element's "raw" type: its schema
    knows only type "slic" at that place. Then the XML is checked with the type swapped, which
    still proves the element's place and content; the "raw" value itself is unchecked.
    """
    from lxml import etree

    root = xmledit.parse(render.render_all(aurora)[DOMAIN].decode())
    editor = xmledit.Editor(root)
    for arg in list(root.iterfind("qemu:commandline/qemu:arg", QEMU))[2:]:  # the -acpitable pairs
        root.find("qemu:commandline", QEMU).remove(arg)
    vm_pieces.piece_battery_table(editor, vm_pieces.Context(aurora, native_acpi_table=True))
    table = root.find("os/acpi/table")
    assert (table.get("type"), table.text) == ("raw", str(paths.INSTALLED_AML))
    schema_text = (DOMAIN_RNG.parent / "domaincommon.rng").read_text()
    knows_raw = '<value>raw</value>\n          </attribute>\n          <ref name="absFilePath"/>' in schema_text
    if not knows_raw:
        table.set("type", "slic")
    schema = etree.RelaxNG(etree.parse(str(DOMAIN_RNG)))
    assert schema.validate(etree.fromstring(xmledit.to_text(root).encode())), schema.error_log


# --- against libvirtd ---------------------------------------------------------------------

# virt-install's --boot for the three ways a Windows 11 guest gets UEFI.
FIRMWARE = {
    # virt-install's default for Windows 11; Debian's first firmware descriptor is then
    # OVMF_CODE_4M.ms.fd, Secure Boot with Microsoft's keys.
    "uefi": ["--boot", "uefi"],
    # What virt-manager sets up for Windows 11: autoselection asking for Secure Boot.
    "uefi-secure-boot": [
        "--boot",
        "uefi,firmware.feature0.name=secure-boot,firmware.feature0.enabled=yes,"
        "firmware.feature1.name=enrolled-keys,firmware.feature1.enabled=yes",
        "--features",
        "smm.state=on",
    ],
    # An explicit Secure Boot loader and its Microsoft-keys variable store.
    "secboot-loader": [
        "--boot",
        "loader=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd,loader.readonly=yes,loader.type=pflash,"
        "loader.secure=yes,nvram.template=/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
        "--features",
        "smm.state=on",
    ],
}
UUIDS = {name: f"6b1f7a8e-0000-4000-8000-00000000000{n}" for n, name in enumerate(FIRMWARE)}


def virt_install_xml(libvirtd: Daemon, name: str, firmware: str, disk: Path) -> str:
    command = [
        "virt-install", "--connect", libvirtd.uri, "--print-xml", "--import",
        "--name", name, "--uuid", UUIDS[firmware], "--osinfo", "win11",
        # No /dev/kvm on a test machine; the pieces do not depend on the accelerator.
        "--virt-type", "qemu",
        "--memory", "4096", "--vcpus", "8",
        "--disk", f"path={disk},format=raw,bus=sata",
        "--network", "none", "--graphics", "vnc,password=secret",
        *FIRMWARE[firmware],
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def connection(libvirtd: Daemon) -> Iterator[object]:
    from gpupass.laptop.vm import libvirtconn

    conn = libvirtconn.connect(libvirtd.uri)
    yield conn
    conn.close()


@pytest.fixture
def user_domain(libvirtd: Daemon, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A Windows 11 domain virt-install made, defined; ``request.param`` names its firmware."""
    firmware = request.param
    name = f"win11-{firmware}"
    disk = tmp_path / "win11.img"
    disk.write_bytes(b"")
    (tmp_path / "domain.xml").write_text(virt_install_xml(libvirtd, name, firmware, disk))
    libvirtd.virsh("define", str(tmp_path / "domain.xml"))
    yield name
    libvirtd.virsh("destroy", name, check=False)
    libvirtd.virsh("undefine", "--nvram", name, check=False)


def dumpxml(libvirtd: Daemon, name: str) -> str:
    return libvirtd.virsh("dumpxml", "--inactive", "--security-info", name).stdout


@pytest.mark.tool
@pytest.mark.parametrize("user_domain", list(FIRMWARE), indirect=True)
def test_attach_then_detach_gives_back_the_users_domain(
    libvirtd: Daemon, connection, user_domain: str, aurora: model.Model, tmp_path: Path
) -> None:
    original = dumpxml(libvirtd, user_domain)
    backups = tmp_path / "backups"
    users_tpm = ET.tostring(ET.fromstring(original).find("devices/tpm"))  # virt-install gives every UEFI guest one

    first = vm_attach.attach(connection, user_domain, aurora, host_cpus=LAPTOP_CPUS, backup_dir=backups)
    assert first.defined and first.backup.read_text() == original
    assert first.notices and first.notices[0].startswith(f"Secure Boot firmware switched to {aurora.vm.ovmf_code}: ")
    attached = dumpxml(libvirtd, user_domain)
    assert vm_pieces.missing_pieces(attached, aurora, LAPTOP_CPUS) == []

    # Read back what libvirt kept, piece by piece.
    root = ET.fromstring(attached)
    hostdevs = [xmledit.find(root, vm_pieces.hostdev_path(f)) for f in aurora.gpu.functions]
    guest = [h.find("address").attrib for h in hostdevs]
    assert {(a["bus"], a["slot"]) for a in guest} == {(guest[0]["bus"], "0x00")}
    assert [a["function"] for a in guest] == ["0x0", "0x1"] and guest[0]["multifunction"] == "on"
    assert hostdevs[0].find("rom").attrib == {"bar": "on", "file": str(paths.VBIOS_ROM)}
    assert [a.get("value") for a in root.iterfind("qemu:commandline/qemu:arg", QEMU)] == [
        "-fw_cfg", "opt/ovmf/X-PciMmio64Mb,string=65536", "-acpitable", f"file={paths.INSTALLED_AML}",
        "-acpitable", f"file={paths.ROM_AML}",
    ]  # fmt: skip
    os_ = root.find("os")
    assert os_.get("firmware") is None and os_.find("firmware") is None
    assert os_.find("loader").attrib == {"readonly": "yes", "secure": "no", "type": "pflash"}
    assert os_.find("loader").text == aurora.vm.ovmf_code
    assert os_.find("nvram").get("template") == aurora.vm.ovmf_vars
    assert os_.find("smbios").get("mode") == "sysinfo"
    assert root.find("features/kvm/hidden").get("state") == "on"
    assert root.find("features/hyperv/vendor_id").attrib == {"state": "on", "value": aurora.vm.hyperv_vendor_id}
    hyperv = {e.tag: e.get("state") for e in root.find("features/hyperv")}
    assert hyperv == dict.fromkeys([*(n for n, _, _ in vm_pieces.HYPERV_ENLIGHTENMENTS), "vendor_id"], "on")
    assert root.find("features/hyperv/stimer/direct").get("state") == "on"
    assert root.find("clock/timer[@name='hypervclock']").get("present") == "yes"
    assert [ET.tostring(t) for t in root.iterfind("devices/tpm")] == [users_tpm]  # kept, and no second one
    pins = [(p.get("vcpu"), p.get("cpuset")) for p in root.iterfind("cputune/vcpupin")]
    assert pins == [(str(n), str(n)) for n in range(8)]
    assert root.find("cputune/emulatorpin").get("cpuset") == "8-11"
    assert root.find("devices/graphics").get("passwd") == "secret"  # the user's secret kept

    second = vm_attach.attach(connection, user_domain, aurora, host_cpus=LAPTOP_CPUS, backup_dir=backups)
    assert (second.diff, second.defined) == ("", False)
    assert dumpxml(libvirtd, user_domain) == attached

    dry = vm_attach.detach(connection, user_domain, dry_run=True, backup_dir=backups)
    assert dry.diff.startswith(f"--- {user_domain} (as defined)\n+++ {user_domain} (after gpupass vm detach)\n")
    assert dumpxml(libvirtd, user_domain) == attached
    vm_attach.detach(connection, user_domain, backup_dir=backups)
    assert dumpxml(libvirtd, user_domain) == original
    assert vm_attach.detach(connection, user_domain, backup_dir=backups).lines("passthrough detached", False) == [
        f"note: {user_domain} holds nothing gpupass vm attach added",
        f"{user_domain}: nothing to change",
    ]


def golden_check(path: Path, text: str, regenerate: bool) -> None:
    if regenerate:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path}: no golden file; run with --regenerate and review it"
    assert text == path.read_text(), f"{path} differs; if intended, run with --regenerate and review the diff"


@pytest.mark.tool
@pytest.mark.parametrize("user_domain", ["uefi-secure-boot"], indirect=True)
def test_dry_run_prints_the_diff_the_real_run_makes(
    libvirtd: Daemon, user_domain: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], regenerate: bool
) -> None:
    argv = ["vm", "--model", "aurora-z", "--connect", libvirtd.uri, "attach", user_domain]
    original = dumpxml(libvirtd, user_domain)
    assert cli.main([*argv, "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert dumpxml(libvirtd, user_domain) == original
    assert dry.endswith(f"{user_domain}: dry run, nothing changed\n")
    diff = dry[: dry.index("note: ")]
    # The host's CPUs decide the emulator pin: none where the 8 vCPUs' CPUs are all it has
    # (the golden diff's case, a small test machine); else the one line more is checked.
    if set(_host_cpus()) <= set(range(8)):
        golden_check(GOLDEN / "attach-uefi-secure-boot.diff", diff, regenerate)
    else:
        assert '<emulatorpin cpuset="' in diff

    from gpupass.laptop.vm import libvirtconn

    conn = libvirtconn.connect(libvirtd.uri)
    try:
        real = vm_attach.attach(conn, user_domain, model.load(ROOT / "models" / "aurora-z.toml"), backup_dir=tmp_path)
    finally:
        conn.close()
    assert real.diff == diff
    assert real.backup.read_text() == original


def _host_cpus() -> tuple[int, ...]:
    return machine.cpu_list(Path("/sys/devices/system/cpu/online").read_text())


@pytest.mark.tool
@pytest.mark.parametrize("user_domain", ["uefi"], indirect=True)
def test_attach_to_a_running_domain_is_refused(
    libvirtd: Daemon, user_domain: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # OVMF under TCG with nothing to boot: it runs until destroyed, which is all this needs.
    libvirtd.virsh("start", user_domain)
    before = dumpxml(libvirtd, user_domain)
    assert cli.main(["vm", "--model", "aurora-z", "--connect", libvirtd.uri, "attach", user_domain]) == 1
    assert capsys.readouterr().err == (
        f"gpupass: {user_domain} is running; gpupass changes only a domain that is shut off\n"
        f"gpupass: hint: shut it down first (virsh shutdown {user_domain}), or see the change with --dry-run\n"
    )
    assert dumpxml(libvirtd, user_domain) == before
    # Looking is allowed: the dry run shows the change without making it.
    assert cli.main(["vm", "--model", "aurora-z", "--connect", libvirtd.uri, "attach", "--dry-run", user_domain]) == 0
    assert capsys.readouterr().out.endswith(f"{user_domain}: dry run, nothing changed\n")
    assert dumpxml(libvirtd, user_domain) == before


@pytest.mark.tool
@pytest.mark.parametrize("user_domain", ["uefi"], indirect=True)
def test_a_subsystem_id_override_is_accepted_by_libvirt(
    libvirtd: Daemon, connection, user_domain: str, aurora: model.Model, tmp_path: Path
) -> None:
    m = with_subsystem_id(aurora, "1d05:1234")
    vm_attach.attach(connection, user_domain, m, host_cpus=LAPTOP_CPUS, backup_dir=tmp_path)
    root = ET.fromstring(dumpxml(libvirtd, user_domain))
    props = root.findall(
        "qemu:override/qemu:device[@alias='ua-gpupass-0000-01-00-0']/qemu:frontend/qemu:property", QEMU
    )
    assert [(p.get("name"), p.get("value")) for p in props] == [
        ("x-pci-sub-vendor-id", str(0x1D05)),
        ("x-pci-sub-device-id", str(0x1234)),
    ]
    assert xmledit.find(root, vm_pieces.hostdev_path(aurora.gpu_function)).find("alias").get("name") == (
        "ua-gpupass-0000-01-00-0"
    )
    assert vm_pieces.missing_pieces(ET.tostring(root, encoding="unicode"), m, LAPTOP_CPUS) == []


@pytest.mark.tool
def test_unknown_domain_and_missing_python3_libvirt_say_what_to_do(
    libvirtd: Daemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["vm", "--model", "aurora-z", "--connect", libvirtd.uri, "detach", "no-such-vm"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gpupass: no domain named no-such-vm (domains: ")
    assert err.endswith("gpupass: hint: gpupass vm define creates one from the model\n")
    monkeypatch.setitem(__import__("sys").modules, "libvirt", None)
    assert cli.main(["vm", "--model", "aurora-z", "attach", "x"]) == 1
    assert capsys.readouterr().err == (
        "gpupass: libvirt's Python API is not installed (import libvirt failed)\n"
        "gpupass: hint: install python3-libvirt\n"
    )


@pytest.mark.tool
def test_define_puts_the_users_disk_and_iso_into_the_models_domain(
    libvirtd: Daemon, aurora: model.Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = render.render_all(aurora)[DOMAIN]
    template = tmp_path / "domain.xml"
    # No /dev/kvm on a test machine: the one attribute it cannot honour changed.
    template.write_bytes(shipped.replace(b'<domain type="kvm"', b'<domain type="qemu"', 1))
    iso = tmp_path / "Win11.iso"
    iso.write_bytes(b"")
    record = tmp_path / "vm"  # the domain gpupass power acts on by default
    argv = ["vm", "--model", "aurora-z", "--connect", libvirtd.uri, "--record", str(record), "define", "win11-new"]
    hidden = ["--domain-xml", str(template), "--images", str(tmp_path)]
    try:
        assert cli.main([*argv, "--disk-size", "2", "--iso", str(iso), *hidden]) == 0
        disk = tmp_path / "win11-new.qcow2"
        assert capsys.readouterr().out == (
            f"{disk}: created, 2 GiB (qcow2)\nwin11-new: defined (start it with: virsh start win11-new)\n"
            "after Windows is installed, take the ISOs out: virsh change-media win11-new sdb --eject --config\n"
        )
        info = subprocess.run(["qemu-img", "info", str(disk)], capture_output=True, text=True, check=True).stdout
        assert "file format: qcow2" in info and "virtual size: 2 GiB" in info
        root = ET.fromstring(dumpxml(libvirtd, "win11-new"))
        disks = [(d.get("device"), d.find("source").get("file"), d.find("target").attrib) for d in root.iter("disk")]
        assert disks == [
            ("disk", str(disk), {"dev": "sda", "bus": "sata"}),
            ("cdrom", str(iso), {"dev": "sdb", "bus": "sata"}),
        ]
        assert [b.get("dev") for b in root.iterfind("os/boot")] == ["hd", "cdrom"]
        assert [m.get("type") for m in root.iterfind("devices/interface/model")] == ["e1000e"]
        assert [(i.get("type"), i.get("bus")) for i in root.iterfind("devices/input")] == [
            ("tablet", "usb"), ("mouse", "ps2"), ("keyboard", "ps2"),
        ]  # fmt: skip
        tpm = root.find("devices/tpm")
        assert (tpm.get("model"), tpm.find("backend").attrib) == ("tpm-crb", {"type": "emulator", "version": "2.0"})
        assert vm_pieces.missing_pieces(ET.tostring(root, encoding="unicode"), aurora) == []
        assert record.read_text() == "win11-new\n"
        assert root.find("metadata") is None  # nothing for detach to take out of gpupass's own domain
        # The printed way to take the installer out works on the shut-off domain.
        libvirtd.virsh("change-media", "win11-new", "sdb", "--eject", "--config")
        cdrom = ET.fromstring(dumpxml(libvirtd, "win11-new")).find("devices/disk[@device='cdrom']")
        assert cdrom.find("source") is None

        assert cli.main([*argv, "--disk-size", "2", *hidden]) == 1
        assert capsys.readouterr().err == (
            "gpupass: a domain named win11-new exists already\n"
            "gpupass: hint: choose another name, or add passthrough to it: gpupass vm attach win11-new\n"
        )

        # libvirt validates before defining; a refused domain leaves no disk behind.
        template.write_text(template.read_text().replace('<vmport state="off"/>', '<vmport state="bogus"/>'))
        other = ["vm", "--model", "aurora-z", "--connect", libvirtd.uri, "--record", str(record), "define", "win11-bad",
                 "--disk-size", "1"]  # fmt: skip
        assert cli.main([*other, *hidden]) == 1
        assert capsys.readouterr().err.startswith(
            "gpupass: libvirt refused the domain: XML document failed to validate against schema"
        )
        assert not (tmp_path / "win11-bad.qcow2").exists()
    finally:
        libvirtd.virsh("undefine", "--nvram", "win11-new", check=False)


@pytest.mark.tool
def test_define_with_virtio_win_names_the_driver_folder(
    libvirtd: Daemon, aurora: model.Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = tmp_path / "domain.xml"
    template.write_bytes(render.render_all(aurora)[DOMAIN].replace(b'<domain type="kvm"', b'<domain type="qemu"', 1))
    iso, drivers = tmp_path / "Win11.iso", tmp_path / "virtio-win.iso"
    for image in (iso, drivers):
        image.write_bytes(b"")
    argv = ["vm", "--model", "aurora-z", "--connect", libvirtd.uri, "define", "win11-virtio", "--disk-size", "1"]
    argv += ["--iso", str(iso), "--virtio-win", str(drivers), "--domain-xml", str(template), "--images", str(tmp_path)]
    try:
        assert cli.main(argv) == 0
        assert capsys.readouterr().out.splitlines()[1:] == [
            "win11-virtio: defined (start it with: virsh start win11-virtio)",
            'Windows setup sees the disk only with the virtio storage driver: at "Where do you want to install'
            ' Windows?" choose Load driver, then the folder viostor\\w11\\amd64 on the virtio-win CD (the network'
            " driver is in NetKVM\\w11\\amd64)",
            "after Windows is installed, take the ISOs out: virsh change-media win11-virtio sda --eject --config;"
            " virsh change-media win11-virtio sdb --eject --config",
        ]
        root = ET.fromstring(dumpxml(libvirtd, "win11-virtio"))
        disks = [(d.get("device"), d.find("source").get("file"), d.find("target").attrib) for d in root.iter("disk")]
        assert disks == [
            ("disk", str(tmp_path / "win11-virtio.qcow2"), {"dev": "vda", "bus": "virtio"}),
            ("cdrom", str(iso), {"dev": "sda", "bus": "sata"}),
            ("cdrom", str(drivers), {"dev": "sdb", "bus": "sata"}),
        ]
        assert [m.get("type") for m in root.iterfind("devices/interface/model")] == ["virtio"]
        assert [b.get("dev") for b in root.iterfind("os/boot")] == ["hd", "cdrom"]
        other = [*argv[:6], "win11-other", "--disk-size", "1", "--virtio-win", str(tmp_path / "nope.iso")]
        assert cli.main([*other, "--domain-xml", str(template), "--images", str(tmp_path)]) == 1
        assert capsys.readouterr().err == (
            f"gpupass: {tmp_path / 'nope.iso'}: no such file (expected the virtio-win drivers ISO)\n"
        )
        assert not (tmp_path / "win11-other.qcow2").exists()
    finally:
        libvirtd.virsh("undefine", "--nvram", "win11-virtio", check=False)


@pytest.mark.tool
def test_qemu_boots_the_disk_then_the_installer_with_every_enlightenment_and_the_tpm(
    libvirtd: Daemon, aurora: model.Model, tmp_path: Path
) -> None:
    """What QEMU is told (``virsh domxml-to-native``): OVMF tries the disk first, then the
    installer; the drivers CD is not a boot device."""
    template = render.render_all(aurora)[DOMAIN].decode().replace('<domain type="kvm"', '<domain type="qemu"', 1)
    xml = vm_define.define_xml(
        template, aurora, name="w", disk=tmp_path / "d.qcow2", iso=tmp_path / "W.iso", virtio_win=tmp_path / "v.iso"
    )
    path = tmp_path / "domain.xml"
    # The two things a test machine cannot give the command line: -cpu host, and the
    # passthrough driver's probe (see test_libvirt.test_qemu_gets_the_laptops_subsystem_ids).
    xml = xml.replace('mode="host-passthrough"', 'mode="maximum"')
    path.write_text(xml.replace('managed="yes">', 'managed="yes"><driver name="vfio"/>'))
    argv = libvirtd.virsh("domxml-to-native", "qemu-argv", str(path)).stdout
    devices = [json.loads(arg) for arg in re.findall(r"-device '(\{[^']*\})'", argv)]
    files = {json.loads(a)["node-name"]: json.loads(a)["filename"] for a in re.findall(r"-blockdev '(\{[^']*\})'", argv)
             if '"filename"' in a}  # fmt: skip
    boot = {}
    for device in devices:
        if "drive" in device:
            storage = device["drive"].replace("-format", "-storage")
            boot[Path(files[storage]).name] = (device["driver"], device.get("bootindex"))
    assert boot == {"d.qcow2": ("virtio-blk-pci", 1), "W.iso": ("ide-cd", 2), "v.iso": ("ide-cd", None)}
    # libvirt 9.0 turns each Hyper-V enlightenment into QEMU 7.2's CPU flag, and the TPM
    # into swtpm's chardev and a CRB device.
    cpu = re.search(r" -cpu (\S+)", argv).group(1).split(",")
    assert [f for f in cpu if f.startswith("hv-")] == [
        "hv-time=on", "hv-relaxed=on", "hv-vapic=on", "hv-spinlocks=0x1fff", "hv-vpindex=on", "hv-runtime=on",
        "hv-synic=on", "hv-stimer=on", "hv-stimer-direct=on", "hv-reset=on",
        f"hv-vendor-id={aurora.vm.hyperv_vendor_id}", "hv-frequencies=on", "hv-tlbflush=on", "hv-ipi=on",
    ]  # fmt: skip
    assert "kvm=off" in cpu
    tpm = [d for d in devices if d["driver"] == "tpm-crb"]
    assert tpm == [{"driver": "tpm-crb", "tpmdev": "tpm-tpm0", "id": "tpm0"}]
    assert [d["driver"] for d in devices if d.get("bus") == "usb.0"] == ["usb-tablet"]


def test_the_users_own_mmio_window_is_resized_and_given_back(aurora: model.Model) -> None:
    original = SMALL_DOMAIN.replace(
        "</domain>",
        '<qemu:commandline xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">'
        '<qemu:arg value="-fw_cfg"/><qemu:arg value="opt/ovmf/X-PciMmio64Mb,string=32768"/>'
        "</qemu:commandline></domain>",
    )
    root = xmledit.parse(original)
    vm_pieces.apply(root, vm_pieces.Context(aurora))
    args = [a.get("value") for a in root.iterfind("qemu:commandline/qemu:arg", QEMU)]
    assert args[:2] == ["-fw_cfg", "opt/ovmf/X-PciMmio64Mb,string=65536"] and args.count("-fw_cfg") == 1
    editor = xmledit.Editor(xmledit.parse(xmledit.to_text(root)))
    editor.undo()
    assert xmledit.to_text(editor.root) == xmledit.to_text(xmledit.parse(original))


@pytest.mark.parametrize("users_window", [False, True], ids=["no-window", "users-window"])
def test_a_window_resized_by_a_newer_model_is_still_given_back(aurora: model.Model, users_window: bool) -> None:
    """attach, then attach again after the model's mmio64_mb changed (a package upgrade), then detach."""
    original = SMALL_DOMAIN
    if users_window:
        original = SMALL_DOMAIN.replace(
            "</domain>",
            '<qemu:commandline xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">'
            '<qemu:arg value="-fw_cfg"/><qemu:arg value="opt/ovmf/X-PciMmio64Mb,string=32768"/>'
            "</qemu:commandline></domain>",
        )
    bigger = dataclasses.replace(aurora, gpu=dataclasses.replace(aurora.gpu, mmio64_mb=131072))
    root = xmledit.parse(original)
    vm_pieces.apply(root, vm_pieces.Context(aurora))
    root = xmledit.parse(xmledit.to_text(root))
    vm_pieces.apply(root, vm_pieces.Context(bigger))
    args = [a.get("value") for a in root.iterfind("qemu:commandline/qemu:arg", QEMU)]
    assert args[:2] == ["-fw_cfg", "opt/ovmf/X-PciMmio64Mb,string=131072"] and args.count("-fw_cfg") == 1
    assert vm_pieces.missing_pieces(xmledit.to_text(root), bigger) == []
    editor = xmledit.Editor(xmledit.parse(xmledit.to_text(root)))
    editor.undo()
    assert xmledit.to_text(editor.root) == xmledit.to_text(xmledit.parse(original))


@pytest.mark.parametrize("native", [False, True], ids=["qemu-commandline", "native-acpi-table"])
def test_define_xml_names_the_disk_and_iso_and_picks_the_battery_tables_form(aurora: model.Model, native: bool) -> None:
    shipped = render.render_all(aurora)[DOMAIN].decode()
    text = vm_define.define_xml(
        shipped,
        aurora,
        name="win",
        disk=Path("/d/win.qcow2"),
        iso=Path("/i/Win11.iso"),
        native_acpi_table=native,
        host_cpus=LAPTOP_CPUS,
    )
    root = ET.fromstring(text)
    assert root.find("name").text == "win"
    disks = [(d.get("device"), d.find("source").get("file"), d.find("target").attrib) for d in root.iter("disk")]
    assert disks == [
        ("disk", "/d/win.qcow2", {"dev": "sda", "bus": "sata"}),
        ("cdrom", "/i/Win11.iso", {"dev": "sdb", "bus": "sata"}),
    ]
    assert [b.get("dev") for b in root.iterfind("os/boot")] == ["hd", "cdrom"]
    assert [m.get("type") for m in root.iterfind("devices/interface/model")] == ["e1000e"]
    assert root.find("cputune/emulatorpin").get("cpuset") == "8-11"
    args = [a.get("value") for a in root.iterfind("qemu:commandline/qemu:arg", QEMU)]
    tables = [t.text for t in root.iterfind("os/acpi/table[@type='raw']")]
    rom = ["-acpitable", f"file={paths.ROM_AML}"]  # an argument either way: libvirt takes one raw table
    if native:
        assert (args[2:], tables) == (rom, [str(paths.INSTALLED_AML)])
    else:
        assert (args[2:], tables) == (["-acpitable", f"file={paths.INSTALLED_AML}", *rom], [])
    assert root.find("metadata") is None
    assert vm_pieces.missing_pieces(text, aurora, LAPTOP_CPUS) == []


@pytest.mark.parametrize("iso", [True, False], ids=["with-installer", "drivers-only"])
def test_define_xml_with_virtio_win_puts_disk_and_nic_on_virtio(aurora: model.Model, iso: bool) -> None:
    shipped = render.render_all(aurora)[DOMAIN].decode()
    text = vm_define.define_xml(
        shipped,
        aurora,
        name="win",
        disk=Path("/d/win.qcow2"),
        iso=Path("/i/Win11.iso") if iso else None,
        virtio_win=Path("/i/virtio-win.iso"),
    )
    root = ET.fromstring(text)
    disks = [(d.get("device"), d.find("source").get("file"), d.find("target").attrib) for d in root.iter("disk")]
    cdroms = [("cdrom", "/i/Win11.iso")] if iso else []
    cdroms.append(("cdrom", "/i/virtio-win.iso"))
    assert disks == [
        ("disk", "/d/win.qcow2", {"dev": "vda", "bus": "virtio"}),
        *((kind, path, {"dev": f"sd{'ab'[n]}", "bus": "sata"}) for n, (kind, path) in enumerate(cdroms)),
    ]
    assert [m.get("type") for m in root.iterfind("devices/interface/model")] == ["virtio"]
    # Only the installer boots; without one, the disk alone.
    assert [b.get("dev") for b in root.iterfind("os/boot")] == (["hd", "cdrom"] if iso else ["hd"])


def test_the_hyperv_enlightenments_a_domain_lacks_are_added_and_the_users_own_kept(aurora: model.Model) -> None:
    """virt-install 4.1's Windows 11 domain has relaxed, vapic, spinlocks; a user switched ipi off."""
    original = SMALL_DOMAIN.replace(
        '<vapic state="on"/>',
        '<relaxed state="on"/><vapic state="on"/><spinlocks state="on" retries="4095"/><ipi state="off"/>',
    ).replace("</features>", '</features><clock offset="localtime"><timer name="rtc" tickpolicy="catchup"/></clock>')
    root = xmledit.parse(original)
    editor = xmledit.Editor(root, owner="test")
    vm_pieces.piece_hyperv_enlightenments(editor, vm_pieces.Context(aurora))
    hyperv = [(e.tag, e.attrib, [(c.tag, c.attrib) for c in e]) for e in root.find("features/hyperv")]
    assert hyperv == [
        ("relaxed", {"state": "on"}, []),
        ("vapic", {"state": "on"}, []),
        ("spinlocks", {"state": "on", "retries": "4095"}, []),
        ("vpindex", {"state": "on"}, []),
        ("runtime", {"state": "on"}, []),
        ("synic", {"state": "on"}, []),
        ("stimer", {"state": "on"}, [("direct", {"state": "on"})]),
        ("reset", {"state": "on"}, []),
        ("frequencies", {"state": "on"}, []),
        ("tlbflush", {"state": "on"}, []),
        ("ipi", {"state": "off"}, []),
    ]
    timers = [(t.get("name"), t.get("present")) for t in root.iterfind("clock/timer")]
    assert timers == [("rtc", None), ("hypervclock", "yes")]
    again = xmledit.Editor(xmledit.parse(xmledit.to_text(root)))
    again.undo()
    assert xmledit.to_text(again.root) == xmledit.to_text(xmledit.parse(original))
    # Passthrough mode hands the guest all the host has: nothing to add.
    passthrough = xmledit.parse(SMALL_DOMAIN.replace('<hyperv mode="custom">', '<hyperv mode="passthrough">'))
    editor = xmledit.Editor(passthrough)
    vm_pieces.piece_hyperv_enlightenments(editor, vm_pieces.Context(aurora))
    assert editor.changes == []


def test_no_rom_table_for_a_machine_type_whose_gpu_may_have_no_acpi_node(aurora: model.Model) -> None:
    old = SMALL_DOMAIN.replace('machine="q35"', 'machine="pc-q35-5.2"')
    assert old != SMALL_DOMAIN
    root = xmledit.parse(old)
    ctx = vm_pieces.Context(aurora)
    vm_pieces.apply(root, ctx)
    args = [a.get("value") for a in root.iterfind("qemu:commandline/qemu:arg", QEMU)]
    assert f"file={paths.ROM_AML}" not in args and f"file={paths.INSTALLED_AML}" in args
    assert ctx.notices[0] == (
        "the vBIOS _ROM table is left out: machine type pc-q35-5.2 may have no ACPI node for the GPU"
        " (QEMU before 8.0 describes devices behind a root port from pc-q35-6.1 on)"
    )
