"""Pre-flight checks: is this laptop the one the model describes, and can its dGPU be passed through?

Run by the package's preinst (with nothing but python3 on the laptop, so standard library only)
and by hand as ``gpupass check``. Every check only *reads* sysfs and procfs under ``root``
(``/`` on a real system, a fixture tree in the tests) and writes nothing.

A check that fails is a *problem*: the install is refused. Problems become *warnings* (the install
goes on) in a container or chroot, where sysfs shows the build host rather than the laptop, so
image builds still work, and when the user sets ``GPUPASS_FORCE=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..errors import GpupassError

if TYPE_CHECKING:  # only attributes are read, so the preinst needs no model module
    from ..model import Model, PciFunction

FORCE_VARIABLE = "GPUPASS_FORCE"
FORCE_HINT = f"fix the problems above, or set {FORCE_VARIABLE}=1 to install anyway"

CPU_VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}
# The ACPI table through which the firmware describes the IOMMU, and what the firmware calls it.
IOMMU_TABLES = {"intel": ("DMAR", "VT-d"), "amd": ("IVRS", "AMD-Vi")}
PCI_BRIDGE_CLASS = "0x0604"
# Base class + subclass (the first 6 characters of sysfs "class") of devices that commonly share a group.
PCI_CLASS_NAMES = {
    "0x0100": "SCSI controller",
    "0x0101": "IDE controller",
    "0x0106": "SATA controller",
    "0x0108": "NVMe controller",
    "0x0200": "Ethernet controller",
    "0x0280": "network controller",
    "0x0300": "VGA controller",
    "0x0302": "3D controller",
    "0x0380": "display controller",
    "0x0401": "audio device",
    "0x0403": "audio device",
    "0x0600": "host bridge",
    "0x0601": "ISA bridge",
    "0x0c03": "USB controller",
    "0x0c05": "SMBus controller",
    "0x0c80": "serial bus controller",
}

PCI_DEVICES = "sys/bus/pci/devices"
IOMMU_GROUPS = "sys/kernel/iommu_groups"
ACPI_TABLES = "sys/firmware/acpi/tables"
CPUINFO = "proc/cpuinfo"


class PreflightError(GpupassError):
    """The laptop failed the pre-flight checks: one line per problem, hint names GPUPASS_FORCE."""


@dataclass
class CheckReport:
    """What the checks found. Only ``problems`` refuse the install."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return bool(self.problems)

    def raise_if_refused(self) -> None:
        if self.problems:
            raise PreflightError(self.problems, hint=FORCE_HINT)


def detect_container(root: Path = Path("/"), command: tuple[str, ...] = ("systemd-detect-virt", "--container")) -> bool:
    """True inside a container: ``systemd-detect-virt --container`` says so (exit 0).

    Minimal build images often lack systemd; there the marker files docker and podman leave
    decide instead.
    """
    try:
        return subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return any((root / marker).exists() for marker in (".dockerenv", "run/.containerenv"))


def run_checks(
    model: Model,
    root: Path = Path("/"),
    in_container: Callable[[], bool] | bool = detect_container,
    env: Mapping[str, str] = os.environ,
) -> CheckReport:
    """Run every check against the system under ``root``; never writes anything."""
    report = CheckReport()
    found: list[str] = []  # refusals, before deciding whether they only warn
    container = in_container() if callable(in_container) else bool(in_container)
    chroot = not _has_pci_devices(root)
    present: set[str] = set()  # model functions found at their addresses

    if container:
        report.warnings.append(
            "running in a container: these checks see the build host, not the laptop, so problems are only"
            " warnings and the image build goes on (run `gpupass check` on the laptop)"
        )
    if chroot:
        report.warnings.append(
            f"no PCI devices under /{PCI_DEVICES} (a chroot?): the PCI device and IOMMU group checks are skipped"
            " and problems are only warnings (run `gpupass check` on the laptop)"
        )
    else:
        present = _check_functions(model, root, report, found)
        _check_boot_vga(model.gpu_function, root, present, report, found)
    cpu_vendor = _check_cpu_vendor(model, root, report, found)
    _check_iommu_table(cpu_vendor or model.cpu.vendor, root, report, found)
    if not chroot:
        _check_iommu_groups(model, root, present, report, found)

    forced = env.get(FORCE_VARIABLE) == "1"
    if container or chroot:
        report.warnings.extend(found)
    elif forced and found:
        report.warnings.append(f"{FORCE_VARIABLE}=1: installing despite {_count(len(found), 'problem')}:")
        report.warnings.extend(found)
    else:
        report.problems.extend(found)
    if forced and not found:
        report.notes.append(f"{FORCE_VARIABLE}=1 is set, but nothing needed forcing")
    return report


