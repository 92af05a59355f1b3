"""doctor's check of the mode (gpupass mode): which one the next boot starts in, and in on-demand
mode whether the VM could start now, by gpupass gpu claim's own decision."""

from __future__ import annotations

from ...model import Model
from ..machine import Machine
from .facts import Facts
from .finding import OK, WARN, Finding

SHOWN = {
    "boot": "boot (vfio-pci takes the dGPU at every boot)",
    "on-demand": "on-demand (the host keeps the dGPU while the VM is off; the libvirt hook claims it at start)",
}


def check_mode(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    if facts.mode_problem:
        return [Finding("mode", WARN, facts.mode_problem, "sudo gpupass mode boot|on-demand")]
    found = [Finding("mode", OK, f"mode: {SHOWN[facts.mode]}")]
    if facts.claim_refusals is None:
        return found
    if not facts.claim_refusals:
        found.append(Finding("mode", OK, "nothing holds the dGPU: the VM can start"))
    for refusal in facts.claim_refusals:
        found.append(Finding("mode", WARN, f"the VM would not start now: {refusal}", "gpupass gpu holders"))
    return found
