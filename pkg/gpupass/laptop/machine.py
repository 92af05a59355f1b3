"""The machine as sysfs and procfs show it, read once into a frozen snapshot.

``read(root)`` is the only code in gpupass that reads the machine's PCI devices, IOMMU
groups, CPUs, DMI strings, batteries and firmware tables; ``gpupass check`` (and the
package's preinst), ``gpupass probe`` and ``gpupass doctor`` are functions of the
snapshot it returns. ``root`` is ``/`` on a laptop and a fixture tree in the tests.

Standard library only: the preinst embeds this module. Nothing is written. Reading a
device's ``resourceN_resize`` wakes it from runtime suspend (the kernel reads its config
space), so every device's power state is read first, and ``read(root, rebar=False)`` (what
``gpupass check`` uses: it needs no BAR sizes) leaves those files alone; every other file
read here is served from the kernel's memory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

PCI_DEVICES = "sys/bus/pci/devices"
IOMMU_GROUPS = "sys/kernel/iommu_groups"
ACPI_TABLES = "sys/firmware/acpi/tables"
CLASS_IOMMU = "sys/class/iommu"
CPUINFO = "proc/cpuinfo"
CMDLINE = "proc/cmdline"
KERNEL_RELEASE = "proc/sys/kernel/osrelease"  # what uname -r says
KVM_DEVICE = "dev/kvm"
VFIO_PCI_DISABLE_IDLE_D3 = "sys/module/vfio_pci/parameters/disable_idle_d3"  # Y/N; absent: vfio-pci not loaded
CPU_TOPOLOGY = "sys/devices/system/cpu"
# Intel hybrid CPUs list their performance cores here (and efficiency cores under cpu_atom).
HYBRID_P_CORES = "sys/devices/cpu_core/cpus"
DMI = "sys/class/dmi/id"
POWER_SUPPLY = "sys/class/power_supply"
CLASS_DRM = "sys/class/drm"  # connectors: card1-eDP-1 (an internal panel), card1-HDMI-A-1, ...
CLASS_KVMFR = "sys/class/kvmfr"  # Looking Glass's kvmfr module, while loaded: kvmfr0, ...
PROCESSES = "proc"
# What QEMU has among its open files while a VM has a device: the device's IOMMU group, or
# with the iommufd backend (Linux 6.6+, libvirt's <driver iommufd='yes'/>) the device's own file.
VFIO_FILE = re.compile(r"/dev/vfio/(?:\d+|devices/vfio\d+)")

PCI_ADDRESS = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
# Flags of a line of a PCI device's sysfs "resource" file (include/linux/ioport.h).
IORESOURCE_MEM = 0x200
IORESOURCE_PREFETCH = 0x2000
IORESOURCE_MEM_64 = 0x100000
BAR_COUNT = 6  # lines 0-5 of "resource" are the BARs; then the ROM and any bridge windows
MIB = 1 << 20


@dataclass(frozen=True)
class Bar:
    """A memory BAR: its current size, and every size Resizable BAR lets it take."""

    index: int
    size: int  # bytes
    is_64bit: bool
    prefetchable: bool
    resizable_sizes: tuple[int, ...] = ()  # bytes, ascending; empty without Resizable BAR

    @property
    def largest(self) -> int:
        return max((self.size, *self.resizable_sizes))


@dataclass(frozen=True)
class PciDevice:
    address: str  # 0000:01:00.0
    vendor: str | None  # "10de", None when unreadable
    device: str | None
    subsystem_vendor: str | None
    subsystem_device: str | None
    class_code: str  # sysfs "class", e.g. "0x030000"; "unknown" when unreadable
    driver: str | None  # the bound driver's name
    boot_vga: bool | None  # None: no boot_vga file (only VGA-class devices have one)
    upstream: tuple[str, ...]  # the bridges above it, nearest first
    bars: tuple[Bar, ...]
    iommu_group: str | None
    runtime_status: str | None  # power/runtime_status: active, suspended, ...
    power_control: str | None  # power/control: auto or on
    power_state: str | None  # power_state: D0, D3hot, D3cold
    # The module of the bound driver (driver/module): what a softdep names (driver xhci_hcd is module xhci_pci).
    driver_module: str | None = None
    vfio_device: str | None = None  # vfio-dev/vfioN while bound to vfio-pci: /dev/vfio/devices/vfioN
    modalias: str | None = None  # what modprobe loads the device's driver by: pci:v000010DEd000025A2...

    @property
    def id(self) -> str | None:
        return f"{self.vendor}:{self.device}" if self.vendor and self.device else None

    @property
    def subsystem_id(self) -> str | None:
        if self.subsystem_vendor and self.subsystem_device:
            return f"{self.subsystem_vendor}:{self.subsystem_device}"
        return None

    @property
    def pci_class(self) -> str:
        """Base class and subclass, e.g. "0x0300"."""
        return self.class_code[:6]

    @property
    def slot(self) -> str:
        """The address without the function: 0000:01:00."""
        return self.address.rsplit(".", 1)[0]

    @property
    def function(self) -> int:
        return int(self.address.rsplit(".", 1)[1])


@dataclass(frozen=True)
class Cpu:
    number: int
    core: tuple[int, ...]  # this CPU and its SMT siblings, ascending


@dataclass(frozen=True)
class Dmi:
    vendor: str | None
    product: str | None
    version: str | None
    family: str | None
    chassis_type: int | None  # SMBIOS chassis type: 9 laptop, 10 notebook, 3 desktop, ...


@dataclass(frozen=True)
class Battery:
    name: str  # BAT0
    design_mwh: int | None
    full_mwh: int | None
    design_voltage_mv: int | None
    model: str | None
    manufacturer: str | None
    technology: str | None
    status: str | None = None  # Charging, Discharging, Full, Not charging
    capacity_percent: int | None = None  # capacity: the charge now
    power_uw: int | None = None  # the draw now: power_now, or current_now × voltage_now


@dataclass(frozen=True)
class Mains:
    """An AC adapter (power_supply of type Mains)."""

    name: str  # AC, ADP1, ACAD
    online: bool | None  # None: unreadable


@dataclass(frozen=True)
class PowerSupplies:
    """The batteries and AC adapters, on their own: what ``gpupass power`` reads again while it waits."""

    batteries: tuple[Battery, ...] = ()
    mains: tuple[Mains, ...] = ()

    @property
    def on_ac(self) -> bool | None:
        """True when an AC adapter is online, False when every one is offline, None without one."""
        known = [m.online for m in self.mains if m.online is not None]
        return any(known) if known else None


@dataclass(frozen=True)
class VfioUser:
    """A process with a VFIO file open (/dev/vfio/GROUP or /dev/vfio/devices/vfioN): it holds those devices."""

    pid: int
    command: str | None  # /proc/PID/comm
    path: str


@dataclass(frozen=True)
class Panel:
    """An internal panel's DRM connector (eDP): its name and preferred mode."""

    connector: str  # card1-eDP-1
    mode: str | None  # the first line of modes (the preferred one), 2560x1600; None: no modes


