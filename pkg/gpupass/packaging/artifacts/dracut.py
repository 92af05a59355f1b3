"""dracut conf.d: the vfio modules in the initramfs, loaded first (Ubuntu 25.10 and later),
in boot mode.

dracut ignores initramfs-tools' modules.d; ``force_drivers`` both copies the modules into
the image (hostonly or not) and loads them early, before udev lets a GPU driver bind.
"""

from __future__ import annotations

from ... import paths
from ...model import Model
from .initramfs import MODULES


def render(model: Model, templates) -> dict[str, bytes]:
    # /usr/lib, not /etc/dracut.conf.d: not a conffile, so "apt remove" takes it away.
    shipped, _ = paths.mode_files(model.package)["dracut.conf"]
    return {str(shipped).lstrip("/"): templates.render("dracut.conf.j2", model, modules=MODULES, mode=model.mode)}