def cli(
    model: Model,
    root: Path = Path("/"),
    *,
    in_container: Callable[[], bool] | bool = detect_container,
    env: Mapping[str, str] = os.environ,
    out: TextIO | None = None,
) -> int:
    """``gpupass check``: print the report; 0 when the install may go on, 1 when it is refused."""
    out = out or sys.stdout
    report = run_checks(model, root, in_container, env)
    print(f"gpupass check: {model.name} ({model.package})", file=out)
    for kind, lines in (("ok", report.passed), ("note", report.notes), ("warning", report.warnings)):
        for line in lines:
            print(f"{kind}: {line}", file=out)
    try:
        report.raise_if_refused()
    except PreflightError as e:
        for line in e.problems:
            print(f"error: {line}", file=out)
        print(f"hint: {e.hint}", file=out)
        print(f"refused: {_count(len(e.problems), 'problem')}", file=out)
        return 1
    suffix = f" with {_count(len(report.warnings), 'warning')}" if report.warnings else ""
    print(f"pre-flight checks passed{suffix}", file=out)
    return 0


def preinst(model: Model) -> int:
    """The package's preinst: the same report on stderr, where dpkg shows it; 1 refuses the install."""
    return cli(model, out=sys.stderr)


# The checks ---------------------------------------------------------------------------


def _check_functions(model: Model, root: Path, report: CheckReport, found: list[str]) -> set[str]:
    """Each function is at its address with its id; returns the addresses where a device exists."""
    present = set()
    for f in model.gpu.functions:
        device = root / PCI_DEVICES / f.address
        if not device.is_dir():
            found.append(
                f"{f.address}: no PCI device here (the model expects the {f.role} function {f.id};"
                " is the dGPU switched off in the firmware setup?)"
            )
            continue
        present.add(f.address)
        actual = _pci_id(device)
        if actual is None:
            found.append(f"{f.address}: cannot read its vendor/device id from /{PCI_DEVICES}/{f.address}")
        elif actual != f.id:
            found.append(
                f"{f.address} is {actual}, the model expects {f.id} (its {f.role} function): is this a {model.name}?"
            )
        else:
            report.passed.append(f"{f.address} is {f.id} ({f.role})")
    return present


def _check_boot_vga(gpu: PciFunction, root: Path, present: set[str], report: CheckReport, found: list[str]) -> None:
    if gpu.address not in present:
        return
    # Only VGA-class devices have boot_vga; a 3D controller without it cannot be the boot display.
    if _read(root / PCI_DEVICES / gpu.address / "boot_vga") == "1":
        found.append(
            f"{gpu.address} is the boot VGA device: passing it through would leave the host without a display"
            " (set the firmware's graphics mode to hybrid so that the iGPU drives the panel)"
        )
    else:
        report.passed.append(f"{gpu.address} is not the boot VGA device (the host keeps its display)")


def _check_cpu_vendor(model: Model, root: Path, report: CheckReport, found: list[str]) -> str | None:
    """The CPU vendor (intel/amd) when it is known, whether or not it matches the model."""
    vendor_id = _cpuinfo_vendor(root / CPUINFO)
    if vendor_id is None:
        found.append(f"cannot tell the CPU vendor: no vendor_id in /{CPUINFO} (the model is for {model.cpu.vendor})")
        return None
    vendor = CPU_VENDORS.get(vendor_id)
    if vendor is None:
        found.append(f"this CPU is {vendor_id}, neither Intel nor AMD (the model is for {model.cpu.vendor})")
    elif vendor != model.cpu.vendor:
        found.append(f"this CPU is {vendor_id} ({vendor}), the model is for {model.cpu.vendor}")
    else:
        report.passed.append(f"this CPU is {vendor_id} ({vendor}), as the model expects")
    return vendor


