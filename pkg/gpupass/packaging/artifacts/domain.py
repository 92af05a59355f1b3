"""The libvirt domain: a q35/OVMF Windows guest with the GPU's functions on one slot."""

from __future__ import annotations

from dataclasses import dataclass

from ... import guest, paths
from ...model import Model, PciFunction

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
# Guest PCIe bus of the root port the passed-through functions sit behind.
GUEST_BUS = 1


@dataclass(frozen=True)
class Port:
    """gpupass's pcie-root-port: a fixed address, so the GPU's guest ACPI path is known."""

    alias: str = guest.PORT_ALIAS
    slot: int = guest.PORT.port_slot
    function: int = guest.PORT.port_function


@dataclass(frozen=True)
class Hostdev:
    function: PciFunction
    guest_function: int

    @property
    def subsystem_vendor(self) -> int:
        """For x-pci-sub-vendor-id (libvirt takes an unsigned property value in decimal)."""
        return int(self.function.subsystem_id.split(":")[0], 16)

    @property
    def subsystem_device(self) -> int:
        return int(self.function.subsystem_id.split(":")[1], 16)

    @property
    def host(self) -> dict[str, str]:
        domain, bus, slot, function = self.function.pci_parts
        return {
            "domain": f"0x{domain:04x}",
            "bus": f"0x{bus:02x}",
            "slot": f"0x{slot:02x}",
            "function": f"0x{function:x}",
        }


def qemu_args(model: Model) -> tuple[str, ...]:
    """Extra QEMU arguments: the 64-bit MMIO window, the fake-battery SSDT, (guest.acpi_rom)
    the SSDT whose _ROM serves the vBIOS, written on the laptop beside it, and (guest.nvpcf,
    experimental) the package's NVPCF SSDT."""
    rom_table = ("-acpitable", f"file={paths.ROM_AML}") if model.acpi_rom else ()
    nvpcf_table = ("-acpitable", f"file={paths.NVPCF_AML}") if model.nvpcf else ()
    return (
        "-fw_cfg",
        f"opt/ovmf/X-PciMmio64Mb,string={model.gpu.mmio64_mb}",
        "-acpitable",
        f"file={paths.INSTALLED_AML}",
        *rom_table,
        *nvpcf_table,
    )


def vcpu_pins(model: Model) -> tuple[int, ...]:
    """Host CPU for each vCPU: one performance CPU each, in the model's order."""
    return model.cpu.performance_cpus[: model.vm.vcpus]


def render(model: Model, templates) -> dict[str, bytes]:
    hostdevs = [Hostdev(f, i) for i, f in enumerate(model.gpu.functions)]
    xml = templates.render(
        "domain.xml.j2",
        model,
        hostdevs=hostdevs,
        # Mobile NVIDIA drivers stay in Code 43 unless the GPU shows the laptop's subsystem ids:
        # QEMU's vfio-pci sets them from these properties (libvirt >= 8.2: <qemu:override>).
        overrides=[dev for dev in hostdevs if dev.function.subsystem_id],
        guest_bus=f"0x{GUEST_BUS:02x}",
        guest_bus_index=GUEST_BUS,
        port=Port(),
        qemu_ns=QEMU_NS,
        qemu_args=qemu_args(model),
        pins=vcpu_pins(model),
        cores=model.vm.vcpus // model.cpu.threads_per_core,
    )
    return {str(paths.INSTALLED_DOMAIN).lstrip("/"): xml}
