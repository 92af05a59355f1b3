"""The ``gpupass vm define`` domain beside the one ``virt-install --osinfo win11 --boot uefi``
makes, both as libvirt keeps them, against DESIGN.md's table of the differences.

virt-install is what these users know: its choices for a Windows 11 guest are the default,
and each difference is a row in DESIGN.md ("vm define beside virt-install") with its reason.
The test fails when virt-install gives a class of device or feature that gpupass lacks and
the table does not say why, and when the table no longer matches the two domains (a row for
a class neither has, a class either has without a row, a mark that is wrong).
"""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gpupass import model
from gpupass.laptop.vm import define as vm_define
from gpupass.laptop.vm import xmledit
from gpupass.laptop.vm.looking_glass import LookingGlass
from gpupass.packaging import render

from .conftest import ROOT
from .libvirt import Daemon

pytestmark = pytest.mark.tool

DOMAIN = "usr/share/gpupass/domain.xml"
TABLE_HEADING = "## vm define beside virt-install"
LOOKING_GLASS_HEADING = "## vm define --looking-glass beside vm define"
QEMU = "{" + xmledit.NAMESPACES["qemu"] + "}"
# The attribute that tells a device's kind, per device element.
KIND = {
    "disk": "device", "controller": "type", "input": "type", "interface": "type", "graphics": "type",
    "channel": "type", "console": "type", "serial": "type", "redirdev": "type", "tpm": "model", "sound": "model",
    "memballoon": "model", "hostdev": "type", "rng": "model", "watchdog": "model", "filesystem": "type",
    "audio": "type", "smartcard": "mode", "panic": "model", "shmem": "name",
}  # fmt: skip


def classes(xml: str) -> set[str]:
    """The classes of device and feature in a domain, as paths (DESIGN.md's first column)."""
    root = ET.fromstring(xml)
    found = set()
    for device in root.find("devices"):
        kind = KIND.get(device.tag)
        found.add(f"devices/{device.tag}" + (f"[@{kind}='{device.get(kind)}']" if kind and device.get(kind) else ""))
        if device.tag == "disk" and device.find("target") is not None:
            found.add(
                f"devices/disk[@device='{device.get('device')}']/target[@bus='{device.find('target').get('bus')}']"
            )
        if device.tag in ("video", "interface") and device.find("model") is not None:
            found.add(f"devices/{device.tag}/model[@type='{device.find('model').get('type')}']")
    for feature in root.find("features"):
        found.add(f"features/{feature.tag}")
        found.update(f"features/{feature.tag}/{child.tag}" for child in feature)
    found.update(f"clock/timer[@name='{t.get('name')}']" for t in root.iterfind("clock/timer"))
    os_ = root.find("os")
    if os_.get("firmware"):
        found.add(f"os[@firmware='{os_.get('firmware')}']")
    found.update(f"os/{child.tag}" for child in os_ if child.tag not in ("type", "boot"))
    found.add(f"cpu[@mode='{root.find('cpu').get('mode')}']")
    for tag in ("sysinfo", "cputune/vcpupin", "cputune/emulatorpin", "pm/suspend-to-mem", "pm/suspend-to-disk"):
        if root.find(tag) is not None:
            found.add(tag)
    for child in root:
        if child.tag.startswith(QEMU):
            found.add("qemu:" + child.tag[len(QEMU) :])
    return found


def design_table(heading: str = TABLE_HEADING) -> dict[str, tuple[str, str, str]]:
    """DESIGN.md's rows: class -> (virt-install's mark, gpupass's mark, why); for the Looking
    Glass table, class -> (the default domain's mark, the --looking-glass domain's, why)."""
    text = (ROOT / "DESIGN.md").read_text(encoding="utf-8")
    assert heading in text, f"DESIGN.md has no section {heading!r}"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([^`]+)`", cells[0]) if len(cells) == 4 else None
        if match:
            rows[match.group(1)] = (cells[1], cells[2], cells[3])
    return rows


def dumpxml(libvirtd: Daemon, name: str) -> str:
    return libvirtd.virsh("dumpxml", "--inactive", name).stdout


def test_every_class_virt_install_gives_is_in_gpupass_or_in_designs_table(libvirtd: Daemon, tmp_path: Path) -> None:
    disk, iso = tmp_path / "win11.qcow2", tmp_path / "Win11.iso"
    disk.write_bytes(b"")
    iso.write_bytes(b"")
    printed = subprocess.run(
        [
            "virt-install", "--connect", libvirtd.uri, "--print-xml", "1", "--name", "beside-virt-install",
            "--osinfo", "win11", "--boot", "uefi", "--memory", "16384", "--vcpus", "8",
            # No /dev/kvm on a test machine; virt-install's devices do not depend on it.
            "--virt-type", "qemu",
            "--disk", f"path={disk}", "--cdrom", str(iso),
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    aurora = model.load(ROOT / "models" / "aurora-z.toml")
    template = render.render_all(aurora)[DOMAIN].decode().replace('<domain type="kvm"', '<domain type="qemu"', 1)
    ours = vm_define.define_xml(template, aurora, name="beside-gpupass", disk=disk, iso=iso)
    lg = LookingGlass(*aurora.vm.panel_size)
    looking = vm_define.define_xml(template, aurora, name="beside-looking-glass", disk=disk, iso=iso, looking_glass=lg)
    names = ("beside-virt-install", "beside-gpupass", "beside-looking-glass")
    for name, xml in zip(names, (printed, ours, looking), strict=True):
        (tmp_path / f"{name}.xml").write_text(xml)
        libvirtd.virsh("define", str(tmp_path / f"{name}.xml"))
    try:
        theirs, mine, with_lg = (classes(dumpxml(libvirtd, name)) for name in names)
    finally:
        for name in names:
            libvirtd.virsh("undefine", "--nvram", name, check=False)

    # Only the --looking-glass domain changes, each class that does in its own table.
    lg_table = design_table(LOOKING_GLASS_HEADING)
    assert sorted(lg_table) == sorted(mine ^ with_lg), f"DESIGN.md's Looking Glass table: {sorted(mine ^ with_lg)}"
    lg_marks = {c: ("yes" if c in mine else "no", "yes" if c in with_lg else "no") for c in lg_table}
    assert {c: lg_table[c][:2] for c in lg_table} == lg_marks and all(row[2] for row in lg_table.values())

    table = design_table()
    unexplained = sorted(c for c in theirs - mine if not (c in table and table[c][2]))
    assert unexplained == [], (
        f"virt-install gives these, gpupass does not, and DESIGN.md does not say why: {unexplained}"
    )
    assert sorted((theirs | mine) - table.keys()) == [], "classes without a row in DESIGN.md's table"
    assert sorted(table.keys() - (theirs | mine)) == [], "rows in DESIGN.md's table for classes neither domain has"
    marks = {c: ("yes" if c in theirs else "no", "yes" if c in mine else "no") for c in table}
    wrong = {c: (table[c][0], table[c][1], "should be", *marks[c]) for c in table if table[c][:2] != marks[c]}
    assert wrong == {}, "DESIGN.md's table marks these wrongly"
    # Every difference has its reason.
    assert sorted(c for c in theirs ^ mine if not table[c][2]) == []
