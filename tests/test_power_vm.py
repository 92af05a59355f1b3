"""gpupass power apply against a booted guest under the private libvirtd (TCG).

One boot serves the three cases. The guest's /init (busybox, a Debian kernel with its ACPI
``button`` and ``evdev`` modules) reads the ACPI power button's input device: it ignores the
first two presses and powers off on the third, saying each on its serial console. The laptop
is a fixture tree (tests/sysfs.py) with its AC adapter offline:

1. the guest ignores the button: still running after the timeout, exit 1, and the message says so;
2. it ignores it again, and the AC adapter comes back during the wait: the wait ends, exit 0;
3. it obeys: shut off within the timeout, and libvirt's reason is shutdown, not destroyed;
4. the same guest started as a transient domain (``virsh create``), obeying the first press:
   it shuts down and libvirt forgets it, which is success too, not an error.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from gpupass.laptop.power import apply as power_apply
from gpupass.laptop.power import policy as power_policy

from . import vm_smoke
from .libvirt import Daemon
from .sysfs import build_sysfs
from .test_power import DISCHARGING

pytestmark = pytest.mark.vm

MARK = "GPUPASS-POWER"
NAME = "gpupass-power-guest"
WAIT = 300  # seconds at most for the guest to answer under TCG on a 2-core machine (it takes a few)
# The event device of the ACPI power button ("Power Button", as drivers/acpi/button.c names
# its input device); one press is four 24-byte struct input_event: key down, sync, key up, sync.
INIT = (
    vm_smoke.BUSYBOX_INIT
    + vm_smoke.INSMOD
    + """\