@dataclass(frozen=True)
class Machine:
    pci: tuple[PciDevice, ...]  # by address
    iommu_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group -> addresses, sorted
    unlistable_groups: tuple[str, ...] = ()  # groups whose devices/ could not be listed
    cpu_vendor_id: str | None = None  # GenuineIntel, AuthenticAMD
    cpu_model: str | None = None
    cpu_flags: tuple[str, ...] = ()
    cpus: tuple[Cpu, ...] = ()
    performance_cores: tuple[int, ...] | None = None  # Intel hybrid P-core CPUs; None elsewhere
    dmi: Dmi = Dmi(None, None, None, None, None)
    batteries: tuple[Battery, ...] = ()
    mains: tuple[Mains, ...] = ()
    acpi_tables: tuple[str, ...] = ()
    iommu_units: tuple[str, ...] = ()  # /sys/class/iommu entries: dmar0, ivhd0, ...
    cmdline: str | None = None
    kernel_release: str | None = None
    kvm_device: bool = False  # /dev/kvm exists
    vfio_pci_disable_idle_d3: str | None = None
    vfio_users: tuple[VfioUser, ...] = ()  # by pid
    unlisted_processes: int = 0  # processes whose open files could not be listed (not root)
    panels: tuple[Panel, ...] = ()  # eDP connectors, by name
    kvmfr_devices: tuple[str, ...] = ()  # /sys/class/kvmfr entries (kvmfr0): the module is loaded

    def device(self, address: str) -> PciDevice | None:
        return next((d for d in self.pci if d.address == address), None)

    @property
    def power(self) -> PowerSupplies:
        return PowerSupplies(self.batteries, self.mains)

    @property
    def has_iommu_groups(self) -> bool:
        return bool(self.iommu_groups or self.unlistable_groups)


