"""``gpupass gpu status``: each dGPU function's driver, power state and device nodes."""

from __future__ import annotations

from ...model import Model
from ..machine import Machine
from .holders import Holders
from .sleep import power_words


def report(model: Model, m: Machine, h: Holders) -> list[str]:
    lines = []
    for f in model.gpu.functions:
        device = m.device(f.address)
        if device is None:
            lines.append(f"{f.address} ({f.role}): no such PCI device")
            continue
        nodes = " ".join(n.name for n in h.nodes if n.function == f.address) or "none"
        lines.append(f"{f.address} ({f.role}): driver {device.driver or 'none'}, {power_words(device)}, nodes: {nodes}")
    held = len({p.pid for p in h.processes})
    kernel = [m.name for m in h.modules if m.held_by_kernel] + [d.name for d in h.daemons]
    lines.append(
        f"holders: {held} process{'es' if held != 1 else ''}"
        + (f"; held inside the kernel by {', '.join(kernel)}" if kernel else "")
        + " (gpupass gpu holders names them)"
    )
    return lines
