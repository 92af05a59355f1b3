"""``gpupass probe``: a model for this laptop, from one snapshot of the machine.

``probe(machine)`` is a pure function of the snapshot (machine.py): it finds the dGPU
(a display-class device that is not the boot display), every function of its slot, checks
its IOMMU group, and takes the rest of the model from the machine (CPU vendor and pinning
set, the 64-bit MMIO window its BARs need, SMBIOS strings, the battery). Every value carries
the place it came from, which the TOML output prints as a comment. What cannot work (the
only GPU, a dGPU that drives the display, no IOMMU in the firmware, a shared IOMMU group)
is refused, with every reason at once, and nothing is written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ...errors import GpupassError
from ...model import IOMMU_ARG, Vm, toml_value
from ...schema import RESOLUTION
from ..machine import IOMMU_GROUPS, PCI_DEVICES, Machine, PciDevice
from ..preflight import (
    CPU_VENDORS,
    IOMMU_TABLES,
    PCI_CLASS_NAMES,
    group_companions,
    intruder_problem,
    no_iommu_table_problem,
)

DISPLAY_CLASSES = {"0x0300": "VGA controller", "0x0302": "3D controller", "0x0380": "display controller"}
# The role of each other function of the dGPU's slot, by PCI class.
FUNCTION_ROLES = {"0x0403": "audio", "0x0401": "audio", "0x0c03": "usb", "0x0c80": "serial-bus"}
# The host drivers that would claim each function first: each gets "softdep X pre: vfio-pci".
GPU_DRIVERS = {"10de": ("nouveau", "nvidia", "nvidia_drm", "nvidia_modeset"), "1002": ("amdgpu",)}
ROLE_DRIVERS = {
    "audio": ("snd_hda_intel",),
    "usb": ("xhci_pci",),
    "serial-bus": ("i2c_nvidia_gpu", "ucsi_ccg"),  # Turing's USB-C UCSI controller
}
# SMBIOS chassis types of portable machines (DMTF DSP0134, 7.4.1).
LAPTOP_CHASSIS = {8: "portable", 9: "laptop", 10: "notebook", 14: "sub notebook", 31: "convertible", 32: "detachable"}
CHASSIS_NAMES = {3: "desktop", 4: "low profile desktop", 6: "mini tower", 7: "tower", 13: "all in one", 35: "mini PC"}

# What the model takes when the machine does not say (the reference laptop's window and defaults).
MIN_MMIO64_MB = 65536
MAX_MMIO64_MB = 1048576
DEFAULT_BATTERY = {"design_capacity_mwh": 50000, "full_capacity_mwh": 50000, "design_voltage_mv": 15400}
DEFAULT_SMBIOS = {"version": "1.0", "family": "Notebook"}
MAX_PINNED_CPUS = 64
MAX_VCPUS = 64
REFUSED_HINT = "nothing was written; gpupass cannot set this machine up for dGPU passthrough as it is"


class ProbeRefused(GpupassError):
    """The machine cannot pass a dGPU through: one line per reason."""


@dataclass(frozen=True)
class Field:
    key: str
    value: Any
    source: str  # where the value came from, printed as a comment


@dataclass(frozen=True)
class Table:
    name: str  # "" for the top level; "gpu.functions" is an array of tables
    fields: tuple[Field, ...]
    array: bool = False


@dataclass(frozen=True)
class Probed:
    """A model as probe found it: tables in model order, each value with its source."""

    model_id: str  # proposed, from DMI
    tables: tuple[Table, ...]
    warnings: tuple[str, ...]
    description: str  # what was probed, for the header

    def data(self) -> dict[str, Any]:
        """The model as TOML-shaped data (what tomllib reads back from ``toml()``)."""
        out: dict[str, Any] = {}
        for table in self.tables:
            values = {f.key: f.value for f in table.fields}
            if not table.name:
                out.update(values)
                continue
            parent, _, leaf = table.name.rpartition(".")
            target = out.setdefault(parent, {}) if parent else out
            if table.array:
                target.setdefault(leaf, []).append(values)
            else:
                target[leaf] = values
        return out

    def sources(self) -> dict[str, str]:
        out = {}
        counters: dict[str, int] = {}
        for table in self.tables:
            prefix = table.name
            if table.array:
                n = counters[table.name] = counters.get(table.name, -1) + 1
                prefix = f"{table.name}[{n}]"
            for f in table.fields:
                out[f"{prefix}.{f.key}" if prefix else f.key] = f.source
        return out

    def toml(self) -> str:
        lines = [
            f"# gpupass probe: a model for this {self.description}, read from the machine itself.",
            f"# Save it as models/{self.model_id}.toml (the file name is the model id, change it at will),",
            f"# then: python3 -m gpupass validate {self.model_id}. Each value says where it came from.",
        ]
        lines += [f"# warning: {w}" for w in self.warnings]
        for table in self.tables:
            if table.name:
                lines += ["", f"[[{table.name}]]" if table.array else f"[{table.name}]"]
            lines += [f"{f.key} = {toml_value(f.value)}  # {_one_line(f.source)}" for f in table.fields]
        return "\n".join(lines) + "\n"

    def json(self) -> str:
        document = {
            "model_id": self.model_id,
            "model": self.data(),
            "sources": self.sources(),
            "warnings": list(self.warnings),
        }
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# Probing ------------------------------------------------------------------------------


def probe(machine: Machine) -> Probed:
    """The model for ``machine``, or ProbeRefused naming every reason it cannot be made."""
    problems: list[str] = []
    warnings: list[str] = []

    vendor = CPU_VENDORS.get(machine.cpu_vendor_id or "")
    if machine.cpu_vendor_id is None:
        problems.append("cannot tell the CPU vendor: no vendor_id in /proc/cpuinfo")
    elif vendor is None:
        problems.append(f"this CPU is {machine.cpu_vendor_id}, neither Intel nor AMD")
    elif IOMMU_TABLES[vendor][0] not in machine.acpi_tables:
        problems.append(
            f"{no_iommu_table_problem(vendor)} (the package then turns it on with the kernel argument"
            f" {IOMMU_ARG[vendor]})"
        )

    gpu = _find_dgpu(machine, problems)
    functions: list[tuple[PciDevice, str]] = []
    if gpu is not None:
        functions = _functions(machine, gpu, problems)
        _check_groups(machine, [d.address for d, _ in functions], problems, warnings)
    if problems:
        raise ProbeRefused(problems, hint=REFUSED_HINT)
    assert gpu is not None and vendor is not None

    (name, name_source), smbios = _smbios(machine, warnings)
    if machine.dmi.chassis_type not in LAPTOP_CHASSIS:
        kind = CHASSIS_NAMES.get(machine.dmi.chassis_type or 0, "unknown")
        warnings.append(
            f"DMI chassis type {machine.dmi.chassis_type} ({kind}) is not a laptop's: gpupass is made for laptops"
            " whose dGPU has no panel; check every value by hand"
        )
    function_tables = []
    for device, role in functions:
        subsystem = device.subsystem_id
        unknown = subsystem is None or subsystem.startswith("0000:")
        if unknown and role == "gpu":
            warnings.append(
                f"{device.address} has subsystem id {subsystem or 'unreadable'}: the guest will see the GPU"
                " maker's own ids; if the driver stays in Code 43, find the laptop's subsystem id"
                " (lspci -nnv, Windows' device manager) and set subsystem_id"
            )
        if unknown:
            subsystem_value, subsystem_source = "", f"sysfs subsystem_vendor/subsystem_device: {subsystem} (unknown)"
        else:
            subsystem_value, subsystem_source = subsystem, "sysfs subsystem_vendor:subsystem_device"
        function_tables.append(
            Table(
                "gpu.functions",
                (
                    Field("address", device.address, _function_source(device, role)),
                    Field("id", device.id, "sysfs vendor:device"),
                    Field("role", role, f"PCI class {device.class_code} ({_kind(device)})"),
                    Field("subsystem_id", subsystem_value, subsystem_source),
                ),
                array=True,
            )
        )

    cpus, threads, cpu_source = _pinning(machine, vendor)
    vcpus = min(len(cpus) // threads * threads, MAX_VCPUS)
    mmio, mmio_source = _mmio64(functions)
    battery = _battery(machine, warnings)
    softdep = sorted({module for device, role in functions for module in _drivers(device, role)})

    tables = (
        Table(
            "",
            (
                Field("name", name, name_source),
                Field("confirmed", True, "read from this machine by gpupass probe"),
            ),
        ),
        Table(
            "cpu",
            (
                Field("vendor", vendor, f"/proc/cpuinfo vendor_id {machine.cpu_vendor_id}"),
                Field("performance_cpus", cpus, cpu_source),
                Field("threads_per_core", threads, "sysfs topology/thread_siblings_list of those CPUs"),
            ),
        ),
        Table("gpu", (Field("mmio64_mb", mmio, mmio_source),)),
        *function_tables,
        Table(
            "host",
            (
                Field("softdep", softdep, "the host drivers of the passed functions: vfio-pci must bind first"),
                Field("blacklist", [], "none: the host may keep using these drivers for other devices"),
            ),
        ),
        Table(
            "vm",
            (
                Field("memory_mib", 16384, "gpupass default"),
                Field("vcpus", vcpus, f"every pinned CPU, whole cores, at most {MAX_VCPUS}"),
                Field("panel", *_panel(machine, warnings)),
            ),
        ),
        Table("smbios", tuple(Field(k, v, s) for k, (v, s) in smbios.items())),
        Table("battery", tuple(Field(k, v, s) for k, (v, s) in battery.items())),
    )
    return Probed(_model_id(name), tables, tuple(warnings), name)


def _kind(device: PciDevice) -> str:
    return DISPLAY_CLASSES.get(device.pci_class) or PCI_CLASS_NAMES.get(device.pci_class, "device")


def _describe(device: PciDevice) -> str:
    return f"{device.address} {device.id or '?'} ({_kind(device)})"


def _find_dgpu(machine: Machine, problems: list[str]) -> PciDevice | None:
    """The display-class device that is not the boot display (by boot_vga, never by vendor)."""
    displays = [d for d in machine.pci if d.pci_class in DISPLAY_CLASSES]
    if not displays:
        problems.append("no GPU found: no PCI device of class VGA (0x0300), 3D (0x0302) or display (0x0380)")
        return None
    if len(displays) == 1:
        only = displays[0]
        boot = " and the boot display" if only.boot_vga else ""
        problems.append(
            f"{_describe(only)} is the only GPU{boot}: passing it through would leave the host without a display"
            " (gpupass passes through a second, discrete GPU that drives no panel)"
        )
        return None
    boot = [d for d in displays if d.boot_vga]
    candidates = [d for d in displays if not d.boot_vga]
    # An integrated GPU sits on the root bus (no bridge above it); when the only candidates are
    # integrated and the boot display sits behind a bridge, the firmware drives the screen with the dGPU.
    if boot and boot[0].upstream and all(not d.upstream for d in candidates):
        problems.append(
            f"{_describe(boot[0])} is the boot display: passing it through would leave the host without a display"
            f" (set the firmware's graphics mode to hybrid so that the iGPU {candidates[0].address} drives the panel,"
            " then probe again)"
        )
        return None
    discrete = [d for d in candidates if d.upstream] or candidates
    if len(discrete) > 1:
        problems.append(
            "several GPUs could be the dGPU: "
            + ", ".join(_describe(d) for d in discrete)
            + " (gpupass passes one through; disable the others in the firmware setup, then probe again)"
        )
        return None
    return discrete[0]


def _functions(machine: Machine, gpu: PciDevice, problems: list[str]) -> list[tuple[PciDevice, str]]:
    """Every function of the dGPU's slot with its role, the GPU first."""
    functions = [(gpu, "gpu")]
    for device in machine.pci:
        if device.slot != gpu.slot or device is gpu:
            continue
        role = FUNCTION_ROLES.get(device.pci_class)
        if role is None:
            problems.append(
                f"{_describe(device)} shares the dGPU's slot, but gpupass knows no role for class"
                f" {device.class_code} (expected audio 0x0403, USB 0x0c03 or USB-C UCSI 0x0c80)"
            )
            continue
        functions.append((device, role))
    for device, _ in functions:
        if device.id is None:
            problems.append(f"{device.address}: cannot read its vendor/device id from /{PCI_DEVICES}/{device.address}")
    return functions