event=
i=0
while [ -z "$event" ] && [ $i -lt 100 ]; do
    for input in /sys/class/input/event*; do
        [ "$(cat "$input/device/name" 2>/dev/null)" = "Power Button" ] && event=${{input##*/}} && break
    done
    i=$((i + 1))
    sleep 0.2
done
obey=3
for word in $(cat /proc/cmdline); do
    case $word in gpupass.obey=*) obey=${{word#gpupass.obey=}};; esac
done
echo "{mark} ready $event"
presses=0
while :; do
    head -c 96 "/dev/input/$event" >/dev/null
    presses=$((presses + 1))
    if [ $presses -lt $obey ]; then
        echo "{mark} press $presses ignored"
    else
        echo "{mark} press $presses: powering off"
        poweroff -f
    fi
done
"""
)
DOMAIN = """\
<domain type="qemu">
  <name>{name}</name>
  <memory unit="MiB">256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=0 rdinit=/init{extra}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <serial type="file"><source path="{serial}"/><target port="0"/></serial>
  </devices>
</domain>
"""


class Guest:
    def __init__(self, libvirtd: Daemon, serial: Path) -> None:
        self.libvirtd, self.serial_log = libvirtd, serial

    def serial(self) -> str:
        return self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""

    def wait_for(self, line: str) -> None:
        """Until the guest has printed ``line`` (polling its console; the guest's pace is TCG's)."""
        deadline = time.monotonic() + WAIT
        while f"{MARK} {line}" not in self.serial():
            if time.monotonic() > deadline or "Kernel panic" in self.serial():
                pytest.fail(f"the guest did not print {line!r}:\n{self.serial()}")
            time.sleep(0.5)

    def state(self) -> str:
        return self.libvirtd.virsh("domstate", "--reason", NAME).stdout.strip()


def laptop(tmp_path: Path, timeout: int) -> tuple[Path, power_policy.Config]:
    root = build_sysfs(tmp_path / f"root-{timeout}", battery=DISCHARGING, ac_online="0")
    return root, power_policy.Config(on_battery="shutdown", shutdown_timeout=timeout, domain=NAME)


def apply(root: Path, config: power_policy.Config, uri: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = power_apply.apply(config, root, uri, tell=power_apply.Teller(out, root))
    return status, out.getvalue().splitlines()


def test_shutdown_on_battery_asks_waits_and_never_forces(libvirtd: Daemon, tmp_path: Path) -> None:
    kernel = vm_smoke.debian_kernel()
    (tmp_path / "initrd").write_bytes(vm_smoke.initramfs(kernel, INIT, MARK))
    serial = tmp_path / "serial.log"
    xml = DOMAIN.format(name=NAME, kernel=kernel.vmlinuz, initrd=tmp_path / "initrd", serial=serial, extra="")
    (tmp_path / "domain.xml").write_text(xml)
    libvirtd.virsh("define", str(tmp_path / "domain.xml"))
    guest = Guest(libvirtd, serial)
    try:
        libvirtd.virsh("start", NAME)
        guest.wait_for("ready event")
        where = "on battery: BAT0 discharging, 10.2 W, 76 %"

        # 1. The guest ignores the button: it stays running, and the user is told.
        root, config = laptop(tmp_path, timeout=5)
        status, lines = apply(root, config, libvirtd.uri)
        guest.wait_for("press 1 ignored")
        assert (status, lines) == (
            1,
            [
                f"gpupass power: {where}; asked {NAME} to shut down, waiting up to 5 s",
                f"gpupass power: {NAME} is still running 5 s after it was asked to shut down; gpupass never forces"
                " a VM off: shut Windows down yourself, and the dGPU can power off",
            ],
        )
        assert guest.state() == "running (booted)"

        # 2. The AC adapter comes back while gpupass waits: it stops waiting.
        root, config = laptop(tmp_path, timeout=3600)
        result: list[tuple[int, list[str]]] = []
        waiting = threading.Thread(target=lambda: result.append(apply(root, config, libvirtd.uri)))
        waiting.start()
        guest.wait_for("press 2 ignored")
        (root / "sys/class/power_supply/AC/online").write_text("1\n")
        waiting.join(WAIT)
        assert result == [
            (
                0,
                [
                    f"gpupass power: {where}; asked {NAME} to shut down, waiting up to 3600 s",
                    f"gpupass power: the AC adapter is back: stopped waiting for {NAME} to shut down (the guest was"
                    " already asked)",
                ],
            )
        ]
        assert guest.state() == "running (booted)"

        # 3. The guest obeys: shut off within the timeout, by its own shutdown.
        root, config = laptop(tmp_path, timeout=WAIT)
        status, lines = apply(root, config, libvirtd.uri)
        assert f"{MARK} press 3: powering off" in guest.serial()
        assert (status, lines) == (
            0,
            [
                f"gpupass power: {where}; asked {NAME} to shut down, waiting up to {WAIT} s",
                f"gpupass power: {NAME} is shut off (shutdown): the dGPU can power off",
            ],
        )
        assert guest.state() == "shut off (shutdown)"  # not "shut off (destroyed)"

        # 4. A transient domain (virsh create) vanishes once it has shut down: that is success.
        libvirtd.virsh("undefine", NAME)
        serial.unlink()
        (tmp_path / "transient.xml").write_text(xml.replace("rdinit=/init", "rdinit=/init gpupass.obey=1"))
        libvirtd.virsh("create", str(tmp_path / "transient.xml"))
        guest.wait_for("ready event")
        status, lines = apply(root, config, libvirtd.uri)
        assert f"{MARK} press 1: powering off" in guest.serial()
        assert (status, lines) == (
            0,
            [
                f"gpupass power: {where}; asked {NAME} to shut down, waiting up to {WAIT} s",
                f"gpupass power: {NAME} has shut down and is gone (a transient domain): the dGPU can power off",
            ],
        )
        assert NAME not in libvirtd.virsh("list", "--all", "--name").stdout.split()
    finally:
        libvirtd.virsh("destroy", NAME, check=False)  # the test's own cleanup, not gpupass
        libvirtd.virsh("undefine", NAME, check=False)
