"""The udev rule, run by the real udevadm on fixture power supplies.

``udevadm test`` runs every rule for one device and prints the programs its RUN keys would
start (it starts none). The fixture /sys (tests/sysfs.py: an ACPI AC adapter and battery as
the kernel lays them out, with their uevent files) is bind-mounted over /sys and the rule put
in /run/udev/rules.d, both in a private mount namespace; SYSTEMD_DEVICE_VERIFY_SYSFS=0 is
sd-device's documented switch for a /sys that is not sysfs. Debian 13's ``udevadm verify`` runs
in the release chroot (test_releases.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gpupass.packaging import render

from .sysfs import build_sysfs
from .test_doctor import AURORA
from .test_power import DISCHARGING

pytestmark = pytest.mark.tool

RULE = "usr/lib/udev/rules.d/90-gpupass-aurora-z.rules"
STARTS = "run: '/usr/bin/systemctl --no-block start gpupass-power.service'"
SCRIPT = """set -e
mount --bind "$1/sys" /sys
mount -t tmpfs tmpfs /run/udev/rules.d
cp "$1/rule" /run/udev/rules.d/90-gpupass-aurora-z.rules
SYSTEMD_DEVICE_VERIFY_SYSFS=0 udevadm test --action="$2" "$3"
"""


def udevadm_test(tmp_path: Path, action: str, device: str) -> str:
    if os.geteuid() != 0:
        pytest.skip("a private mount namespace needs root")
    if shutil.which("udevadm") is None:
        pytest.fail("udevadm not found: apt-get install udev")
    root = tmp_path / "root"
    if not root.exists():
        build_sysfs(root, battery=DISCHARGING, ac_online="0")
        (root / "rule").write_bytes(render.render_all(AURORA)[RULE])
    Path("/run/udev/rules.d").mkdir(parents=True, exist_ok=True)  # the mount point (udev makes it at boot)
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", SCRIPT, "sh", str(root), action, device],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "90-gpupass-aurora-z.rules" in result.stderr  # the rule was read (udevadm logs to stderr)
    return result.stdout


def test_the_ac_adapter_coming_or_going_starts_the_unit(tmp_path: Path) -> None:
    out = udevadm_test(tmp_path, "change", "/sys/class/power_supply/AC")
    assert "POWER_SUPPLY_TYPE=Mains" in out and "SUBSYSTEM=power_supply" in out
    assert STARTS in out.splitlines()


@pytest.mark.parametrize(
    ("action", "device"),
    [("change", "/sys/class/power_supply/BAT0"), ("add", "/sys/class/power_supply/AC")],
    ids=["battery-change", "adapter-add"],
)
def test_nothing_else_starts_it(tmp_path: Path, action: str, device: str) -> None:
    """A battery's change events (its charge, every few seconds) and the adapter's appearance at boot."""
    out = udevadm_test(tmp_path, action, device)
    assert "SUBSYSTEM=power_supply" in out
    assert STARTS not in out.splitlines()
