"""How asleep the dGPU is, from the machine snapshot alone (power/runtime_status,
power_state and the rest: files that do not wake the device), and what gpupass knows keeps it
awake. Read by ``gpupass doctor``, ``gpupass power status`` and the libvirt hook's record."""

from __future__ import annotations

from dataclasses import dataclass

from ...model import Model
from ..machine import Machine, PciDevice
from .drivers import VFIO_DRIVER, module_of, softdep_fix


def power_words(device: PciDevice) -> str:
    return f"{device.runtime_status or 'unknown'} ({device.power_state or '?'})"


@dataclass(frozen=True)
class Sleep:
    """Whether the dGPU's functions and its root port sleep, and what gpupass knows keeps them awake.

    From the machine snapshot alone (power/runtime_status, power_state and the rest, files that do
    not wake the device): ``gpupass doctor``, ``gpupass power status`` and the libvirt hook's record."""

    gpu: PciDevice
    port: PciDevice | None  # the root port above the dGPU
    devices: tuple[PciDevice, ...]  # the model's functions present, then the root port
    awake: tuple[PciDevice, ...]  # those not runtime-suspended
    causes: tuple[tuple[str, str], ...]  # (what keeps it awake, the fix)

    @property
    def asleep(self) -> bool:
        return not self.awake

    def asleep_text(self) -> str:
        text = f"the dGPU {self.gpu.address} ({self.gpu.power_state or '?'})"
        if self.port:
            return text + f" and its root port {self.port.address} ({self.port.power_state or '?'}) are"
        return text + " is"


def dgpu_sleep(model: Model, m: Machine, gpu: PciDevice) -> Sleep:
    functions = [d for f in model.gpu.functions if (d := m.device(f.address)) is not None]
    # upstream is nearest first: its last bridge is the root port, which sleeps only when all below it do.
    port = m.device(gpu.upstream[-1]) if gpu.upstream else None
    devices = functions + ([port] if port else [])
    awake = [d for d in devices if d.runtime_status != "suspended"]
    causes: list[tuple[str, str]] = []
    for d in devices:
        if d.power_control == "on":
            causes.append(
                (
                    f"{d.address} has power/control=on",
                    f"echo auto | sudo tee /sys/bus/pci/devices/{d.address}/power/control, and remove what sets it"
                    " (a udev rule, TLP's RUNTIME_PM_ON_AC=on)",
                )
            )
    for d in functions:
        if d.driver and d.driver != VFIO_DRIVER:
            causes.append((f"{d.address} is on the host driver {d.driver}", softdep_fix(module_of(d))))
    if (m.vfio_pci_disable_idle_d3 or "").upper() in ("Y", "1"):
        causes.append(
            (
                "vfio-pci has disable_idle_d3=Y",
                "remove disable_idle_d3 from vfio-pci's options (/etc/modprobe.d, the kernel command line),"
                " then reboot",
            )
        )
    return Sleep(gpu, port, tuple(devices), tuple(awake), tuple(causes) if awake else ())
