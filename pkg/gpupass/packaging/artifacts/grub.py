"""GRUB drop-in: appends the IOMMU and vfio-pci arguments to the kernel command line."""

from __future__ import annotations

from ...model import Model


def render(model: Model, templates) -> dict[str, bytes]:
    path = f"etc/default/grub.d/{model.package}.cfg"
    return {path: templates.render("grub.cfg.j2", model, kernel_args=" ".join(model.kernel_args))}