def _function_source(device: PciDevice, role: str) -> str:
    if role == "gpu":
        boot = "boot_vga 0" if device.boot_vga is False else "no boot_vga file (not VGA-class)"
        behind = f", behind {' > '.join(reversed(device.upstream))}" if device.upstream else ""
        return f"the display-class device that is not the boot display ({boot}){behind}"
    return f"function {device.function} of the dGPU's slot"


def _check_groups(machine: Machine, passed: list[str], problems: list[str], warnings: list[str]) -> None:
    if not machine.has_iommu_groups:
        warnings.append(
            "no IOMMU groups yet (the IOMMU is off until the package's kernel arguments): the group check"
            " waits for `gpupass check` after the first reboot"
        )
        return
    groups: dict[str, None] = {}
    for address in passed:
        group = machine.device(address).iommu_group
        if group is None:
            problems.append(f"{address} is in no IOMMU group although the IOMMU is on")
        else:
            groups[group] = None
    for group in groups:
        if group in machine.unlistable_groups:
            problems.append(f"IOMMU group {group} of the dGPU cannot be listed (/{IOMMU_GROUPS}/{group}/devices)")
            continue
        problems.extend(intruder_problem(machine, group, a) for a in group_companions(machine, group, passed)[1])


def _drivers(device: PciDevice, role: str) -> tuple[str, ...]:
    if role == "gpu":
        return GPU_DRIVERS.get(device.vendor or "", ())
    return ROLE_DRIVERS.get(role, ())


