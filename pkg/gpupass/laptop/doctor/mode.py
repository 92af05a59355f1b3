"""doctor's check of the mode (gpupass mode): which one the next boot starts in, whether the running
kernel was started in the other one (a switch waiting for the reboot), and in on-demand mode
whether the VM could start now, by gpupass gpu claim's own decision."""

from __future__ import annotations

from ...model import Model
from ..machine import Machine
from .facts import Facts
from .finding import OK, WARN, Finding
from .host import normal_arg

SHOWN = {
    "boot": "boot (vfio-pci takes the dGPU at every boot)",
    "on-demand": "on-demand (the host keeps the dGPU while the VM is off; the libvirt hook claims it at start)",
}


def check_mode(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    if facts.mode_problem:
        return [Finding("mode", WARN, facts.mode_problem, "sudo gpupass mode boot|on-demand")]
    found = [Finding("mode", OK, f"mode: {SHOWN[facts.mode]}")]
    # A switch is known only while the state file records it (the mode is not the model's own);
    # back to the model's mode, a command line without its arguments is the command-line check's.
    if facts.mode != model.mode and running_mode(model, m.cmdline) == model.mode:
        found.append(
            Finding(
                "mode",
                WARN,
                f"the running kernel was started in {model.mode} mode: {facts.mode} mode takes effect at the next boot",
                "reboot (with the VM shut down)",
            )
        )
    if facts.claim_refusals is None:
        return found
    if not facts.claim_refusals:
        found.append(Finding("mode", OK, "nothing holds the dGPU: the VM can start"))
    for refusal in facts.claim_refusals:
        found.append(Finding("mode", WARN, f"the VM would not start now: {refusal}", "gpupass gpu holders"))
    return found


def running_mode(model: Model, cmdline: str | None) -> str | None:
    """The mode the running kernel was started in, by its command line: boot when it carries the
    boot mode's arguments (vfio-pci.ids with the model's ids among them), on-demand when it carries
    the IOMMU arguments and no vfio-pci.ids; None when it carries neither (the package's GRUB line
    not booted yet: the command-line check says so)."""
    if cmdline is None:
        return None
    have = {normal_arg(token) for token in cmdline.split()}
    if all(normal_arg(arg) in have for arg in model.kernel_args_for("boot")):
        return "boot"
    on_demand = all(normal_arg(arg) in have for arg in model.kernel_args_for("on-demand"))
    if on_demand and not any(token.startswith("vfio_pci.ids=") for token in have):
        return "on-demand"
    return None
