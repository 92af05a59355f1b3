"""doctor's check that the dGPU and its root port sleep while the VM is off, and what keeps
them awake otherwise."""

from __future__ import annotations

from ...model import Model
from ..gpu.sleep import dgpu_sleep, power_words
from ..machine import Machine
from .facts import Facts
from .finding import FAIL, OK, WARN, Finding


def check_power(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    lv, name = facts.libvirt, facts.vm_name
    if not lv.problem and lv.survey.domain_active:
        return [Finding("power", OK, f"power: not checked while {name} runs (the dGPU is the VM's)")]
    gpu = m.device(model.gpu_function.address)
    if gpu is None:
        return [Finding("power", WARN, f"power: not checked: no PCI device at {model.gpu_function.address}",
                        "see the vfio-pci checks")]  # fmt: skip
    functions = [d for f in model.gpu.functions if (d := m.device(f.address)) is not None]
    # A VM libvirt did not tell of (libvirt unreachable, another name, plain QEMU) holds the
    # GPU's IOMMU group (or, with iommufd, the GPU's own VFIO file) open for as long as it runs.
    files = {f"/dev/vfio/devices/{d.vfio_device}" for d in functions if d.vfio_device}
    if gpu.iommu_group:
        files.add(f"/dev/vfio/{gpu.iommu_group}")
    held: dict[tuple[int, str], list[str]] = {}
    for u in m.vfio_users:
        if u.path in files:
            held.setdefault((u.pid, u.command or "a process"), []).append(u.path)
    if held:
        who = ", ".join(f"{command} (pid {pid}: {', '.join(opened)})" for (pid, command), opened in held.items())
        return [Finding("power", OK, f"power: not checked while {who} holds the dGPU")]
    sleep = dgpu_sleep(model, m, gpu)
    if sleep.asleep:
        return [Finding("power", OK, f"power: {sleep.asleep_text()} runtime-suspended while the VM is off")]
    awake, causes = sleep.awake, sleep.causes
    states = ", ".join(f"{d.address} {power_words(d)}" for d in awake)
    if lv.problem and m.unlisted_processes:
        return [
            Finding(
                "power",
                WARN,
                f"power: the dGPU is awake ({states}), and whether a VM holds it is unknown: libvirt was not"
                f" reached and the open files of {m.unlisted_processes} other users' processes could not be listed",
                "run gpupass doctor as root",
            )
        ]
    what = f"power: the dGPU stays awake while the VM is off, costing battery: {states}"
    if not causes:
        return [
            Finding(
                "power",
                WARN,
                f"{what}; nothing gpupass knows of keeps it so",
                "something may be using it (lspci -vv, nvidia-smi, reading its rom wake it; it suspends after a"
                " few idle seconds): run gpupass doctor again",
            )
        ]
    return [
        Finding(
            "power", FAIL, f"{what}; {'; '.join(c for c, _ in causes)}", "; ".join(dict.fromkeys(f for _, f in causes))
        )
    ]