def _pinning(machine: Machine, vendor: str) -> tuple[list[int], int, str]:
    """The CPUs to pin vCPUs to, SMT siblings next to each other, and threads per core."""
    cores = sorted({cpu.core for cpu in machine.cpus}, key=lambda core: core[0])
    if not cores:
        return [0], 1, "no CPU topology in /proc/cpuinfo or sysfs: CPU 0 alone"
    p_cores = set(machine.performance_cores or ())
    chosen = [core for core in cores if set(core) <= p_cores] if vendor == "intel" else []
    if chosen:
        source = "Intel hybrid: the performance cores (/sys/devices/cpu_core/cpus) with their SMT siblings"
    elif len(cores) > 1:
        chosen = [core for core in cores if 0 not in core]
        source = "every core but CPU 0's, left to the host; SMT siblings kept together"
    else:
        chosen = cores
        source = "the only core"
    threads = max(1, min(2, min(len(core) for core in chosen)))
    cpus: list[int] = []
    for core in chosen:
        if len(cpus) + threads > MAX_PINNED_CPUS:
            break
        cpus.extend(core[:threads])
    return cpus, threads, source


def _mmio64(functions: list[tuple[PciDevice, str]]) -> tuple[int, str]:
    """A power of two (MiB) holding every 64-bit BAR at its largest size, twice over."""
    bars = [(d, bar) for d, _ in functions for bar in d.bars if bar.is_64bit]
    total_mib = sum(bar.largest for _, bar in bars) >> 20
    size = MIN_MMIO64_MB
    while size < 2 * total_mib and size < MAX_MMIO64_MB:
        size *= 2
    if not bars:
        return size, f"no 64-bit BARs read: at least {MIN_MMIO64_MB} MiB (the reference setup's window)"
    listed = ", ".join(f"{d.address} BAR{bar.index} {_size(bar.largest)}" for d, bar in bars)
    return size, (
        f"64-bit BARs at their largest Resizable BAR size ({listed}: {total_mib} MiB), doubled for"
        f" headroom, at least {MIN_MMIO64_MB} MiB"
    )


