"""Looking Glass's shared memory end to end: the model's domain made by ``gpupass vm define
--looking-glass``, started by the private libvirtd and booted under TCG with a busybox guest.

The guest finds the IVSHMEM device (PCI 1af4:1110), says its BAR2's address and size (from
sysfs ``resource``), writes a value at the start of BAR2 (busybox ``devmem`` on the BAR's
physical address, through /dev/mem), then waits for the value the host writes 4 KiB further
on. The host reads the guest's value from the shared memory file QEMU maps
(``/dev/shm/looking-glass``, private to the daemon's namespace: tests/libvirt.py) and writes
its own there. One boot, every check.
"""

from __future__ import annotations

import os
import re
import struct
import time
from pathlib import Path

import pytest

from gpupass.laptop.vm.looking_glass import MIB, SHM_FILE, LookingGlass

from . import vm_smoke
from .conftest import ROOT
from .libvirt import Daemon
from .test_vm_smoke import BOOT_TIMEOUT, Boot, guest_kernel, smoke_domain  # noqa: F401 - guest_kernel: the fixture

pytestmark = pytest.mark.vm

MARK = "GPUPASS-LG"
GUEST_VALUE = 0x47504755  # what the guest writes at BAR2 + 0
HOST_VALUE = 0x484F5354  # what the host writes at offset 4096 of the file, BAR2 + 4096
INIT = (
    (
        vm_smoke.BUSYBOX_INIT
        + """\
device=
for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor"):$(cat "$d/device")" = "0x1af4:0x1110" ] && device=$d
done
echo "{mark} ivshmem ${{device:-none}}"
[ -n "$device" ] || poweroff -f
# resource: one line per BAR (start, end, flags); BAR2 is the shared memory.
set -- $(sed -n 3p "$device/resource")
start=$1
echo "{mark} bar2 $1 $2"
# Memory decoding on (no guest driver claims the device), then the guest's value.
echo 1 > "$device/enable"
devmem "$start" 32 {guest_value} && echo "{mark} guest wrote"
i=0
value=
while [ $i -lt 1200 ]; do
    value=$(devmem $((start + 4096)) 32)
    [ "$value" = "{host_value}" ] && break
    i=$((i + 1))
    sleep 0.1
done
echo "{mark} guest read $value"
echo "{mark} done"
poweroff -f
"""
    )
    .replace("{guest_value}", f"0x{GUEST_VALUE:08X}")
    .replace("{host_value}", f"0x{HOST_VALUE:08X}")
)


def wait_for(boot: Boot, line: str, started: float) -> re.Match[str]:
    """Until the guest's console has a line ``MARK line`` (a regular expression)."""
    pattern = re.compile(rf"^{MARK} {line}\r?$", re.M)
    while not (found := pattern.search(boot.serial())):
        if "Kernel panic" in boot.serial() or time.monotonic() - started > BOOT_TIMEOUT:
            pytest.fail(f"the guest did not print {MARK} {line}\n{boot.logs()}")
        if boot.libvirtd.virsh("domstate", boot.name).stdout.strip() == "shut off":
            pytest.fail(f"the guest powered off before {MARK} {line}\n{boot.logs()}")
        time.sleep(0.3)
    return found


def test_guest_and_host_see_each_others_writes_through_the_shared_memory(
    libvirtd: Daemon,
    guest_kernel: vm_smoke.Kernel,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    lg = LookingGlass(1920, 1080)  # the model's vm.panel (its default): 32 MiB
    loaded, domain, serial_log = smoke_domain(
        ROOT / "models" / "aurora-z.toml", guest_kernel, tmp_path, init=INIT, mark=MARK, looking_glass=lg
    )
    assert loaded.vm.panel == "1920x1080" and lg.size_mib == 32
    libvirtd.virsh("define", str(domain))
    boot = Boot(libvirtd, loaded.vm.name, serial_log)
    shm = libvirtd.path(SHM_FILE)
    started = time.monotonic()
    try:
        libvirtd.virsh("start", loaded.vm.name)
        assert re.fullmatch(r"/sys/bus/pci/devices/[0-9a-f:.]+", wait_for(boot, r"ivshmem (\S+)", started).group(1))
        bar = wait_for(boot, r"bar2 (0x[0-9a-f]+) (0x[0-9a-f]+)", started)
        start, end = (int(bar.group(n), 16) for n in (1, 2))
        assert end - start + 1 == 32 * MIB, f"BAR2 is {end - start + 1} bytes"
        wait_for(boot, "guest wrote", started)
        assert shm.stat().st_size == 32 * MIB  # QEMU sized the file as the domain asks
        fd = os.open(shm, os.O_RDWR)
        try:
            assert struct.unpack("<I", os.pread(fd, 4, 0)) == (GUEST_VALUE,)
            os.pwrite(fd, struct.pack("<I", HOST_VALUE), 4096)
        finally:
            os.close(fd)
        read = wait_for(boot, r"guest read (\S*)", started).group(1)
        assert read == f"0x{HOST_VALUE:08X}"
        wait_for(boot, "done", started)
    finally:
        print(f"\nLooking Glass guest: {time.monotonic() - started:.1f} s from start to done")
        libvirtd.virsh("destroy", loaded.vm.name, check=False)
        libvirtd.virsh("undefine", "--nvram", loaded.vm.name, check=False)
