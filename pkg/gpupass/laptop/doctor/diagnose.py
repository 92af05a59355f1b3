"""``gpupass doctor``: is passthrough set up on this laptop, and does the dGPU sleep while the VM is off?

One line per check, ``ok`` / ``warn`` / ``fail``, each failure with its fix. The checks are pure
functions of the model, the machine snapshot (machine.py, the one reader of sysfs and procfs)
and ``Facts`` (facts.py), grouped by area: the host (host.py), the vBIOS (rom.py), the VM
(vm.py), power (power.py). The tests build both from fixture trees.

Exit status: 0 everything ok, 1 a failure, 2 only warnings. Standard library only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ...model import Model
from .. import machine
from ..machine import Machine
from .facts import Facts, Initramfs, Libvirt, gather
from .finding import Finding, exit_status, report
from .host import check_bindings, check_cmdline, check_cpu, check_group, check_initramfs, check_iommu
from .mode import check_mode
from .power import check_power
from .rom import check_rom_table, check_vbios
from .vm import check_apparmor, check_libvirt, check_looking_glass, check_nvpcf, check_ovmf, check_vm

Check = Callable[[Model, Machine, Facts], list[Finding]]
CHECKS: tuple[Check, ...] = (
    check_cpu,
    check_iommu,
    check_cmdline,
    check_bindings,
    check_initramfs,
    check_group,
    check_vbios,
    check_rom_table,
    check_nvpcf,
    check_ovmf,
    check_libvirt,
    check_apparmor,
    check_vm,
    check_looking_glass,
    check_power,
    check_mode,
)


def diagnose(model: Model, snapshot: Machine, facts: Facts) -> list[Finding]:
    return [finding for check in CHECKS for finding in check(model, snapshot, facts)]


def examine(
    model: Model,
    root: Path = Path("/"),
    *,
    vm_name: str | None = None,
    uri: str | None = None,
    initramfs: Initramfs | None = None,
    libvirt: Libvirt | None = None,
) -> tuple[Machine, Facts, list[Finding]]:
    """Read the machine and the facts once and run every check: what doctor prints, and what
    ``gpupass report`` takes its doctor section (and the libvirt version, the IOMMU groups) from."""
    snapshot = machine.read(root, rebar=False)  # no Resizable BAR sizes: reading them wakes the dGPU
    facts = gather(model, snapshot, root, vm_name=vm_name, uri=uri, initramfs=initramfs, libvirt=libvirt)
    return snapshot, facts, diagnose(model, snapshot, facts)


def cli(
    model: Model,
    root: Path = Path("/"),
    *,
    vm_name: str | None = None,
    uri: str | None = None,
    as_json: bool = False,
    initramfs: Initramfs | None = None,
    libvirt: Libvirt | None = None,
    out: TextIO | None = None,
) -> int:
    """``gpupass doctor``: print one line per check; 0 all ok, 1 a failure, 2 only warnings."""
    _, _, findings = examine(model, root, vm_name=vm_name, uri=uri, initramfs=initramfs, libvirt=libvirt)
    (out or sys.stdout).write(report(model, findings, as_json))
    return exit_status(findings)