def _check_iommu_table(vendor: str, root: Path, report: CheckReport, found: list[str]) -> None:
    """The firmware describes an IOMMU (of the CPU's kind: a mismatched model is reported on its own)."""
    table, firmware_name = IOMMU_TABLES[vendor]
    # Existence only: the tables are readable by root alone, their directory by everyone.
    if (root / ACPI_TABLES / table).exists():
        report.passed.append(f"the firmware exposes an IOMMU (ACPI {table} table)")
    else:
        found.append(
            f"no ACPI {table} table (/{ACPI_TABLES}/{table}): the firmware exposes no IOMMU;"
            f" enable {firmware_name} (IOMMU) in the firmware setup"
        )


def _check_iommu_groups(model: Model, root: Path, present: set[str], report: CheckReport, found: list[str]) -> None:
    """Every group of a passed-through function holds only those functions and PCI bridges."""
    groups_dir = root / IOMMU_GROUPS
    if not (groups_dir.is_dir() and any(groups_dir.iterdir())):
        report.notes.append(
            "no IOMMU groups yet: the IOMMU is not on (normal before the first reboot with the package's"
            " kernel command line); the IOMMU group check is skipped, run `gpupass check` after the reboot"
        )
        return
    passed_through = [f.address for f in model.gpu.functions]
    groups: dict[str, list[str]] = {}  # group -> its passed-through functions, in model order
    for address in passed_through:
        if address not in present:
            continue
        link = root / PCI_DEVICES / address / "iommu_group"
        if not link.is_symlink():
            found.append(
                f"{address} is in no IOMMU group although the IOMMU is on (no /{PCI_DEVICES}/{address}/iommu_group)"
            )
            continue
        # Only the link's name is used: an absolute target would point outside ``root``.
        groups.setdefault(Path(os.readlink(link)).name, []).append(address)
    for group, members in groups.items():
        try:
            addresses = sorted(p.name for p in (groups_dir / group / "devices").iterdir())
        except OSError:
            found.append(
                f"IOMMU group {group} of {', '.join(members)} cannot be listed (/{IOMMU_GROUPS}/{group}/devices)"
            )
            continue
        bridges, intruders = [], []
        for address in addresses:
            if address in passed_through:
                continue
            cls = _read(root / PCI_DEVICES / address / "class") or "unknown"
            if cls.startswith(PCI_BRIDGE_CLASS):
                bridges.append(address)
            else:
                intruders.append(address)
                kind = PCI_CLASS_NAMES.get(cls[:6], "device")
                found.append(
                    f"IOMMU group {group} also holds {address} {_pci_id(root / PCI_DEVICES / address) or '?'}"
                    f" ({kind}, class {cls}), which is not passed through: the whole group would go to the VM"
                )
        if not intruders:
            with_bridges = f" and PCI bridge {', '.join(bridges)}" if bridges else ""
            report.passed.append(f"IOMMU group {group} holds only {', '.join(members)}{with_bridges}")


# Reading sysfs and procfs -------------------------------------------------------------


def _has_pci_devices(root: Path) -> bool:
    devices = root / PCI_DEVICES
    try:
        return any(devices.iterdir())
    except OSError:
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _pci_id(device: Path) -> str | None:
    """``vvvv:dddd`` from sysfs ``vendor`` ("0x10de") and ``device`` ("0x25a2")."""
    parts = []
    for name in ("vendor", "device"):
        try:
            parts.append(f"{int(_read(device / name) or '', 16):04x}")
        except ValueError:
            return None
    return ":".join(parts)


def _cpuinfo_vendor(path: Path) -> str | None:
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id" and value.strip():
            return value.strip()
    return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
