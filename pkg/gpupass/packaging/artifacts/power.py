"""gpupass power: its settings (a conffile), the udev rule and unit that run gpupass power apply
when the AC adapter comes or goes, and the libvirt hook that records what the dGPU did on release.

The hook ships under /usr/lib/gpupass; debian/rules links it into /etc/libvirt/hooks/qemu.d/
(a link is no conffile, so apt remove takes it away).

power.conf is one path for every model, and the same bytes in every model's package: a
switch to another model's package takes the admin's settings over as they are, without a
conffile prompt (dpkg asks only when the package's own version changed)."""

from __future__ import annotations

from ... import paths
from ...model import Model


def render(model: Model, templates) -> dict[str, bytes]:
    return {
        str(paths.POWER_CONF).lstrip("/"): templates.render("power.conf.j2", model),
        f"usr/lib/udev/rules.d/90-{model.package}.rules": templates.render("udev-power.rules.j2", model),
        f"usr/lib/systemd/system/{paths.POWER_UNIT}": templates.render("gpupass-power.service.j2", model),
        str(paths.LIBVIRT_HOOK).lstrip("/"): templates.render("libvirt-qemu-hook.j2", model),
    }
