"""Runs inside tests/test_gpu_vm.py's guest (Debian's python3, standard library only): drives
``python3 -m gpupass gpu claim | release`` on the emulated display + HDA pair and prints each
result on the serial console, every line starting with MARK. Never waits on a process that may
be stuck in state D: after a bounded wait it says so, and the guest is reset.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

MARK = "GPUPASS-ONDEMAND"
GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
DEVICES = "/sys/bus/pci/devices"
GPUPASS = [sys.executable, "-m", "gpupass", "gpu"]
MODEL = ["--model", "/model.toml"]
WAIT = 120  # seconds for one gpupass run under TCG; longer means a write blocked


def vfio_io(n: int) -> int:
    """linux/vfio.h: _IO(VFIO_TYPE, VFIO_BASE + n), VFIO_TYPE ';', VFIO_BASE 100."""
    return (ord(";") << 8) + 100 + n


VFIO_GET_API_VERSION, VFIO_CHECK_EXTENSION, VFIO_SET_IOMMU = vfio_io(0), vfio_io(1), vfio_io(2)
VFIO_GROUP_GET_STATUS, VFIO_GROUP_SET_CONTAINER, VFIO_GROUP_GET_DEVICE_FD = vfio_io(3), vfio_io(4), vfio_io(6)
VFIO_API_VERSION, VFIO_TYPE1V2_IOMMU, VFIO_GROUP_FLAGS_VIABLE = 0, 3, 1


def say(*words: object) -> None:
    print(MARK, *words, flush=True)


def reset() -> None:
    """End the guest: ``poweroff -f`` hangs in device_shutdown with a write blocked in state D."""
    say("reset")
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("b")
    time.sleep(60)


def driver(address: str) -> str:
    try:
        return os.path.basename(os.readlink(f"{DEVICES}/{address}/driver"))
    except OSError:
        return "none"


def nodes(address: str) -> list[str]:
    """The function's device nodes, by its own sysfs entries (named paths, no recursion)."""
    directory = f"{DEVICES}/{address}"
    found = []
    for sub, prefix in (("drm", ""), ("sound", "card")):
        try:
            names = sorted(n for n in os.listdir(f"{directory}/{sub}") if n.startswith(prefix))
        except OSError:
            continue
        for name in names:
            if sub == "drm":
                found.append(f"dri/{name}")
            else:
                found += [f"snd/{e}" for e in sorted(os.listdir(f"{directory}/sound/{name}")) if "C" in e]
    return found


def in_state_d() -> set[str]:
    """Every process in state D (uninterruptible sleep) now, as /proc/PID/stat shows it."""
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] == "D":
                found.add(f"{pid}{stat[stat.index(' ') : stat.rindex(')') + 1]}")
    return found


def stuck() -> list[str]:
    """The processes in state D both now and a second later. A blocked write never leaves D; a
    kernel worker passes through it for a moment (runtime PM resuming the audio function was
    seen so, 'kworker/0:2+pm'), which is no block."""
    first = in_state_d()
    time.sleep(1)
    return sorted(first & in_state_d())


def gpupass(action: str) -> int:
    """Run ``gpupass gpu ACTION``; print its exit status and every line it wrote."""
    process = subprocess.Popen([*GPUPASS, action, *MODEL], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = process.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        say(action, "blocked", "stuck=" + ";".join(stuck()))
        reset()
        raise
    for line in out.splitlines():
        say(action, "out", line)
    say(action, "exit", process.returncode)
    say(action, "stuck", ";".join(stuck()) or "none")
    return process.returncode


def report(label: str) -> None:
    say(label, "drivers", driver(GPU), driver(AUDIO))
    say(label, "nodes", " ".join(nodes(GPU) + nodes(AUDIO)) or "none")


def wait_for_nodes(seconds: float = 30) -> None:
    """The drivers bind and make their nodes asynchronously (snd_hda_intel probes in a work item)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(n.startswith("dri/") for n in nodes(GPU)) and any(n.startswith("snd/") for n in nodes(AUDIO)):
            return
        time.sleep(0.2)


def holding(path: str) -> subprocess.Popen:
    """A process holding ``path`` open, as a sound server or a compositor would."""
    code = "import os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); print('ready', flush=True); time.sleep(3600)"
    process = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    say("holder", process.pid, path)
    return process


def vfio_user(hold: bool) -> subprocess.Popen | None:
    """Open the group as QEMU does: container, API version, group viable, IOMMU type, device fd.
    With ``hold`` a child process keeps them open and this returns it."""
    group = os.path.basename(os.readlink(f"{DEVICES}/{GPU}/iommu_group"))
    code = f"""
import fcntl, os, struct, sys, time
container = os.open("/dev/vfio/vfio", os.O_RDWR)
api = fcntl.ioctl(container, {VFIO_GET_API_VERSION})
type1v2 = fcntl.ioctl(container, {VFIO_CHECK_EXTENSION}, {VFIO_TYPE1V2_IOMMU})
group = os.open("/dev/vfio/{group}", os.O_RDWR)
status = bytearray(struct.pack("II", 8, 0))
fcntl.ioctl(group, {VFIO_GROUP_GET_STATUS}, status)
viable = struct.unpack("II", status)[1] & {VFIO_GROUP_FLAGS_VIABLE}
fcntl.ioctl(group, {VFIO_GROUP_SET_CONTAINER}, struct.pack("i", container))
fcntl.ioctl(container, {VFIO_SET_IOMMU}, {VFIO_TYPE1V2_IOMMU})
device = fcntl.ioctl(group, {VFIO_GROUP_GET_DEVICE_FD}, bytearray(b"{GPU}\\0"))
print("api", api, "type1v2", type1v2, "viable", viable, "device-fd", "yes" if device >= 0 else "no", flush=True)
if sys.argv[1] == "hold":
    time.sleep(3600)
"""
    process = subprocess.Popen(
        [sys.executable, "-c", code, "hold" if hold else "once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = process.stdout.readline().strip()
    say("vfio", f"group={group}", first)
    if hold and first.startswith("api"):
        say("vfio-holder", process.pid)
        return process
    for line in process.stdout:  # a traceback, when it failed
        say("vfio", line.rstrip())
    process.wait()
    return None


def end(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def main() -> None:
    wait_for_nodes()
    say("step", "boot")
    report("boot")
    say("step", "nothing-held")  # claim moves both functions to vfio-pci, the group opens, release gives them back
    gpupass("claim")
    report("claimed")
    vfio_user(hold=False)
    gpupass("release")
    wait_for_nodes()
    report("released")
    say("step", "audio-held")  # a process holds the audio function's control node: claim refuses
    control = next(n for n in nodes(AUDIO) if n.startswith("snd/controlC"))
    holder = holding(f"/dev/{control}")
    gpupass("claim")
    report("after")
    end(holder)
    say("step", "drm-held")  # the same with the display function's DRM card
    card = next(n for n in nodes(GPU) if n.startswith("dri/card"))
    holder = holding(f"/dev/{card}")
    gpupass("claim")
    report("after")
    end(holder)
    say("step", "vm-up")  # on vfio-pci, a process (the VM) holds the VFIO device: release refuses
    gpupass("claim")
    vm = vfio_user(hold=True)
    gpupass("release")
    report("after")
    if vm:
        end(vm)
    say("step", "vm-gone")
    gpupass("release")
    wait_for_nodes()
    report("after")
    say("step", "done")


if __name__ == "__main__":
    try:
        main()
    finally:
        reset()