# Reading ------------------------------------------------------------------------------


def read(root: Path = Path("/"), *, rebar: bool = True, processes: bool = True) -> Machine:
    """Read the machine under ``root`` once; never writes. ``rebar=False``: no Resizable BAR
    sizes, and no device woken from runtime suspend to read them. ``processes=False``: no
    look at which processes hold VFIO files open."""
    groups, unlistable = _iommu_groups(root)
    cpuinfo = _cpuinfo(root)
    supplies = power_supplies(root)
    users, unlisted = _vfio_users(root) if processes else ((), 0)
    return Machine(
        pci=_pci_devices(root, rebar),
        iommu_groups=groups,
        unlistable_groups=unlistable,
        cpu_vendor_id=cpuinfo.get("vendor_id"),
        cpu_model=cpuinfo.get("model name"),
        cpu_flags=tuple(cpuinfo.get("flags", "").split()),
        cpus=_cpus(root, cpuinfo.get("processors", "")),
        performance_cores=cpu_list(read_text(root / HYBRID_P_CORES)),
        dmi=_dmi(root),
        batteries=supplies.batteries,
        mains=supplies.mains,
        acpi_tables=entry_names(root / ACPI_TABLES),
        iommu_units=entry_names(root / CLASS_IOMMU),
        cmdline=read_text(root / CMDLINE),
        kernel_release=read_text(root / KERNEL_RELEASE) or None,
        kvm_device=os.path.lexists(root / KVM_DEVICE),
        vfio_pci_disable_idle_d3=read_text(root / VFIO_PCI_DISABLE_IDLE_D3),
        vfio_users=users,
        unlisted_processes=unlisted,
        panels=panels(root),
        kvmfr_devices=entry_names(root / CLASS_KVMFR),
    )


def panels(root: Path = Path("/")) -> tuple[Panel, ...]:
    """The internal panels' connectors (``*-eDP-*``) and their preferred modes."""
    found = []
    for name in entry_names(root / CLASS_DRM):
        if "-eDP-" in name:
            modes = (read_text(root / CLASS_DRM / name / "modes") or "").splitlines()
            found.append(Panel(name, modes[0].strip() if modes else None))
    return tuple(found)


def kvmfr_devices(root: Path = Path("/")) -> tuple[str, ...]:
    """Looking Glass's kvmfr devices (kvmfr0, ...): empty when the module is not loaded."""
    return entry_names(root / CLASS_KVMFR)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def entry_names(directory: Path, prefix: str = "") -> tuple[str, ...]:
    try:
        return tuple(sorted(n for n in os.listdir(directory) if n.startswith(prefix)))
    except OSError:
        return ()


def _link_name(path: Path) -> str | None:
    """The last component of a symlink's target (an absolute target would leave ``root``)."""
    try:
        return Path(os.readlink(path)).name
    except OSError:
        return None


