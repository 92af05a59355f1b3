"""GRUB drop-in: appends the IOMMU and vfio-pci arguments to the kernel command line."""

from __future__ import annotations

from ...model import Model

IOMMU_ARG = {"intel": "intel_iommu=on", "amd": "amd_iommu=on"}


def kernel_args(model: Model) -> tuple[str, ...]:
    """The arguments the package adds to GRUB_CMDLINE_LINUX_DEFAULT, in order."""
    return (IOMMU_ARG[model.cpu.vendor], "iommu=pt", "vfio-pci.ids=" + ",".join(model.gpu.ids))


def render(model: Model, templates) -> dict[str, bytes]:
    path = f"etc/default/grub.d/{model.package}.cfg"
    return {path: templates.render("grub.cfg.j2", model, kernel_args=" ".join(kernel_args(model)))}