def _size(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def _text(value: str | None, limit: int = 64) -> str | None:
    """A DMI string as a model's free-text field takes it (printable, trimmed, at most ``limit``)."""
    if value is None:
        return None
    text = "".join(c for c in value if c.isprintable()).strip()[:limit].strip()
    return text or None


def _smbios(machine: Machine, warnings: list[str]) -> tuple[tuple[str, str], dict[str, tuple[str, str]]]:
    dmi = machine.dmi
    out: dict[str, tuple[str, str]] = {}
    for key, value, attribute in (
        ("manufacturer", dmi.vendor, "sys_vendor"),
        ("product", dmi.product, "product_name"),
        ("version", dmi.version, "product_version"),
        ("family", dmi.family, "product_family"),
    ):
        text = _text(value)
        if text is not None:
            out[key] = (text, f"DMI {attribute}")
        elif key in DEFAULT_SMBIOS:
            out[key] = (DEFAULT_SMBIOS[key], f"no DMI {attribute}: gpupass default")
        else:
            warnings.append(f"no DMI {attribute}: the guest's SMBIOS {key} is 'Unknown'; set the real one")
            out[key] = ("Unknown", f"no DMI {attribute}")
    manufacturer, product = out["manufacturer"][0], out["product"][0]
    name = product if product.lower().startswith(manufacturer.lower()) else f"{manufacturer} {product}"
    source = "DMI sys_vendor and product_name"
    # Lenovo's product_name is a machine type (82B5); the marketing name is in product_version.
    version = _text(dmi.version)
    if manufacturer.upper() == "LENOVO" and version:
        name = version if version.lower().startswith("lenovo") else f"Lenovo {version}"
        source = "DMI product_version (Lenovo's product_name is the machine type)"
    return (_text(name) or "Unknown", source), out


def _panel(machine: Machine, warnings: list[str]) -> tuple[str, str]:
    """The internal panel's preferred mode, which Looking Glass's shared memory is sized for."""
    for panel in machine.panels:
        if panel.mode and RESOLUTION.check(panel.mode) is None:
            return panel.mode, f"sysfs class/drm/{panel.connector}/modes (the preferred mode)"
    default = Vm.__dataclass_fields__["panel"].default
    seen = ", ".join(f"{p.connector} ({p.mode or 'no modes'})" for p in machine.panels)
    warnings.append(
        f"no internal panel mode in /sys/class/drm/*-eDP-*/modes ({seen or 'no eDP connector'}):"
        f" vm.panel is {default}, what gpupass vm --looking-glass sizes its shared memory for; set yours"
    )
    return default, "gpupass default (no eDP connector with a mode)"


def _model_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    return slug or "laptop"


def _battery(machine: Machine, warnings: list[str]) -> dict[str, tuple[int, str]]:
    found = [b for b in machine.batteries if b.design_mwh]
    if not found:
        warnings.append(
            "no battery found (/sys/class/power_supply/BAT*): the guest's fake battery takes gpupass's default"
            " values; a laptop has a battery, check that this is one"
        )
        return {k: (v, "no battery found: gpupass default") for k, v in DEFAULT_BATTERY.items()}
    b = found[0]
    where = f"/sys/class/power_supply/{b.name}"
    design = min(max(b.design_mwh, 1000), 500000)
    full = min(max(b.full_mwh or design, 1000), design)
    voltage = b.design_voltage_mv
    out = {
        "design_capacity_mwh": (design, f"{where} energy/charge_full_design"),
        "full_capacity_mwh": (full, f"{where} energy/charge_full, at most the design capacity"),
    }
    if voltage and 1000 <= voltage <= 60000:
        out["design_voltage_mv"] = (voltage, f"{where} voltage_min_design")
    else:
        out["design_voltage_mv"] = (DEFAULT_BATTERY["design_voltage_mv"], f"no usable {where} voltage_min_design")
    return out
