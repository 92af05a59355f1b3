"""Which model a command is for: a model file of the source tree (by id or path), or the one
the installed ``gpupass-<model>`` package ships. Both sides and every command area use these."""

from __future__ import annotations

from pathlib import Path

from . import model, paths
from .errors import GpupassError, ModelError


def known_models() -> list[str]:
    return sorted(p.stem for p in paths.MODELS_DIR.glob("*.toml"))


def model_file(arg: str) -> tuple[Path, str]:
    """A model id (looked up in models/) or a path to a .toml; returns (path, display name)."""
    if arg.endswith(".toml") or "/" in arg:
        return Path(arg), arg
    path = paths.MODELS_DIR / f"{arg}.toml"
    if not path.exists():
        known = ", ".join(known_models()) or "none"
        raise ModelError(f"unknown model {arg!r} (known models: {known})")
    return path, f"models/{arg}.toml"


def load_model(arg: str) -> tuple[model.Model, Path]:
    path, shown = model_file(arg)
    return model.load(path, shown), path


def installed_model(root: Path = Path("/")) -> model.Model:
    """The model of the installed gpupass-<model> package (model packages conflict: one at most),
    under ``root`` (a fixture tree) when given."""
    found = sorted((root / paths.INSTALLED_MODELS.relative_to("/")).glob("*.toml"))
    if len(found) != 1:
        raise GpupassError(
            f"{paths.INSTALLED_MODELS}: {len(found)} model files (expected the installed package's one)",
            hint="install a gpupass-<model> package, or pass --model",
        )
    return model.load(found[0])


def chosen_model(arg: str | None) -> model.Model:
    """``--model`` when given, else the installed package's model."""
    return load_model(arg)[0] if arg else installed_model()
