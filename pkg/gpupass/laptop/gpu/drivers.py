"""Which driver holds the dGPU's functions on the host, and how to hand them to vfio-pci."""

from __future__ import annotations

from ..machine import PciDevice

VFIO_DRIVER = "vfio-pci"
LOCAL_MODPROBE = "/etc/modprobe.d/gpupass-local.conf"
REBUILD_INITRAMFS = "sudo update-initramfs -u (or sudo dracut --force)"


def softdep_fix(module: str) -> str:
    return f'add "softdep {module} pre: vfio-pci" to {LOCAL_MODPROBE}, then {REBUILD_INITRAMFS} and reboot'


def module_of(device: PciDevice) -> str:
    """The kernel module of the driver bound to ``device`` (its name with _ where sysfs lacks it)."""
    return device.driver_module or (device.driver or "").replace("-", "_")
