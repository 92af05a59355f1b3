"""``gpupass gpu claim | release``: the dGPU's functions from the host drivers to vfio-pci and back.

Look first, refuse loudly, and never write while anything could make the write block: an
``snd_hda_intel`` or ``vfio-pci`` unbind with a holder sleeps in state D, unkillable, and a
timeout around it does not help (``passthrough-notes.md``, "On-demand switching"). So
``decide`` is a pure function of (model, machine snapshot, holders): a refused decision has
no steps at all, and ``execute`` never calls the writer for it. NVIDIA's driver is not
unbound: ``modprobe -r`` of its modules fails at once while they are in use, it never blocks.
Never: kill a process, stop a display manager, ``rmmod -f``, or remove/rescan a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ...errors import GpupassError
from ...model import Model
from .. import command
from ..machine import PCI_DEVICES, Machine, PciDevice
from .drivers import VFIO_DRIVER
from .holders import NVIDIA_VENDOR, Holders, daemon_line, holder_line

CLAIM, RELEASE = "claim", "release"
PCI_DRIVERS = "sys/bus/pci/drivers"
DRIVERS_PROBE = "sys/bus/pci/drivers_probe"
NVIDIA_DRIVER = "nvidia"
BRIDGE_CLASS = "0x0604"


@dataclass(frozen=True)
class Write:
    """A write to a sysfs file, ``path`` relative to the root."""

    path: str
    text: str

    def __str__(self) -> str:
        shown = self.text.strip() or "''"
        return f"echo {shown} > /{self.path}"


@dataclass(frozen=True)
class Modprobe:
    args: tuple[str, ...]

    def __str__(self) -> str:
        return "modprobe " + " ".join(self.args)


Step = Write | Modprobe


@dataclass(frozen=True)
class Decision:
    action: str  # claim or release
    steps: tuple[Step, ...] = ()
    refusals: tuple[str, ...] = ()  # each: who or what holds it, and how to end that
    functions: tuple[str, ...] = ()  # the functions moved

    @property
    def refused(self) -> bool:
        return bool(self.refusals)


def _functions(model: Model, m: Machine) -> tuple[list[PciDevice], list[str]]:
    """The model's functions present, and what is wrong with the group they are in."""
    devices, problems = [], []
    for f in model.gpu.functions:
        device = m.device(f.address)
        if device is None:
            problems.append(f"no PCI device at {f.address} (the model's {f.role} function)")
        else:
            devices.append(device)
    named = {f.address for f in model.gpu.functions}
    for group in sorted({d.iommu_group for d in devices if d.iommu_group}):
        for address in m.iommu_groups.get(group, ()):
            other = m.device(address)
            if address not in named and other is not None and not other.class_code.startswith(BRIDGE_CLASS):
                problems.append(
                    f"IOMMU group {group} also holds {address} ({other.id}, driver {other.driver or 'none'}),"
                    " which the model does not name: vfio-pci takes a whole group"
                )
    if any(d.iommu_group is None for d in devices):
        problems.append("no IOMMU group for the dGPU: the IOMMU is off (see gpupass doctor)")
    return devices, problems


def _unlisted(h: Holders) -> list[str]:
    if not h.unlisted_processes:
        return []
    return [f"{h.unlisted_processes} processes' open files could not be read: run as root (sudo gpupass ...)"]


def _claim_refusals(h: Holders) -> list[str]:
    refusals = [f"{holder_line(p)}: quit it, or end it with: kill {p.pid}" for p in h.user_holders]
    for m in h.modules:
        if m.held_by_kernel:
            refusals.append(
                f"module {m.name} is in use inside the kernel (refcnt {m.refcnt}, {m.held_by_kernel} beyond the"
                " modules that use it): end the programs using the GPU (CUDA, Vulkan); nvidia-drm's framebuffer"
                " console (nvidia_drm.fbdev=1) holds it until a reboot with nvidia_drm.fbdev=0"
            )
    for d in h.daemons:
        refusals.append(f"{daemon_line(d)}: stop it with: sudo systemctl stop {d.name}")
    return refusals + _unlisted(h)


