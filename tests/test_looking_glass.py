"""Looking Glass: its shared memory sized from the panel, the domain piece, in and out again.

Unit: Looking Glass B7's size formula as its own table gives it, probe reading the panel
from fixture trees, the piece on XML in memory (define's domain, a virt-install-like
domain: attach, attach again, detach). Tool: virt-install's Windows 11 domain in a private
libvirtd, attach --looking-glass then detach byte for byte (a golden dry-run diff), and the
domains checked by libvirt's own validator, virt-xml-validate.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gpupass import cli, model
from gpupass.laptop import machine
from gpupass.laptop.onboarding import probe
from gpupass.laptop.vm import define as vm_define
from gpupass.laptop.vm import looking_glass as lg
from gpupass.laptop.vm import pieces as vm_pieces
from gpupass.laptop.vm import xmledit
from gpupass.packaging import render

from .layouts import AURORA_Z
from .libvirt import Daemon
from .test_doctor import AURORA
from .test_doctor import laptop as doctor_laptop
from .test_doctor import libvirt as doctor_libvirt
from .test_doctor import run as doctor_run
from .test_vm import (
    GOLDEN,
    LAPTOP_CPUS,
    QEMU,
    SMALL_DOMAIN,
    dumpxml,
    golden_check,
    user_domain,  # noqa: F401 - the fixture: virt-install's Windows 11 domain, defined
)

DOMAIN = "usr/share/gpupass/domain.xml"
RELEASE_NOTE = (
    "Looking Glass: {size} MiB of shared memory ({file}) for {res}; the guest's Looking Glass and the client"
    " on this laptop must both be release B7 (README: Looking Glass)"
)


# --- the size ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "width,height,hdr,mib",
    [
        # The issue's table, and Looking Glass B7's "Common Values" (doc/install_libvirt.rst).
        (1920, 1080, False, 32),
        (2560, 1600, False, 64),
        (3840, 2160, False, 128),
        (1920, 1200, False, 32),
        (2560, 1440, False, 64),
        (1920, 1080, True, 64),
        (1920, 1200, True, 64),
        (2560, 1440, True, 128),
        (3840, 2160, True, 256),
        # Edges: 1024x768 needs 6 + 10 MiB, exactly 16; one pixel row more needs 32.
        (1024, 768, False, 16),
        (1024, 769, False, 32),
    ],
)
def test_the_size_is_looking_glass_b7s_formula(width: int, height: int, hdr: bool, mib: int) -> None:
    assert lg.size_mib(width, height, hdr) == mib


def test_a_resolution_that_is_not_one_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["vm", "--model", "aurora-z", "--connect", "test:///default", "attach", "win11"]
    assert cli.main([*argv, "--looking-glass", "2560*1600"]) == 1
    assert capsys.readouterr().err == (
        "gpupass: --looking-glass: '2560*1600' is not a resolution (expected WIDTHxHEIGHT, e.g. 1920x1080)\n"
    )


def test_the_option_takes_the_models_panel_or_its_own_size_and_kvmfr_when_loaded(aurora: model.Model) -> None:
    panel = dataclasses.replace(aurora, vm=dataclasses.replace(aurora.vm, panel="2560x1600"))
    assert lg.LookingGlass.asked(None, panel, ()) is None
    assert lg.LookingGlass.asked("panel", panel, ()) == lg.LookingGlass(2560, 1600, kvmfr=False)
    assert lg.LookingGlass.asked("3840x2160", panel, ("kvmfr0",)) == lg.LookingGlass(3840, 2160, kvmfr=True)
    assert lg.LookingGlass(2560, 1600).size_mib == 64


def test_vm_panel_is_validated_with_the_model(aurora_text: str) -> None:
    text = aurora_text.replace("[vm]\n", '[vm]\npanel = "2560 x 1600"\n', 1)
    assert "[vm]\n" in aurora_text
    with pytest.raises(model.ModelError) as e:
        model.parse(text, "aurora-z", "models/aurora-z.toml")
    assert e.value.lines() == [
        "models/aurora-z.toml: vm.panel: '2560 x 1600' is not a resolution"
        " (expected WIDTHxHEIGHT in pixels, e.g. 1920x1080)"
    ]


# --- probe ------------------------------------------------------------------------------


def test_probe_reads_the_panel_from_the_edp_connectors_preferred_mode(tmp_path: Path) -> None:
    root = AURORA_Z.build(
        tmp_path,
        # drm_sysfs.c lists a connector's modes one a line, the preferred first; the HDMI port
        # (the dGPU's, on this laptop) has none while nothing is plugged in.
        connectors={"eDP-1": "2560x1600\n1920x1200\n1680x1050\n", "HDMI-A-1": ""},
    )
    snapshot = machine.read(root, processes=False)
    assert snapshot.panels == (machine.Panel("card1-eDP-1", "2560x1600"),)
    result = probe.probe(snapshot)
    assert 'panel = "2560x1600"  # sysfs class/drm/card1-eDP-1/modes (the preferred mode)\n' in result.toml()
    assert not [w for w in result.warnings if "panel" in w]
    assert model.parse(result.toml(), "probed", "probe").vm.panel == "2560x1600"


@pytest.mark.parametrize(
    "connectors,seen",
    [(None, "no eDP connector"), ({"eDP-1": ""}, "card1-eDP-1 (no modes)")],
    ids=["no-edp", "edp-without-modes"],
)
def test_probe_without_a_panel_mode_takes_the_default_and_warns(
    tmp_path: Path, connectors: dict[str, str] | None, seen: str
) -> None:
    result = probe.probe(machine.read(AURORA_Z.build(tmp_path, connectors=connectors), processes=False))
    assert 'panel = "1920x1080"  # gpupass default (no eDP connector with a mode)\n' in result.toml()
    assert result.warnings[-1] == (
        f"no internal panel mode in /sys/class/drm/*-eDP-*/modes ({seen}): vm.panel is 1920x1080, what"
        " gpupass vm --looking-glass sizes its shared memory for; set yours"
    )


def test_the_snapshot_sees_kvmfr_only_while_loaded(tmp_path: Path) -> None:
    assert machine.read(AURORA_Z.build(tmp_path / "a"), processes=False).kvmfr_devices == ()
    assert machine.read(AURORA_Z.build(tmp_path / "b", kvmfr=True), processes=False).kvmfr_devices == ("kvmfr0",)
    assert machine.kvmfr_devices(tmp_path / "b") == ("kvmfr0",)


# --- the piece, in memory ----------------------------------------------------------------

# The devices of virt-install's Windows 11 domain that the piece looks at.
VIRT_INSTALL_DEVICES = """\
    <input type="tablet" bus="usb">
      <address type="usb" bus="0" port="1"/>
    </input>
    <graphics type="vnc" port="-1" autoport="yes" passwd="secret">
      <listen type="address"/>
    </graphics>
    <video>
      <model type="qxl" ram="65536" vram="65536" vgamem="16384" heads="1" primary="yes"/>
    </video>
