"""The installed package's mode: what gpupass mode switched to, else the model's own."""

from __future__ import annotations

from pathlib import Path

from ... import paths
from ...errors import GpupassError
from ...model import MODES, Model
from ...paths import under


def current(model: Model, root: Path = Path("/")) -> str:
    """The mode the next boot starts in: the state file gpupass mode wrote, else the model's."""
    path = under(root, paths.MODE_STATE)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return model.mode
    if value not in MODES:
        raise GpupassError(
            f"{paths.MODE_STATE}: {value!r} is not a mode (expected {' or '.join(MODES)})",
            hint="switch again: sudo gpupass mode boot|on-demand",
        )
    return value
