"""AppArmor drop-in for libvirt's QEMU abstraction: read access to the ROM and the AML."""

from __future__ import annotations

from ...model import Model


def render(model: Model, templates) -> dict[str, bytes]:
    path = f"etc/apparmor.d/abstractions/libvirt-qemu.d/{model.package}"
    return {path: templates.render("apparmor-libvirt-qemu.j2", model)}
