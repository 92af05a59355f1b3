"""gpupass mode: the desktop's udev rule of the model's mode, and every mode's variant of the
files that differ by mode, under /usr/share/gpupass/modes/<mode>/, which ``gpupass mode``
copies into /etc to mask the shipped ones (and removes to unmask them)."""

from __future__ import annotations

from ... import paths
from ...model import MODES, Model
from .initramfs import MODULES

TEMPLATES = {
    "modprobe.conf": "modprobe.conf.j2",
    "dracut.conf": "dracut.conf.j2",
    "udev.rules": "udev-desktop.rules.j2",
}


def render(model: Model, templates) -> dict[str, bytes]:
    shipped, _ = paths.mode_files(model.package)["udev.rules"]
    files = {str(shipped).lstrip("/"): templates.render(TEMPLATES["udev.rules"], model, mode=model.mode)}
    for mode in MODES:
        for name, template in TEMPLATES.items():
            path = str(paths.MODE_VARIANTS / mode / name).lstrip("/")
            files[path] = templates.render(template, model, mode=mode, modules=MODULES)
    return files