def _hex_id(path: Path) -> str | None:
    try:
        return f"{int(read_text(path) or '', 16):04x}"
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _pci_devices(root: Path, rebar: bool) -> tuple[PciDevice, ...]:
    addresses = entry_names(root / PCI_DEVICES)
    # Before anything that could wake a device: what runtime power management left it in.
    power_files = ("power/runtime_status", "power/control", "power_state")
    power = {a: tuple(read_text(root / PCI_DEVICES / a / name) for name in power_files) for a in addresses}
    devices = []
    for address in addresses:
        link = root / PCI_DEVICES / address
        d = link  # reads go through the link; the kernel's links are relative, so fixtures resolve too
        real = Path(os.path.realpath(link))
        chain = [part for part in real.parts if PCI_ADDRESS.fullmatch(part)]
        upstream = tuple(reversed(chain[:-1])) if chain and chain[-1] == address else ()
        boot_vga = read_text(d / "boot_vga")
        devices.append(
            PciDevice(
                address=address,
                vendor=_hex_id(d / "vendor"),
                device=_hex_id(d / "device"),
                subsystem_vendor=_hex_id(d / "subsystem_vendor"),
                subsystem_device=_hex_id(d / "subsystem_device"),
                class_code=read_text(d / "class") or "unknown",
                driver=_link_name(d / "driver"),
                boot_vga=None if boot_vga is None else boot_vga == "1",
                upstream=upstream,
                bars=_bars(d, rebar),
                iommu_group=_link_name(d / "iommu_group"),
                runtime_status=power[address][0],
                power_control=power[address][1],
                power_state=power[address][2],
                driver_module=_link_name(d / "driver/module"),
                vfio_device=next(iter(entry_names(d / "vfio-dev")), None),
                modalias=read_text(d / "modalias"),
            )
        )
    return tuple(devices)


def _bars(device: Path, rebar: bool) -> tuple[Bar, ...]:
    bars = []
    for index, line in enumerate((read_text(device / "resource") or "").splitlines()[:BAR_COUNT]):
        try:
            start, end, flags = (int(word, 16) for word in line.split())
        except ValueError:
            continue
        if not flags & IORESOURCE_MEM or end <= start:
            continue
        # resourceN_resize: bit n set = the BAR can be 2^n MiB (pci_rebar_get_possible_sizes).
        try:
            mask = int(read_text(device / f"resource{index}_resize") or "0", 16) if rebar else 0
        except ValueError:
            mask = 0
        sizes = tuple(MIB << n for n in range(mask.bit_length()) if mask >> n & 1)
        bars.append(
            Bar(index, end - start + 1, bool(flags & IORESOURCE_MEM_64), bool(flags & IORESOURCE_PREFETCH), sizes)
        )
    return tuple(bars)


def _iommu_groups(root: Path) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    groups: dict[str, tuple[str, ...]] = {}
    unlistable = []
    for group in sorted(entry_names(root / IOMMU_GROUPS), key=lambda g: (len(g), g)):
        try:
            groups[group] = tuple(sorted(p.name for p in (root / IOMMU_GROUPS / group / "devices").iterdir()))
        except OSError:
            unlistable.append(group)
    return groups, tuple(unlistable)


def _vfio_users(root: Path) -> tuple[tuple[VfioUser, ...], int]:
    """Every process with a VFIO group or device file open, and how many processes' open files
    could not be listed (another user's, unless root). Processes that end meanwhile are skipped."""
    users, unlisted = [], 0
    for pid in sorted(int(n) for n in entry_names(root / PROCESSES) if n.isdigit()):
        fds = root / PROCESSES / str(pid) / "fd"
        try:
            names = os.listdir(fds)
        except PermissionError:
            unlisted += 1
            continue
        except OSError:
            continue
        held = set()
        for name in names:
            try:
                target = os.readlink(fds / name)
            except OSError:
                continue
            if VFIO_FILE.fullmatch(target):
                held.add(target)
        command = read_text(root / PROCESSES / str(pid) / "comm") if held else None
        users += [VfioUser(pid, command, path) for path in sorted(held)]
    return tuple(users), unlisted


