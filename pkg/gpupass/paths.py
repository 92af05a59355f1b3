"""Where things live: in the source tree, and on the laptop once the package is installed.

One laptop carries one model package (they conflict with each other), so the installed
paths need no model id in them; files read by other packages' tools (grub.d, modprobe.d,
initramfs modules.d, AppArmor) carry the package name so their owner is obvious.
"""

from __future__ import annotations

import os
from pathlib import Path

# The source tree: this file is pkg/gpupass/paths.py.
SOURCE_ROOT = Path(os.environ.get("GPUPASS_SOURCE", Path(__file__).resolve().parents[2]))
MODELS_DIR = SOURCE_ROOT / "models"
TEMPLATES_DIR = SOURCE_ROOT / "config-templates"
ACPI_DIR = SOURCE_ROOT / "acpi"
DEBIAN_DIR = SOURCE_ROOT / "debian"
BUILD_DIR = SOURCE_ROOT / "build"

# Installed on the laptop (absolute paths as the package ships them).
SHARE = Path("/usr/share/gpupass")
# The model the package was built for, under its own id (one model package per laptop).
INSTALLED_MODELS = SHARE / "models"


def under(root: Path, path: str | Path) -> Path:
    """``path`` of the installed system as it is under ``root``: ``/`` on the laptop, a fixture
    tree in the tests (``--root DIR``)."""
    return root / str(path).lstrip("/")


def installed_model(model_id: str) -> Path:
    return INSTALLED_MODELS / f"{model_id}.toml"


INSTALLED_AML = SHARE / "ssdt-battery.aml"
# The experimental NVPCF (Dynamic Boost) SSDT of a model with guest.nvpcf.
NVPCF_AML = SHARE / "ssdt-nvpcf.aml"
INSTALLED_DOMAIN = SHARE / "domain.xml"
STATE_DIR = Path("/var/lib/gpupass")
VBIOS_ROM = STATE_DIR / "vbios.rom"
# The guest SSDT whose _ROM serves that vBIOS, written beside it whenever it is stored.
ROM_AML = STATE_DIR / "ssdt-rom.aml"
VBIOS_UNIT = "gpupass-vbios.service"
# gpupass power: the user's settings (a conffile), the domain vm define/attach last made or
# changed, the libvirt hook's record of the last release, the unit udev starts.
POWER_CONF = Path("/etc/gpupass/power.conf")
VM_RECORD = STATE_DIR / "vm"
RELEASE_RECORD = STATE_DIR / "power-release.json"
POWER_UNIT = "gpupass-power.service"
LIBVIRT_HOOK = Path("/usr/lib/gpupass/libvirt-qemu-hook")
# gpupass mode: the mode "gpupass mode" switched to (absent: the model's own), each mode's
# variant of the files that differ by mode (shipped, copied into /etc by the switch), and the
# maintainer scripts' shell functions the switch runs to regenerate GRUB's configuration.
MODE_STATE = STATE_DIR / "mode"
MODE_VARIANTS = SHARE / "modes"
MAINTSCRIPT_FUNCTIONS = Path("/usr/lib/gpupass/maintscript-functions.sh")


def mode_files(package: str) -> dict[str, tuple[Path, Path]]:
    """The files that differ by mode, by variant name: (the one the package ships under /usr/lib,
    its same-named override in /etc, which masks it). modprobe, dracut and udev all read /etc's
    copy instead of /usr/lib's; initramfs-tools copies both modprobe.d directories into the image."""
    return {
        "modprobe.conf": (Path(f"/usr/lib/modprobe.d/{package}.conf"), Path(f"/etc/modprobe.d/{package}.conf")),
        "dracut.conf": (
            Path(f"/usr/lib/dracut/dracut.conf.d/{package}.conf"),
            Path(f"/etc/dracut.conf.d/{package}.conf"),
        ),
        "udev.rules": (
            Path(f"/usr/lib/udev/rules.d/70-{package}-desktop.rules"),
            Path(f"/etc/udev/rules.d/70-{package}-desktop.rules"),
        ),
    }


LIBVIRT_IMAGES = Path("/var/lib/libvirt/images")  # where vm define puts a new disk
# Looking Glass (gpupass vm --looking-glass): the shared memory file the package's tmpfiles.d
# entry makes at boot, for the group libvirt's QEMU runs in on Debian and Ubuntu (libvirt-qemu is
# in kvm), read and written by the user's client as a member of that group; kvmfr's device.
LOOKING_GLASS_SHM = Path("/dev/shm/looking-glass")
LOOKING_GLASS_GROUP = "kvm"
LOOKING_GLASS_MODE = 0o660
KVMFR_DEVICE = Path("/dev/kvmfr0")
