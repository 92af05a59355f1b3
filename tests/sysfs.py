"""Fake sysfs/procfs trees of a laptop, for the pre-flight checks and the preinst.

The trees copy the real layout: devices live under sys/devices/pci0000:00/..., and
sys/bus/pci/devices, iommu_group and the groups' devices/ entries are relative symlinks to them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Dev:
    id: str
    cls: str
    group: int
    parent: str | None = None  # the upstream bridge, which sets the device's sysfs path
    boot_vga: str | None = None  # only VGA-class devices have the file


# The reference laptop: GPU + audio behind root port 00:01.0, all three in group 14.
AURORA_Z_PCI = {
    "0000:00:00.0": Dev("8086:4621", "0x060000", 0),
    "0000:00:01.0": Dev("8086:460d", "0x060400", 14),
    "0000:00:02.0": Dev("8086:46a3", "0x030000", 2, boot_vga="1"),
    "0000:00:06.0": Dev("8086:464d", "0x060400", 15),
    "0000:01:00.0": Dev("10de:25a2", "0x030000", 14, parent="0000:00:01.0", boot_vga="0"),
    "0000:01:00.1": Dev("10de:2291", "0x040300", 14, parent="0000:00:01.0"),
    "0000:02:00.0": Dev("144d:a80a", "0x010802", 16, parent="0000:00:06.0"),
}
CPUINFO = {
    "GenuineIntel": "12th Gen Intel(R) Core(TM) i7-12450H",
    "AuthenticAMD": "AMD Ryzen 7 6800H with Radeon Graphics",
}


def build_sysfs(
    root: Path,
    devices: dict[str, Dev] = AURORA_Z_PCI,
    *,
    cpu: str | None = "GenuineIntel",
    tables: tuple[str, ...] = ("DMAR", "DSDT", "FACP"),
    iommu_groups: bool = True,
    pci_bus: bool = True,
) -> Path:
    """Write the parts of /sys and /proc the checks read; ``cpu=None`` leaves out vendor_id."""

    def device_dir(address: str) -> Path:
        parent = devices[address].parent
        return (device_dir(parent) if parent else root / "sys/devices/pci0000:00") / address

    def link(path: Path, target: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(os.path.relpath(target, path.parent))

    for address, dev in devices.items():
        d = device_dir(address)
        d.mkdir(parents=True, exist_ok=True)
        vendor, device = dev.id.split(":")
        (d / "vendor").write_text(f"0x{vendor}\n")
        (d / "device").write_text(f"0x{device}\n")
        (d / "class").write_text(f"{dev.cls}\n")
        if dev.boot_vga is not None:
            (d / "boot_vga").write_text(f"{dev.boot_vga}\n")
        if pci_bus:
            link(root / "sys/bus/pci/devices" / address, d)
        if iommu_groups:
            group = root / "sys/kernel/iommu_groups" / str(dev.group)
            link(group / "devices" / address, d)
            link(d / "iommu_group", group)
    tables_dir = root / "sys/firmware/acpi/tables"
    tables_dir.mkdir(parents=True)
    for table in tables:
        (tables_dir / table).write_bytes(table.encode() + bytes(32))
    (root / "proc").mkdir(exist_ok=True)
    lines = []
    for n in range(2):
        lines += [f"processor\t: {n}"]
        if cpu is not None:
            lines += [f"vendor_id\t: {cpu}", f"model name\t: {CPUINFO.get(cpu, cpu)}"]
        lines += ["flags\t\t: fpu vme de pse", ""]
    (root / "proc/cpuinfo").write_text("\n".join(lines) + "\n")
    return root


def changed(devices: dict[str, Dev], address: str, **changes: object) -> dict[str, Dev]:
    return {**devices, address: dataclasses.replace(devices[address], **changes)}


def without(devices: dict[str, Dev], *addresses: str) -> dict[str, Dev]:
    return {a: d for a, d in devices.items() if a not in addresses}
