"""Fake sysfs/procfs trees of a laptop, for the pre-flight checks and the preinst.

The trees copy the real layout: devices live under sys/devices/pci0000:00/..., and
sys/bus/pci/devices, iommu_group and the groups' devices/ entries are relative symlinks to them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BarSpec:
    index: int
    size: int  # bytes
    is_64bit: bool = True
    prefetchable: bool = True
    resizable_mib: tuple[int, ...] = ()  # the sizes Resizable BAR offers, in MiB


@dataclass(frozen=True)
class Dev:
    id: str
    cls: str
    group: int
    parent: str | None = None  # the upstream bridge, which sets the device's sysfs path
    boot_vga: str | None = None  # only VGA-class devices have the file
    subsystem: str | None = None  # "vvvv:dddd"; None leaves the files out
    bars: tuple[BarSpec, ...] = ()
    driver: str | None = None
    # power/runtime_status, power/control, power_state; None leaves the file out.
    runtime_status: str | None = None
    power_control: str | None = None
    power_state: str | None = None


# A driver whose module has another name (the rest: the driver's name with _ for -).
DRIVER_MODULES = {"xhci_hcd": "xhci_pci"}


MIB = 1 << 20


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
    cpu_model: str | None = None,
    cores: tuple[tuple[int, ...], ...] | None = None,
    p_cores: str | None = None,
    dmi: dict[str, str] | None = None,
    battery: dict[str, str] | None = None,
    ac_online: str | None = None,
    cmdline: str = "BOOT_IMAGE=/vmlinuz root=/dev/mapper/root ro quiet splash",
    kernel_release: str | None = None,
    kvm: bool = False,
    disable_idle_d3: str | None = None,
    modules_builtin: tuple[str, ...] | None = None,
    connectors: dict[str, str] | None = None,
    kvmfr: bool = False,
) -> Path:
    """Write the parts of /sys and /proc the checks and probe read; ``cpu=None`` leaves out vendor_id.

    ``cores`` lists each core's CPUs (SMT siblings) and writes their topology; without it
    /proc/cpuinfo has two CPUs and sysfs no topology. ``p_cores`` is an Intel hybrid CPU's
    /sys/devices/cpu_core/cpus. ``dmi`` holds /sys/class/dmi/id files, ``battery`` the files
    of /sys/class/power_supply/BAT0, ``ac_online`` the AC adapter's online (an ACPI AC adapter,
    ACPI0003, as drivers/acpi/ac.c registers it: power_supply AC of type Mains).
    ``kernel_release`` is /proc/sys/kernel/osrelease, and
    ``modules_builtin`` that kernel's /lib/modules/RELEASE/modules.builtin; ``kvm`` writes /dev/kvm
    (a plain file: only its existence is read); ``disable_idle_d3`` is vfio-pci's parameter
    (written only when given, as when vfio-pci is loaded). ``connectors`` are DRM connectors of
    the boot VGA device's card1 (``eDP-1``: its ``modes`` text, one mode a line, the preferred
    first, as drm_sysfs.c's modes_show writes them); ``kvmfr`` writes /sys/class/kvmfr/kvmfr0.
    """

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
        if dev.subsystem is not None:
            sub_vendor, sub_device = dev.subsystem.split(":")
            (d / "subsystem_vendor").write_text(f"0x{sub_vendor}\n")
            (d / "subsystem_device").write_text(f"0x{sub_device}\n")
        if dev.bars:
            (d / "resource").write_text(resource_file(dev.bars, base=0x4000000000 + 0x100000000 * len(list(d.parents))))
            for bar in dev.bars:
                if bar.resizable_mib:
                    mask = sum(1 << (size.bit_length() - 1) for size in bar.resizable_mib)
                    (d / f"resource{bar.index}_resize").write_text(f"{mask:016x}\n")
        if dev.driver is not None:
            driver = root / "sys/bus/pci/drivers" / dev.driver
            link(d / "driver", driver)
            if not (driver / "module").is_symlink():
                module = DRIVER_MODULES.get(dev.driver, dev.driver.replace("-", "_"))
                (root / "sys/module" / module).mkdir(parents=True, exist_ok=True)
                link(driver / "module", root / "sys/module" / module)
        for name, value in (
            ("power/runtime_status", dev.runtime_status),
            ("power/control", dev.power_control),
            ("power_state", dev.power_state),
        ):
            if value is not None:
                (d / name).parent.mkdir(exist_ok=True)
                (d / name).write_text(value + "\n")
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
    flags = {"GenuineIntel": " vmx", "AuthenticAMD": " svm"}.get(cpu or "", "")
    numbers = sorted(n for core in cores for n in core) if cores else range(2)
    for n in numbers:
        lines += [f"processor\t: {n}"]
        if cpu is not None:
            lines += [f"vendor_id\t: {cpu}", f"model name\t: {cpu_model or CPUINFO.get(cpu, cpu)}"]
        lines += [f"flags\t\t: fpu vme de pse{flags}", ""]
    (root / "proc/cpuinfo").write_text("\n".join(lines) + "\n")
    (root / "proc/cmdline").write_text(cmdline + "\n")
    if kernel_release is not None:
        (root / "proc/sys/kernel").mkdir(parents=True)
        (root / "proc/sys/kernel/osrelease").write_text(kernel_release + "\n")
        if modules_builtin is not None:
            (root / "lib/modules" / kernel_release).mkdir(parents=True)
            (root / "lib/modules" / kernel_release / "modules.builtin").write_text(
                "".join(m + "\n" for m in modules_builtin)
            )
    if kvm:
        (root / "dev").mkdir(exist_ok=True)
        (root / "dev/kvm").write_text("")
    if disable_idle_d3 is not None:
        (root / "sys/module/vfio_pci/parameters").mkdir(parents=True, exist_ok=True)
        (root / "sys/module/vfio_pci/parameters/disable_idle_d3").write_text(disable_idle_d3 + "\n")
    for core in cores or ():
        for n in core:
            topology = root / f"sys/devices/system/cpu/cpu{n}/topology"
            topology.mkdir(parents=True)
            (topology / "thread_siblings_list").write_text(",".join(map(str, core)) + "\n")
    if p_cores is not None:
        (root / "sys/devices/cpu_core").mkdir(parents=True)
        (root / "sys/devices/cpu_core/cpus").write_text(p_cores + "\n")
    for name, value in (dmi or {}).items():
        (root / "sys/class/dmi/id").mkdir(parents=True, exist_ok=True)
        (root / "sys/class/dmi/id" / name).write_text(value + "\n")
    if battery is not None:
        bat = root / "sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0C0A:00/power_supply/BAT0"
        bat.mkdir(parents=True)
        for name, value in {"type": "Battery", **battery}.items():
            (bat / name).write_text(value + "\n")
        uevent = {"NAME": "BAT0", "TYPE": "Battery", **{k.upper(): v for k, v in battery.items() if k != "type"}}
        power_supply_device(root, bat, uevent)
        link(root / "sys/class/power_supply/BAT0", bat)
    if ac_online is not None:
        ac = root / "sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0003:00/power_supply/AC"
        ac.mkdir(parents=True)
        (ac / "type").write_text("Mains\n")
        (ac / "online").write_text(ac_online + "\n")
        power_supply_device(root, ac, {"NAME": "AC", "TYPE": "Mains", "ONLINE": ac_online})
        link(root / "sys/class/power_supply/AC", ac)
    boot_vga = next((a for a, dev in devices.items() if getattr(dev, "boot_vga", None) == "1"), None)
    for connector, modes in (connectors or {}).items():
        card = (device_dir(boot_vga) if boot_vga else root / "sys/devices/platform/simple-framebuffer.0") / "drm/card1"
        directory = card / f"card1-{connector}"
        directory.mkdir(parents=True)
        (directory / "modes").write_text(modes)
        (directory / "status").write_text("connected\n" if modes else "disconnected\n")
        link(root / "sys/class/drm" / f"card1-{connector}", directory)
    if kvmfr:
        (root / "sys/devices/virtual/kvmfr/kvmfr0").mkdir(parents=True)
        link(root / "sys/class/kvmfr/kvmfr0", root / "sys/devices/virtual/kvmfr/kvmfr0")
    if iommu_groups and any(t in tables for t in ("DMAR", "IVRS")):
        unit = "dmar0" if "DMAR" in tables else "ivhd0"
        (root / "sys/devices/virtual/iommu" / unit).mkdir(parents=True)
        link(root / "sys/class/iommu" / unit, root / "sys/devices/virtual/iommu" / unit)
    return root


def power_supply_device(root: Path, directory: Path, properties: dict[str, str]) -> None:
    """What udev reads of a power supply: its uevent (POWER_SUPPLY_* as power_supply_uevent() writes
    them) and its subsystem link."""
    (directory / "uevent").write_text("".join(f"POWER_SUPPLY_{k}={v}\n" for k, v in properties.items()))
    (directory / "subsystem").symlink_to(os.path.relpath(root / "sys/class/power_supply", directory))


def resource_file(bars: tuple[BarSpec, ...], base: int) -> str:
    """A sysfs "resource" file: start, end, flags per line; lines 0-5 the BARs, 6 the ROM, 7-12 unused."""
    lines = [f"0x{0:016x} 0x{0:016x} 0x{0:016x}"] * 13
    address = base
    for bar in sorted(bars, key=lambda b: b.index):
        flags = 0x200 | (0x2000 if bar.prefetchable else 0) | (0x100000 if bar.is_64bit else 0)
        address = -(-address // bar.size) * bar.size
        lines[bar.index] = f"0x{address:016x} 0x{address + bar.size - 1:016x} 0x{flags:016x}"
        address += bar.size
    return "\n".join(lines) + "\n"


# The x86 boot protocol's setup_data (arch/x86/include/uapi/asm/setup_data.h) and the EFI stub's
# SETUP_PCI payload (struct pci_setup_rom, arch/x86/include/asm/setup_data.h), declared with
# ctypes so the compiler's layout rules (natural alignment, unsigned long = 8 bytes on x86_64)
# come from the C definitions, not from the reader under test.
SETUP_E820_EXT, SETUP_PCI = 0x1, 0x3


class SetupDataHeader(ctypes.Structure):
    _fields_ = [("next", ctypes.c_uint64), ("type", ctypes.c_uint32), ("len", ctypes.c_uint32)]


class PciSetupRom(ctypes.Structure):
    _fields_ = [
        ("data", SetupDataHeader),
        ("vendor", ctypes.c_uint16),
        ("devid", ctypes.c_uint16),
        ("pcilen", ctypes.c_uint64),
        ("segment", ctypes.c_ulong),
        ("bus", ctypes.c_ulong),
        ("device", ctypes.c_ulong),
        ("function", ctypes.c_ulong),
    ]  # then uint8_t romdata[]


def pci_setup_rom(pci_id: str, address: str, rom: bytes, pcilen: int | None = None) -> bytes:
    """What the EFI stub's preserve_pci_rom_image() writes (drivers/firmware/efi/libstub/x86-stub.c),
    header included, for the device ``pci_id`` at ``address`` (0000:01:00.0)."""
    vendor, device = (int(part, 16) for part in pci_id.split(":"))
    segment, bus, rest = address.split(":")
    slot, function = rest.split(".")
    entry = PciSetupRom(
        SetupDataHeader(0, SETUP_PCI, ctypes.sizeof(PciSetupRom) - ctypes.sizeof(SetupDataHeader) + len(rom)),
        vendor, device, len(rom) if pcilen is None else pcilen,
        int(segment, 16), int(bus, 16), int(slot, 16), int(function, 16),
    )  # fmt: skip
    return bytes(entry) + rom


def build_setup_data(root: Path, entries: list[tuple[int, bytes]]) -> None:
    """/sys/kernel/boot_params/setup_data/N as arch/x86/kernel/ksysfs.c shows each (type, entry):
    ``type`` as 0x%x, ``data`` the bytes after the setup_data header."""
    directory = root / "sys/kernel/boot_params/setup_data"
    directory.mkdir(parents=True)
    header = ctypes.sizeof(SetupDataHeader)
    for number, (kind, entry) in enumerate(entries):
        (directory / str(number)).mkdir()
        (directory / str(number) / "type").write_text(f"0x{kind:x}\n")
        (directory / str(number) / "data").write_bytes(entry[header:])


def changed(devices: dict[str, Dev], address: str, **changes: object) -> dict[str, Dev]:
    return {**devices, address: dataclasses.replace(devices[address], **changes)}


def without(devices: dict[str, Dev], *addresses: str) -> dict[str, Dev]:
    return {a: d for a, d in devices.items() if a not in addresses}


if __name__ == "__main__":  # python3 -m tests.sysfs LAYOUT DIR: a fixture tree to run `gpupass probe --root DIR` on
    import sys

    from .layouts import LAYOUTS

    if len(sys.argv) != 3 or sys.argv[1] not in LAYOUTS:
        sys.exit(f"usage: python3 -m tests.sysfs {{{','.join(LAYOUTS)}}} DIR")
    print(LAYOUTS[sys.argv[1]].build(Path(sys.argv[2])))


@dataclass(frozen=True)
class Identity:
    """What identifies a laptop's owner, as a real one has it: DMI serials and UUID, the host
    name, the machine id, a network interface's MAC address, a person's account and home
    directory, a battery serial, and an IP address in /etc/hosts. Every value is for a test to
    look for in what should never contain it."""

    product_serial: str = "PF3XK9ZQ"
    board_serial: str = "BSN0CW2347A0N5K"
    product_uuid: str = "4c4c4544-0042-3510-8051-b4c04f4e3332"
    hostname: str = "aurora-alice"
    machine_id: str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    interface: str = "wlp0s20f3"
    mac: str = "3c:22:fb:12:34:56"
    user: str = "alice"
    home: str = "/home/alice"
    battery_serial: str = "41217"
    ip: str = "192.168.1.20"

    def salts(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "interface"}


def build_identity(root: Path, identity: Identity = Identity()) -> Path:
    """Write ``identity`` where Linux keeps it, into a tree from build_sysfs."""
    files = {
        "sys/class/dmi/id/product_serial": identity.product_serial,
        "sys/class/dmi/id/board_serial": identity.board_serial,
        "sys/class/dmi/id/chassis_serial": "Chassis Serial Number",  # firmware's placeholder
        "sys/class/dmi/id/product_uuid": identity.product_uuid,
        "etc/hostname": identity.hostname,
        "proc/sys/kernel/hostname": identity.hostname,
        "etc/machine-id": identity.machine_id,
        "etc/hosts": f"127.0.0.1\tlocalhost\n{identity.ip}\t{identity.hostname}",
        "etc/passwd": "\n".join(
            (
                "root:x:0:0:root:/root:/bin/bash",
                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
                f"{identity.user}:x:1000:1000:{identity.user.title()},,,:{identity.home}:/bin/bash",
                "libvirt-qemu:x:64055:108:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin",
            )
        ),
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text + "\n")
    device = root / "sys/devices/pci0000:00/0000:00:14.3/net" / identity.interface
    device.mkdir(parents=True)
    (device / "address").write_text(identity.mac + "\n")
    (root / "sys/class/net").mkdir(parents=True, exist_ok=True)
    (root / "sys/class/net" / identity.interface).symlink_to(device)
    (root / "sys/class/net/lo").mkdir()
    (root / "sys/class/net/lo/address").write_text("00:00:00:00:00:00\n")
    battery = root / "sys/class/power_supply/BAT0"
    if battery.exists():
        (battery / "serial_number").write_text(identity.battery_serial + "\n")
    return root


# Device nodes and processes (gpupass gpu holders) --------------------------------------------
# Major numbers from the kernel's Documentation/admin-guide/devices.txt (DRM 226, ALSA 116,
# frame buffer 29) and NVIDIA's driver README (195); VFIO's are dynamic (any free major).


def class_device(root: Path, address: str, entry: str, major: int, minor: int) -> None:
    """A class device under a PCI function's directory (``drm/card1``, ``sound/card0/controlC0``,
    ``graphics/fb0``, ``vfio-dev/vfio0``), with the ``dev`` file its device number is read from."""
    directory = Path(os.path.realpath(root / "sys/bus/pci/devices" / address)) / entry
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dev").write_text(f"{major}:{minor}\n")


def char_device(root: Path, name: str, major: int, minor: int) -> Path:
    """A real character device node at ``root`` + ``name`` (tests run as root): its st_rdev is real."""
    path = root / name.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o600 | 0o020000, os.makedev(major, minor))
    return path


def process(root: Path, pid: int, command: str, uid: int, fds: dict[int, str], argv0: str | None = None) -> None:
    """/proc/PID as the kernel shows it: comm, cmdline, owned by ``uid``, and fd/N symlinks to
    ``fds[N]`` under ``root`` (stat() through them reaches the fixture's node, as through /proc
    it reaches the open file; a `` (deleted)`` target is a node of that name standing in for the
    unlinked one)."""
    proc = root / "proc" / str(pid)
    (proc / "fd").mkdir(parents=True)
    (proc / "comm").write_text(command[:15] + "\n")
    (proc / "cmdline").write_text((argv0 or command) + "\0")
    for fd, target in fds.items():
        (proc / "fd" / str(fd)).symlink_to(target if target.startswith(("socket:", "pipe:")) else f"{root}{target}")
    os.chown(proc, uid, uid)
