"""The first-boot vBIOS extraction service."""

from __future__ import annotations

from ... import paths
from ...model import Model


def render(model: Model, templates) -> dict[str, bytes]:
    return {f"usr/lib/systemd/system/{paths.VBIOS_UNIT}": templates.render("gpupass-vbios.service.j2", model)}
