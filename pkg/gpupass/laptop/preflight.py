"""Pre-flight checks: is this laptop the one the model describes, and can its dGPU be passed through?

Run by the package's preinst (with nothing but python3 on the laptop, so standard library only)
and by hand as ``gpupass check``. The machine is read once (machine.py, under ``root``: ``/`` on a
real system, a fixture tree in the tests); every check is a function of that snapshot and the model.

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
from . import machine
from .machine import ACPI_TABLES, CPUINFO, IOMMU_GROUPS, PCI_DEVICES, Machine

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
    container = in_container() if callable(in_container) else bool(in_container)
    # No Resizable BAR sizes: the checks need none, and reading them would wake a suspended dGPU.
    return assess(model, machine.read(root, rebar=False, processes=False), container=container, env=env)


def assess(model: Model, snapshot: Machine, *, container: bool = False, env: Mapping[str, str] = {}) -> CheckReport:
    """The checks as a pure function of the model and a snapshot of the machine."""
    report = CheckReport()
    found: list[str] = []  # refusals, before deciding whether they only warn
    chroot = not snapshot.pci
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
        present = _check_functions(model, snapshot, report, found)
        _check_boot_vga(model.gpu_function, snapshot, present, report, found)
    cpu_vendor = _check_cpu_vendor(model, snapshot, report, found)
    _check_iommu_table(cpu_vendor or model.cpu.vendor, snapshot, report, found)
    if not chroot:
        _check_iommu_groups(model, snapshot, present, report, found)

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


def _check_functions(model: Model, snapshot: Machine, report: CheckReport, found: list[str]) -> set[str]:
    """Each function is at its address with its id; returns the addresses where a device exists."""
    present = set()
    for f in model.gpu.functions:
        device = snapshot.device(f.address)
        if device is None:
            found.append(
                f"{f.address}: no PCI device here (the model expects the {f.role} function {f.id};"
                " is the dGPU switched off in the firmware setup?)"
            )
            continue
        present.add(f.address)
        actual = device.id
        if actual is None:
            found.append(f"{f.address}: cannot read its vendor/device id from /{PCI_DEVICES}/{f.address}")
        elif actual != f.id:
            found.append(
                f"{f.address} is {actual}, the model expects {f.id} (its {f.role} function): is this a {model.name}?"
            )
        else:
            report.passed.append(f"{f.address} is {f.id} ({f.role})")
    return present


def _check_boot_vga(gpu: PciFunction, snapshot: Machine, present: set[str], report: CheckReport, found: list[str]):
    if gpu.address not in present:
        return
    # Only VGA-class devices have boot_vga; a 3D controller without it cannot be the boot display.
    if snapshot.device(gpu.address).boot_vga:
        found.append(boot_vga_problem(gpu.address))
    else:
        report.passed.append(f"{gpu.address} is not the boot VGA device (the host keeps its display)")


def boot_vga_problem(address: str) -> str:
    return (
        f"{address} is the boot VGA device: passing it through would leave the host without a display"
        " (set the firmware's graphics mode to hybrid so that the iGPU drives the panel)"
    )


def _check_cpu_vendor(model: Model, snapshot: Machine, report: CheckReport, found: list[str]) -> str | None:
    """The CPU vendor (intel/amd) when it is known, whether or not it matches the model."""
    vendor_id = snapshot.cpu_vendor_id
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


def _check_iommu_table(vendor: str, snapshot: Machine, report: CheckReport, found: list[str]) -> None:
    """The firmware describes an IOMMU (of the CPU's kind: a mismatched model is reported on its own)."""
    table, firmware_name = IOMMU_TABLES[vendor]
    # Existence only: the tables are readable by root alone, their directory by everyone.
    if table in snapshot.acpi_tables:
        report.passed.append(f"the firmware exposes an IOMMU (ACPI {table} table)")
    else:
        found.append(no_iommu_table_problem(vendor))


def no_iommu_table(vendor: str) -> tuple[str, str]:
    """What is wrong when the firmware describes no IOMMU, and the fix (check, probe, doctor)."""
    table, firmware_name = IOMMU_TABLES[vendor]
    return (
        f"no ACPI {table} table (/{ACPI_TABLES}/{table}): the firmware exposes no IOMMU",
        f"enable {firmware_name} (IOMMU) in the firmware setup",
    )


def no_iommu_table_problem(vendor: str) -> str:
    return "; ".join(no_iommu_table(vendor))


def _check_iommu_groups(
    model: Model, snapshot: Machine, present: set[str], report: CheckReport, found: list[str]
) -> None:
    """Every group of a passed-through function holds only those functions and PCI bridges."""
    if not snapshot.has_iommu_groups:
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
        group = snapshot.device(address).iommu_group
        if group is None:
            found.append(
                f"{address} is in no IOMMU group although the IOMMU is on (no /{PCI_DEVICES}/{address}/iommu_group)"
            )
            continue
        groups.setdefault(group, []).append(address)
    for group, members in groups.items():
        if group not in snapshot.iommu_groups:
            found.append(
                f"IOMMU group {group} of {', '.join(members)} cannot be listed (/{IOMMU_GROUPS}/{group}/devices)"
            )
            continue
        bridges, intruders = group_companions(snapshot, group, passed_through)
        found.extend(intruder_problem(snapshot, group, address) for address in intruders)
        if not intruders:
            with_bridges = f" and PCI bridge {', '.join(bridges)}" if bridges else ""
            report.passed.append(f"IOMMU group {group} holds only {', '.join(members)}{with_bridges}")


def group_companions(snapshot: Machine, group: str, passed_through: list[str]) -> tuple[list[str], list[str]]:
    """The other devices of an IOMMU group: (PCI bridges, which may stay; any other device, which may not)."""
    bridges, intruders = [], []
    for address in snapshot.iommu_groups.get(group, ()):
        if address in passed_through:
            continue
        device = snapshot.device(address)
        if device is not None and device.class_code.startswith(PCI_BRIDGE_CLASS):
            bridges.append(address)
        else:
            intruders.append(address)
    return bridges, intruders


def intruder_problem(snapshot: Machine, group: str, address: str) -> str:
    device = snapshot.device(address)
    cls = device.class_code if device else "unknown"
    kind = PCI_CLASS_NAMES.get(cls[:6], "device")
    return (
        f"IOMMU group {group} also holds {address} {(device and device.id) or '?'}"
        f" ({kind}, class {cls}), which is not passed through: the whole group would go to the VM"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
