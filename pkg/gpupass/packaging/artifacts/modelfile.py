"""The resolved model as TOML, for the on-laptop ``gpupass`` command (check, vbios)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ... import paths
from ...model import Model, toml_value


def _table(obj: Any, prefix: str) -> list[str]:
    scalars, tables, arrays = [], [], []
    for f in dataclasses.fields(obj):
        if "constraint" not in f.metadata:
            continue  # derived, e.g. the id (the file name)
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            tables += ["", f"[{name}]", *_table(value, name + ".")]
        elif value and isinstance(value, tuple) and dataclasses.is_dataclass(value[0]):
            for item in value:
                arrays += ["", f"[[{name}]]", *_table(item, name + ".")]
        else:
            scalars.append(f"{f.name} = {toml_value(value)}")
    return scalars + tables + arrays


def to_toml(model: Model) -> str:
    header = [f"# {model.package}: the resolved model (every default filled in), read by gpupass."]
    return "\n".join(header + _table(model, "")) + "\n"


def render(model: Model, templates) -> dict[str, bytes]:
    return {str(paths.installed_model(model.id)).lstrip("/"): to_toml(model).encode("utf-8")}
