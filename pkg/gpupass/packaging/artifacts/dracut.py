"""dracut conf.d: the vfio modules in the initramfs, loaded first (Ubuntu 25.10 and later).

dracut ignores initramfs-tools' modules.d; ``force_drivers`` both copies the modules into
the image (hostonly or not) and loads them early, before udev lets a GPU driver bind.
"""

from __future__ import annotations

from ...model import Model
from .initramfs import MODULES


def render(model: Model, templates) -> dict[str, bytes]:
    # /usr/lib, not /etc/dracut.conf.d: not a conffile, so "apt remove" takes it away.
    path = f"usr/lib/dracut/dracut.conf.d/{model.package}.conf"
    return {path: templates.render("dracut.conf.j2", model, modules=MODULES)}
