"""The resolved model as TOML, for the on-laptop ``gpupass`` command (check, vbios)."""

from __future__ import annotations

from ... import paths
from ...model import Model
from ...model import to_toml as to_toml  # below both sides: gpupass report writes the same text

__all__ = ["render", "to_toml"]


def render(model: Model, templates) -> dict[str, bytes]:
    return {str(paths.installed_model(model.id)).lstrip("/"): to_toml(model).encode("utf-8")}
