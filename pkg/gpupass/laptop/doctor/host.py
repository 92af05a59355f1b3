"""doctor's checks of the host: CPU virtualisation, the IOMMU, the kernel command line, the
dGPU's functions on vfio-pci, vfio-pci in the initramfs, a clean IOMMU group."""

from __future__ import annotations

import re

from ...model import IOMMU_ARG, Model
from ..gpu.drivers import REBUILD_INITRAMFS, VFIO_DRIVER, module_of, softdep_fix
from ..machine import Machine
from ..preflight import IOMMU_TABLES, group_companions, intruder_problem, no_iommu_table
from .facts import Facts
from .finding import FAIL, OK, WARN, Finding

VFIO_MODULE = re.compile(r"(^|/)vfio[-_]pci\.ko(\.[a-z0-9]+)?$")  # compressed modules: .ko.xz, .ko.zst
CPU_FLAGS = {"intel": ("vmx", "Intel VT-x"), "amd": ("svm", "AMD-V")}
IOMMU_OFF = ("iommu=off", "intel_iommu=off", "amd_iommu=off")


def check_cpu(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    flag, name = CPU_FLAGS[model.cpu.vendor]
    if flag not in m.cpu_flags:
        return [
            Finding(
                "cpu",
                FAIL,
                f"CPU virtualisation is off: no {flag} flag in /proc/cpuinfo",
                f"enable {name} (virtualisation) in the firmware setup",
            )
        ]
    if not m.kvm_device:
        module = f"kvm_{model.cpu.vendor}"
        return [
            Finding(
                "cpu",
                FAIL,
                f"CPU virtualisation is on ({flag}), but there is no /dev/kvm",
                f"sudo modprobe {module} (dmesg says why it refuses)",
            )
        ]
    return [Finding("cpu", OK, f"CPU virtualisation is on ({flag}, /dev/kvm)")]


def check_iommu(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    table = IOMMU_TABLES[model.cpu.vendor][0]
    if table not in m.acpi_tables:
        return [Finding("iommu", FAIL, *no_iommu_table(model.cpu.vendor))]
    missing = [what for what, there in (("/sys/class/iommu is empty", m.iommu_units),
                                         ("there are no IOMMU groups", m.has_iommu_groups)) if not there]  # fmt: skip
    if missing:
        return [
            Finding(
                "iommu",
                FAIL,
                f"the IOMMU is off: the firmware has one (ACPI {table} table), but {' and '.join(missing)}",
                f"boot with {IOMMU_ARG[model.cpu.vendor]} (see the kernel command line check)",
            )
        ]
    groups = len(m.iommu_groups) + len(m.unlistable_groups)
    units = ", ".join(m.iommu_units)
    return [Finding("iommu", OK, f"the IOMMU is on (ACPI {table} table, {units}, {groups} IOMMU groups)")]


def normal_arg(token: str) -> str:
    """A kernel argument as the kernel matches it: a module's name with _ for - (vfio-pci.ids = vfio_pci.ids)."""
    name, eq, value = token.partition("=")
    module, dot, parameter = name.partition(".")
    return (module.replace("-", "_") + dot + parameter if dot else name) + eq + value


def check_cmdline(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    if m.cmdline is None:
        return [Finding("cmdline", FAIL, "cannot read /proc/cmdline", "run gpupass doctor on the laptop itself")]
    tokens = m.cmdline.split()
    have = {normal_arg(t) for t in tokens}
    found = []
    off = [t for t in tokens if t in IOMMU_OFF]
    if off:
        found.append(
            Finding(
                "cmdline",
                FAIL,
                f"the kernel command line turns the IOMMU off ({' '.join(off)})",
                f"remove {' '.join(off)} from GRUB_CMDLINE_LINUX* in /etc/default/grub (or /etc/kernel/cmdline),"
                " then sudo update-grub and reboot",
            )
        )
    wanted = model.kernel_args_for(facts.mode)
    missing = [a for a in wanted if normal_arg(a) not in have]
    if missing:
        found.append(
            Finding(
                "cmdline",
                FAIL,
                f"the kernel command line lacks {' '.join(missing)} (/proc/cmdline)",
                f"sudo update-grub, then reboot (/etc/default/grub.d/{model.package}.cfg adds the arguments;"
                " without GRUB add them to /etc/kernel/cmdline, then sudo kernel-install add-all)",
            )
        )
    if not found:
        found.append(Finding("cmdline", OK, f"the kernel command line has {' '.join(wanted)}"))
    return found


def check_bindings(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    found = []
    for f in model.gpu.functions:
        device = m.device(f.address)
        what = f"{f.address} ({f.role} {f.id})"
        if device is None:
            found.append(
                Finding(
                    "vfio-pci",
                    FAIL,
                    f"{what}: no PCI device there",
                    "switch the dGPU on in the firmware setup (hybrid graphics); gpupass check tells whether"
                    " this is the laptop of the model",
                )
            )
        elif device.driver == VFIO_DRIVER:
            found.append(Finding("vfio-pci", OK, f"{what} is bound to vfio-pci"))
        elif facts.mode == "on-demand" and device.driver is not None:
            found.append(
                Finding(
                    "vfio-pci", OK, f"{what} is on its host driver {device.driver} (on-demand: until the VM starts)"
                )
            )
        elif device.driver is None:
            found.append(
                Finding(
                    "vfio-pci",
                    FAIL,
                    f"{what} is bound to no driver",
                    "sudo modprobe vfio-pci (it claims the ids of vfio-pci.ids= on the kernel command line)",
                )
            )
        else:
            found.append(
                Finding(
                    "vfio-pci", FAIL, f"{what} is held by {device.driver}, not vfio-pci", softdep_fix(module_of(device))
                )
            )
    return found


def check_initramfs(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    if facts.mode == "on-demand":
        return []  # gpupass gpu claim loads vfio-pci when the VM starts: the initramfs need not have it
    release = m.kernel_release
    if release is None:
        return [Finding("initramfs", WARN, "cannot tell the running kernel (no /proc/sys/kernel/osrelease)",
                        "run gpupass doctor on the laptop itself")]  # fmt: skip
    if facts.modules_builtin and any(VFIO_MODULE.search(line) for line in facts.modules_builtin):
        return [Finding("initramfs", OK, f"vfio-pci is built into the kernel {release}")]
    initramfs = facts.initramfs
    if initramfs is None or initramfs.files is None:
        problem = initramfs.problem if initramfs else "the initramfs was not listed"
        return [Finding("initramfs", WARN, problem, initramfs.fix if initramfs else "")]
    if any(VFIO_MODULE.search((line.split() or [""])[-1]) for line in initramfs.files):
        return [Finding("initramfs", OK, f"vfio-pci is in the initramfs {initramfs.image}")]
    return [
        Finding(
            "initramfs",
            FAIL,
            f"vfio-pci is not in the initramfs {initramfs.image} (nor built into the kernel {release})",
            f"{REBUILD_INITRAMFS}, then reboot",
        )
    ]


def check_group(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    if not m.has_iommu_groups:
        return [Finding("group", WARN, "the IOMMU groups are not checked: there are none (the IOMMU is off)",
                        "see the IOMMU check")]  # fmt: skip
    passed = [f.address for f in model.gpu.functions]
    groups: dict[str, list[str]] = {}
    for address in passed:
        device = m.device(address)
        if device is not None and device.iommu_group is not None:
            groups.setdefault(device.iommu_group, []).append(address)
    if not groups:
        return [Finding("group", WARN, "the IOMMU group is not checked: no function of the model is in one",
                        "see the vfio-pci checks")]  # fmt: skip
    found = []
    for group, members in groups.items():
        bridges, intruders = group_companions(m, group, passed)
        for address in intruders:
            found.append(
                Finding(
                    "group",
                    FAIL,
                    intruder_problem(m, group, address),
                    "none in gpupass: a device sharing the group goes to the VM with the dGPU"
                    " (a firmware update may split the group)",
                )
            )
        if not intruders:
            with_bridges = f" and PCI bridge {', '.join(bridges)}" if bridges else ""
            found.append(Finding("group", OK, f"IOMMU group {group} holds only {', '.join(members)}{with_bridges}"))
    return found