def _cpuinfo(root: Path) -> dict[str, str]:
    """The first processor's vendor_id, model name and flags, and every processor number."""
    info: dict[str, str] = {}
    processors = []
    for line in (read_text(root / CPUINFO) or "").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors.append(value)
        elif key in ("vendor_id", "model name", "flags") and value and key not in info:
            info[key] = value
    info["processors"] = " ".join(processors)
    return info


def cpu_list(text: str | None) -> tuple[int, ...] | None:
    """The kernel's CPU list syntax, 0-3,8,10-11."""
    if not text:
        return None
    cpus: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.partition("-")
            cpus.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        return None
    return tuple(cpus)


def _cpus(root: Path, processors: str) -> tuple[Cpu, ...]:
    numbers = sorted({int(n) for n in processors.split() if n.isdigit()})
    cpus = []
    for n in numbers:
        siblings = cpu_list(read_text(root / CPU_TOPOLOGY / f"cpu{n}/topology/thread_siblings_list"))
        cpus.append(Cpu(n, tuple(sorted(siblings)) if siblings and n in siblings else (n,)))
    return tuple(cpus)


def _dmi(root: Path) -> Dmi:
    def text(name: str) -> str | None:
        value = read_text(root / DMI / name)
        return value or None

    return Dmi(
        vendor=text("sys_vendor"),
        product=text("product_name"),
        version=text("product_version"),
        family=text("product_family"),
        chassis_type=_int(text("chassis_type")),
    )


def power_supplies(root: Path = Path("/")) -> PowerSupplies:
    """The batteries and AC adapters under ``root``: files the kernel serves from memory, readable by anyone."""
    batteries, mains = [], []
    for name in entry_names(root / POWER_SUPPLY):
        supply = root / POWER_SUPPLY / name
        kind = read_text(supply / "type")
        if kind == "Mains":
            online = read_text(supply / "online")
            mains.append(Mains(name, None if online not in ("0", "1") else online == "1"))
        elif name.startswith("BAT") or kind == "Battery":
            batteries.append(_battery(name, supply))
    return PowerSupplies(tuple(batteries), tuple(mains))


def _battery(name: str, supply: Path) -> Battery:
    def number(attribute: str, supply: Path = supply) -> int | None:
        return _int(read_text(supply / attribute))

    voltage_uv = number("voltage_min_design")
    if number("energy_full_design") is not None:  # µWh
        design = _scale(number("energy_full_design"), 1000)
        full = _scale(number("energy_full"), 1000)
    else:  # charge in µAh: energy = charge × design voltage
        design = _energy(number("charge_full_design"), voltage_uv)
        full = _energy(number("charge_full"), voltage_uv)
    power = number("power_now")
    if power is None and number("current_now") is not None and number("voltage_now") is not None:
        power = round(number("current_now") * number("voltage_now") / 10**6)  # µA × µV = 10^-6 µW
    return Battery(
        name=name,
        design_mwh=design,
        full_mwh=full,
        design_voltage_mv=_scale(voltage_uv, 1000),
        model=read_text(supply / "model_name") or None,
        manufacturer=read_text(supply / "manufacturer") or None,
        technology=read_text(supply / "technology") or None,
        status=read_text(supply / "status") or None,
        capacity_percent=number("capacity"),
        power_uw=None if power is None else abs(power),
    )


def _scale(value: int | None, divisor: int) -> int | None:
    return None if value is None else round(value / divisor)


def _energy(charge_uah: int | None, voltage_uv: int | None) -> int | None:
    if charge_uah is None or voltage_uv is None:
        return None
    return round(charge_uah * voltage_uv / 10**9)  # µAh × µV = 10^-12 Wh = 10^-9 mWh
