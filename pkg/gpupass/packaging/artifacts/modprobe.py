"""modprobe.d: vfio-pci claims the GPU's ids and loads before every driver that could."""

from __future__ import annotations

from ...model import Model


def render(model: Model, templates) -> dict[str, bytes]:
    # /usr/lib/modprobe.d, not /etc: it is not a conffile, so "apt remove" takes it away.
    return {f"usr/lib/modprobe.d/{model.package}.conf": templates.render("modprobe.conf.j2", model)}
