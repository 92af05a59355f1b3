"""Which domains the libvirt hook claims and releases the dGPU for: in on-demand mode only (in
boot mode vfio-pci has it from boot), and only for a domain whose XML (libvirt passes it on the
hook's stdin) has a PCI hostdev at one of the model's addresses. managed='yes' or 'no' alike:
with managed='yes' libvirt finds the functions on vfio-pci already, and gives them back at
release itself (gpupass gpu release then has nothing to do)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ...errors import GpupassError
from ...model import Model
from ..mode import state


def hostdev_addresses(domain_xml: str) -> set[tuple[int, int, int, int]]:
    """The host PCI addresses of the domain's PCI hostdevs, as (domain, bus, slot, function)."""
    try:
        domain = ET.fromstring(domain_xml)
    except ET.ParseError as e:
        raise GpupassError(f"the domain XML on stdin: {e}") from None
    found = set()
    for address in domain.iterfind("devices/hostdev[@type='pci']/source/address"):
        parts = (address.get(k, "0") for k in ("domain", "bus", "slot", "function"))
        try:
            found.add(tuple(int(p, 0) for p in parts))
        except ValueError:
            continue
    return found


def applies(model: Model, root: Path, domain_xml: str) -> bool:
    if state.current(model, root) != "on-demand":
        return False
    return bool({f.pci_parts for f in model.gpu.functions} & hostdev_addresses(domain_xml))
