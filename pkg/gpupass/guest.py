"""Where the GPU sits in the guest, and the ACPI node QEMU gives it there.

The GPU's functions go on slot 0 of one pcie-root-port that gpupass names (alias
``ua-gpupass-port``) at a fixed guest address, with hotplug off so that QEMU adds no
hotplug methods of its own there. The node of a device is known only for the layouts
listed in ``ACPI_PATHS``, each read from a booted guest (see DESIGN.md, "The GPU's guest
ACPI node"); an SSDT for any other layout is refused rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import GpupassError

PORT_ALIAS = "ua-gpupass-port"


@dataclass(frozen=True)
class Layout:
    """The root port's address on the q35 root bus, and the guest function of a device behind it."""

    port_slot: int
    port_function: int
    function: int = 0

    def describe(self) -> str:
        return f"root port 00:{self.port_slot:02x}.{self.port_function:x}, device function {self.function}"


# The root port of the GPU: 00:1c.0, free in libvirt's and virt-install's q35 layouts
# (they fill 00:01.0 with the video device and put root ports from 00:02.0 on).
PORT = Layout(port_slot=0x1C, port_function=0)

# QEMU's q35 DSDT names a PCI device S<devfn in hex>; a device behind a root port sits in
# the port's scope. Proven for QEMU 7.2 (tests/test_vm_smoke.py reads firmware_node/path).
ACPI_PATHS = {
    Layout(0x1C, 0, 0): r"\_SB.PCI0.SE0.S00",
}


# QEMU before 8.0 names the devices behind a cold-plugged bridge only where ACPI bridge
# hotplug is on, which q35 machine types have from 6.1; QEMU 8.0 and later always do
# (commit "pcihp: fix ... describe cold-plugged bridges", Message-Id
# 20230302161543.286002-10-imammedo@redhat.com, which names root ports with hotplug=off).
FIRST_Q35_WITH_BRIDGE_NODES = (6, 1)


def acpi_path(layout: Layout) -> str:
    """The guest ACPI path of the device at ``layout``, or GpupassError when it is not known."""
    try:
        return ACPI_PATHS[layout]
    except KeyError:
        raise GpupassError(
            f"the guest ACPI path of the GPU is not known for {layout.describe()}",
            hint="gpupass knows it for: " + "; ".join(known.describe() for known in ACPI_PATHS),
        ) from None


def gpu_acpi_path() -> str:
    return acpi_path(PORT)