"""
USER_DOMAIN = SMALL_DOMAIN.replace("  </devices>", VIRT_INSTALL_DEVICES + "  </devices>")


def attach_in_memory(text: str, aurora: model.Model, looking_glass: lg.LookingGlass) -> tuple[str, list[str]]:
    root = xmledit.parse(text)
    ctx = vm_pieces.Context(aurora, host_cpus=LAPTOP_CPUS, looking_glass=looking_glass)
    vm_pieces.apply(root, ctx)
    return xmledit.to_text(root), ctx.notices


def detach_in_memory(text: str) -> str:
    """Canonical XML (C14N): an attribute put back comes last in ElementTree, where libvirt
    writes attributes in its own order anyway (the tool test compares libvirt's bytes)."""
    root = xmledit.parse(text)
    xmledit.Editor(root).undo()
    return ET.canonicalize(xmledit.to_text(root))


def test_attach_puts_in_shared_memory_and_spice_input_and_detach_takes_them_out(aurora: model.Model) -> None:
    before = ET.canonicalize(xmledit.to_text(xmledit.parse(USER_DOMAIN)))
    attached, notices = attach_in_memory(USER_DOMAIN, aurora, lg.LookingGlass(2560, 1600))
    root = ET.fromstring(attached)
    shmem = root.find("devices/shmem")
    assert (shmem.get("name"), shmem.find("model").get("type")) == ("looking-glass", "ivshmem-plain")
    assert (shmem.find("size").get("unit"), shmem.find("size").text) == ("M", "64")
    inputs = [(i.get("type"), i.get("bus")) for i in root.iterfind("devices/input")]
    assert inputs == [("mouse", "virtio"), ("keyboard", "virtio")]  # the USB tablet is out
    graphics = [g.get("type") for g in root.iterfind("devices/graphics")]
    assert graphics == ["vnc", "spice"]  # the user's VNC stays, with its password
    assert root.find("devices/graphics[@type='spice']/listen").attrib == {"type": "address", "address": "127.0.0.1"}
    assert root.find("devices/video/model").attrib == {"type": "vga", "vram": "65536", "heads": "1", "primary": "yes"}
    assert notices[-1] == RELEASE_NOTE.format(size=64, file="/dev/shm/looking-glass", res="2560x1600")
    again, _ = attach_in_memory(attached, aurora, lg.LookingGlass(2560, 1600))
    assert again == attached
    assert detach_in_memory(attached) == before
    # Another size later: the size is changed (journaled), detach still gives back the original.
    bigger, _ = attach_in_memory(attached, aurora, lg.LookingGlass(3840, 2160))
    assert ET.fromstring(bigger).find("devices/shmem/size").text == "128"
    assert detach_in_memory(bigger) == before


def test_with_kvmfr_the_memory_is_its_device_as_looking_glass_documents(aurora: model.Model) -> None:
    before = ET.canonicalize(xmledit.to_text(xmledit.parse(USER_DOMAIN)))
    attached, notices = attach_in_memory(USER_DOMAIN, aurora, lg.LookingGlass(1920, 1080, kvmfr=True))
    root = ET.fromstring(attached)
    assert root.find("devices/shmem") is None
    args = [a.get("value") for a in root.iterfind("qemu:commandline/qemu:arg", QEMU)]
    assert args[-4:] == [
        "-device",
        '{"driver":"ivshmem-plain","id":"shmem-looking-glass","memdev":"looking-glass"}',
        "-object",
        '{"qom-type":"memory-backend-file","id":"looking-glass","mem-path":"/dev/kvmfr0","size":33554432,"share":true}',
    ]
    assert lg.in_domain(root) == lg.InDomain("/dev/kvmfr0", 32 << 20)
    assert notices[-2:] == [
        RELEASE_NOTE.format(size=32, file="/dev/kvmfr0", res="1920x1080"),
        "kvmfr must be loaded with static_size_mb=32 (options kvmfr static_size_mb=32 in /etc/modprobe.d/kvmfr.conf),"
        " and /dev/kvmfr0 be in cgroup_device_acl in /etc/libvirt/qemu.conf (gpupass edits no file of libvirt's)",
    ]
    assert attach_in_memory(attached, aurora, lg.LookingGlass(1920, 1080, kvmfr=True))[0] == attached
    assert detach_in_memory(attached) == before


def test_the_memory_follows_kvmfr_and_a_new_size_and_detach_still_gives_back_the_original(
    aurora: model.Model,
) -> None:
    before = ET.canonicalize(xmledit.to_text(xmledit.parse(USER_DOMAIN)))
    shm, _ = attach_in_memory(USER_DOMAIN, aurora, lg.LookingGlass(1920, 1080))
    # kvmfr loaded since: the shared memory file's device goes, kvmfr's arguments come.
    kvmfr, _ = attach_in_memory(shm, aurora, lg.LookingGlass(1920, 1080, kvmfr=True))
    assert ET.fromstring(kvmfr).find("devices/shmem") is None
    assert lg.in_domain(ET.fromstring(kvmfr)) == lg.InDomain("/dev/kvmfr0", 32 << 20)
    # A bigger panel: the same two arguments, the new size.
    bigger, _ = attach_in_memory(kvmfr, aurora, lg.LookingGlass(3840, 2160, kvmfr=True))
    args = [a.get("value") for a in ET.fromstring(bigger).iterfind("qemu:commandline/qemu:arg", QEMU)]
    assert args.count("-object") == 1 and args.count("-device") == 1
    assert lg.in_domain(ET.fromstring(bigger)) == lg.InDomain("/dev/kvmfr0", 128 << 20)
    # kvmfr not loaded at the next attach: the domain keeps kvmfr's device, no second one.
    again, notices = attach_in_memory(bigger, aurora, lg.LookingGlass(3840, 2160))
    assert again == bigger
    assert notices[0] == "the domain maps /dev/kvmfr0, and kvmfr is not loaded now: load it before starting the VM"
    for attached in (kvmfr, bigger):
        assert detach_in_memory(attached) == before


def test_define_looking_glass_changes_only_its_pieces_and_the_default_domain_none(aurora: model.Model) -> None:
    shipped = render.render_all(aurora)[DOMAIN].decode()
    common = dict(name="win", disk=Path("/d/win.qcow2"), host_cpus=LAPTOP_CPUS)
    plain = vm_define.define_xml(shipped, aurora, **common)
    notices: list[str] = []
    looking = vm_define.define_xml(
        shipped, aurora, **common, looking_glass=lg.LookingGlass(1920, 1080), notices=notices
    )
    assert lg.in_domain(ET.fromstring(plain)) is None
    assert ET.fromstring(plain).find("devices/graphics[@type='spice']") is None
    assert lg.in_domain(ET.fromstring(looking)) == lg.InDomain("/dev/shm/looking-glass", 32 << 20)
    root = ET.fromstring(looking)
    assert [(i.get("type"), i.get("bus")) for i in root.iterfind("devices/input")] == [
        ("mouse", "virtio"), ("keyboard", "virtio"),
    ]  # fmt: skip
    assert [g.get("type") for g in root.iterfind("devices/graphics")] == ["vnc", "spice"]
    assert root.find("metadata") is None  # gpupass's own domain: nothing journaled
    assert notices == [RELEASE_NOTE.format(size=32, file="/dev/shm/looking-glass", res="1920x1080")]
    assert vm_pieces.missing_pieces(looking, aurora, LAPTOP_CPUS) == []


# --- in libvirt -------------------------------------------------------------------------


def validate(xml: str, tmp_path: Path) -> None:
    path = tmp_path / "validate.xml"
    path.write_text(xml)
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == f"{path} validates\n"  # xmllint's verdict, on stderr


@pytest.mark.tool
@pytest.mark.parametrize("user_domain", ["uefi"], indirect=True)
def test_attach_looking_glass_to_virt_installs_domain_and_detach_it_byte_for_byte(
    libvirtd: Daemon,
    user_domain: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    regenerate: bool,
) -> None:
    argv = ["vm", "--model", "aurora-z", "--connect", libvirtd.uri, "--record", str(tmp_path / "vm")]
    original = dumpxml(libvirtd, user_domain)
    # Passthrough first, then Looking Glass: the dry run's diff is Looking Glass's alone.
    assert cli.main([*argv, "attach", user_domain]) == 0
    passthrough = dumpxml(libvirtd, user_domain)
    capsys.readouterr()
    assert cli.main([*argv, "attach", user_domain, "--looking-glass", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert dumpxml(libvirtd, user_domain) == passthrough
    diff = dry[: dry.index("note: ")]
    golden_check(GOLDEN / "attach-looking-glass.diff", diff, regenerate)
    assert cli.main([*argv, "attach", user_domain, "--looking-glass"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(diff)
    assert RELEASE_NOTE.format(size=32, file="/dev/shm/looking-glass", res="1920x1080") in out
    attached = dumpxml(libvirtd, user_domain)
    validate(attached, tmp_path)
    root = ET.fromstring(attached)
    assert lg.in_domain(root) == lg.InDomain("/dev/shm/looking-glass", 32 << 20)
    assert root.find("devices/shmem/address").get("type") == "pci"  # libvirt placed it
    assert {(i.get("type"), i.get("bus")) for i in root.iterfind("devices/input")} == {
        ("mouse", "virtio"), ("keyboard", "virtio"), ("mouse", "ps2"), ("keyboard", "ps2"),
    }  # fmt: skip
    assert root.find("devices/graphics[@type='vnc']").get("passwd") == "secret"

    assert cli.main([*argv, "attach", user_domain, "--looking-glass"]) == 0
    assert capsys.readouterr().out.endswith(f"{user_domain}: nothing to change\n")
    assert dumpxml(libvirtd, user_domain) == attached

    assert cli.main([*argv, "detach", user_domain]) == 0
    assert dumpxml(libvirtd, user_domain) == original


@pytest.mark.tool
def test_the_defined_looking_glass_domain_validates_and_libvirt_keeps_it(
    libvirtd: Daemon, aurora: model.Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = render.render_all(aurora)[DOMAIN].replace(b'<domain type="kvm"', b'<domain type="qemu"', 1)
    disk, template = tmp_path / "win.qcow2", tmp_path / "domain.xml"
    disk.write_bytes(b"")
    template.write_bytes(shipped)
    argv = ["vm", "--model", "aurora-z", "--connect", libvirtd.uri, "--record", str(tmp_path / "vm"), "define"]
    hidden = ["--domain-xml", str(template), "--images", str(tmp_path)]
    try:
        assert cli.main([*argv, "win-lg", "--disk", str(disk), "--looking-glass", "2560x1600", *hidden]) == 0
        assert capsys.readouterr().out == (
            "win-lg: defined (start it with: virsh start win-lg)\n"
            f"note: {RELEASE_NOTE.format(size=64, file='/dev/shm/looking-glass', res='2560x1600')}\n"
        )
        kept = dumpxml(libvirtd, "win-lg")
        validate(kept, tmp_path)
        assert lg.in_domain(ET.fromstring(kept)) == lg.InDomain("/dev/shm/looking-glass", 64 << 20)
    finally:
        libvirtd.virsh("undefine", "--nvram", "win-lg", check=False)
    # The kvmfr form (its <qemu:commandline> arguments) is valid too.
    kvmfr = lg.LookingGlass(2560, 1600, kvmfr=True)
    validate(
        vm_define.define_xml(shipped.decode(), aurora, name="win-kvmfr", disk=Path("/d.qcow2"), looking_glass=kvmfr),
        tmp_path,
    )


# --- doctor -----------------------------------------------------------------------------

KVM_GID = grp.getgrnam("kvm").gr_gid
LG_DOMAIN = {
    kvmfr: vm_define.define_xml(
        render.render_all(AURORA)[DOMAIN].decode(),
        AURORA,
        name="win11-gpu",
        disk=Path("/var/lib/libvirt/images/win11-gpu.qcow2"),
        host_cpus=LAPTOP_CPUS,
        looking_glass=lg.LookingGlass(1920, 1080, kvmfr=kvmfr),
    )
    for kvmfr in (False, True)
}
TMPFILES = "sudo systemd-tmpfiles --create /usr/lib/tmpfiles.d/gpupass-aurora-z.conf"


def shared_file(
    root: Path, path: str, size: int = 0, mode: int = 0o660, gid: int = KVM_GID, char: bool = False
) -> None:
    """The shared memory file as tmpfiles.d makes it (or QEMU grew it), or kvmfr's device node."""
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if char:
        os.mknod(target, stat.S_IFCHR | mode, os.makedev(242, 0))  # kvmfr's node, as its docs list it
    else:
        target.write_bytes(b"")
        os.truncate(target, size)
    os.chown(target, 0, gid)
    target.chmod(mode)


def looking_glass_lines(root: Path, kvmfr: bool = False) -> tuple[int, list[str]]:
    status, lines = doctor_run(root, lv=doctor_libvirt(LG_DOMAIN[kvmfr]))
    return status, [line for line in lines if "Looking Glass" in line or "looking-glass" in line or "kvmfr" in line]


def test_doctor_checks_the_shared_memory_file_the_domain_asks_for(tmp_path: Path) -> None:
    root = doctor_laptop(tmp_path)
    assert looking_glass_lines(root) == (
        1,
        [
            "fail: VM win11-gpu maps /dev/shm/looking-glass for Looking Glass: there is none yet"
            f" (fix: {TMPFILES} (the package's boot entry))"
        ],
    )
    shared_file(root, "/dev/shm/looking-glass")
    assert looking_glass_lines(root) == (
        0,
        [
            "ok: Looking Glass: /dev/shm/looking-glass (empty until VM win11-gpu starts, then 32 MiB) is group kvm's"
            " to read and write; the guest's Looking Glass and the client on this laptop must both be release B7"
        ],
    )
    shared_file(root, "/dev/shm/looking-glass", size=32 << 20)
    assert looking_glass_lines(root)[1][0].startswith("ok: Looking Glass: /dev/shm/looking-glass (32 MiB) is group")
    shared_file(root, "/dev/shm/looking-glass", size=16 << 20, mode=0o600, gid=0)
    assert looking_glass_lines(root) == (
        1,
        [
            "fail: /dev/shm/looking-glass is 16 MiB and VM win11-gpu asks for 32 MiB: QEMU does not resize it"
            f" (fix: shut VM win11-gpu off, then sudo rm /dev/shm/looking-glass && {TMPFILES})",
            "fail: /dev/shm/looking-glass is group root, mode 0600: the client, run by a user in group kvm, cannot"
            f" read and write it (fix: {TMPFILES})",
        ],
    )


def test_doctor_checks_kvmfrs_device(tmp_path: Path) -> None:
    root = doctor_laptop(tmp_path)
    assert looking_glass_lines(root, kvmfr=True) == (
        1,
        [
            "fail: VM win11-gpu maps /dev/kvmfr0 for Looking Glass: there is none, kvmfr is not loaded"
            " (fix: sudo modprobe kvmfr static_size_mb=32)"
        ],
    )
    shared_file(root, "/dev/kvmfr0", size=32 << 20, mode=0o644, gid=0)
    assert looking_glass_lines(root, kvmfr=True)[1] == [
        "fail: /dev/kvmfr0 is a file, not kvmfr's device: QEMU made it before the module was loaded"
        " (fix: shut VM win11-gpu off, then sudo rm /dev/kvmfr0 && sudo modprobe kvmfr static_size_mb=32)",
        "fail: /dev/kvmfr0 is group root, mode 0644: the client, run by a user in group kvm, cannot read and write it"
        ' (fix: the udev rule of Looking Glass\'s docs: SUBSYSTEM=="kvmfr", GROUP="kvm", MODE="0660" in'
        " /etc/udev/rules.d/70-kvmfr.rules)",
    ]
    (root / "dev/kvmfr0").unlink()
    shared_file(root, "/dev/kvmfr0", char=True)
    assert looking_glass_lines(root, kvmfr=True) == (
        0,
        [
            "ok: Looking Glass: /dev/kvmfr0 (32 MiB) is group kvm's to read and write; the guest's Looking Glass and"
            " the client on this laptop must both be release B7"
        ],
    )