def decide(action: str, model: Model, m: Machine, h: Holders) -> Decision:
    """What ``action`` (claim or release) would write, or why it refuses: a pure function."""
    devices, problems = _functions(model, m)
    if problems:
        return Decision(action, refusals=tuple(problems))
    if action == CLAIM:
        move = [d for d in devices if d.driver != VFIO_DRIVER]
        refusals = _claim_refusals(h) if move else []
        if refusals:
            return Decision(action, refusals=tuple(refusals))
        steps: list[Step] = []
        if move and not h.vfio_pci_loaded:
            steps.append(Modprobe((VFIO_DRIVER,)))
        if any(d.driver == NVIDIA_DRIVER for d in move):
            steps.append(Modprobe(("-r", *([u.name for u in h.modules] or [NVIDIA_DRIVER]))))
        steps += [Write(f"{PCI_DEVICES}/{d.address}/driver_override", VFIO_DRIVER) for d in move]
        steps += [
            Write(f"{PCI_DRIVERS}/{d.driver}/unbind", d.address) for d in move if d.driver not in (None, NVIDIA_DRIVER)
        ]
        steps += [Write(DRIVERS_PROBE, d.address) for d in move]
        return Decision(action, tuple(steps), functions=tuple(d.address for d in move))
    if action != RELEASE:
        raise ValueError(action)
    move = [d for d in devices if d.driver == VFIO_DRIVER]
    vm = [f"{holder_line(p)}: the VM still has it; shut the VM down first" for p in h.vfio_holders]
    refusals = vm + _unlisted(h) if move else []
    if refusals:
        return Decision(action, refusals=tuple(refusals))
    steps = [Write(f"{PCI_DEVICES}/{d.address}/driver_override", "\n") for d in move]
    steps += [Write(f"{PCI_DRIVERS}/{VFIO_DRIVER}/unbind", d.address) for d in move]
    steps += [Write(DRIVERS_PROBE, d.address) for d in move]
    # claim unloaded NVIDIA's modules: load the driver back by the device's modalias (kmod picks
    # nvidia or nouveau and honours blacklists); loading it binds the unbound functions.
    aliases = tuple(d.modalias for d in move if d.vendor == NVIDIA_VENDOR and d.modalias)
    if aliases:
        steps.append(Modprobe(("-b", "-a", *aliases)))
    return Decision(action, tuple(steps), functions=tuple(d.address for d in move))


# Doing it ------------------------------------------------------------------------------


class Writer(Protocol):
    def write(self, path: str, text: str) -> None: ...

    def modprobe(self, args: tuple[str, ...]) -> None: ...


class SystemWriter:
    """The one writer of claim and release: sysfs files under ``root``, and modprobe on ``/`` only."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    def write(self, path: str, text: str) -> None:
        with open(self.root / path, "w", encoding="ascii") as f:
            f.write(text)

    def modprobe(self, args: tuple[str, ...]) -> None:
        if self.root != Path("/"):
            raise GpupassError(f"modprobe {' '.join(args)}: not run for a fixture tree (--root {self.root})")
        command.run(["modprobe", *args], "kmod")


def execute(decision: Decision, writer: Writer) -> list[str]:
    """Carry out a decision that was not refused; the lines to print. A failed step stops the rest."""
    if decision.refused:
        raise GpupassError(
            [f"{decision.action} refused, nothing was written:", *decision.refusals],
            hint="gpupass gpu holders lists what holds the dGPU",
        )
    for done, step in enumerate(decision.steps):
        try:
            if isinstance(step, Write):
                writer.write(step.path, step.text)
            else:
                writer.modprobe(step.args)
        except OSError as e:
            raise GpupassError(
                f"{step}: {e.strerror or e} (after {done} of {len(decision.steps)} steps)",
                hint="gpupass gpu status shows where each function is now",
            ) from None
    if not decision.functions:
        where = "on vfio-pci" if decision.action == CLAIM else "on their host drivers"
        return [f"nothing to do: the dGPU's functions are {where} already"]
    to = "to vfio-pci" if decision.action == CLAIM else "back to the host"
    return [f"{decision.action}: {', '.join(decision.functions)} handed {to}"]
