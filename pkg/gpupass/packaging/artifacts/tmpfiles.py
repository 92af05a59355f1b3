"""tmpfiles.d entry: Looking Glass's shared memory file, made at boot for QEMU and the client."""

from __future__ import annotations

from ...model import Model


def render(model: Model, templates) -> dict[str, bytes]:
    return {f"usr/lib/tmpfiles.d/{model.package}.conf": templates.render("tmpfiles-looking-glass.conf.j2", model)}
