"""initramfs-tools modules.d: the vfio modules are in the initramfs and load first."""

from __future__ import annotations

from ...model import Model

MODULES = ("vfio", "vfio_iommu_type1", "vfio_pci")


def render(model: Model, templates) -> dict[str, bytes]:
    path = f"usr/share/initramfs-tools/modules.d/{model.package}.conf"
    return {path: templates.render("initramfs-modules.j2", model, modules=MODULES)}
