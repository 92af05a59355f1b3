"""modprobe.d: in boot mode vfio-pci claims the GPU's ids and loads before every driver that
could; in on-demand mode it claims nothing (and NVIDIA's runtime D3 is on, Turing and later)."""

from __future__ import annotations

from ... import paths
from ...model import Model


def render(model: Model, templates) -> dict[str, bytes]:
    # /usr/lib/modprobe.d, not /etc: it is not a conffile, so "apt remove" takes it away.
    shipped, _ = paths.mode_files(model.package)["modprobe.conf"]
    return {str(shipped).lstrip("/"): templates.render("modprobe.conf.j2", model, mode=model.mode)}
