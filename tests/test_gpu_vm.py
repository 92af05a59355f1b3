"""gpupass gpu claim | release inside an emulated guest, the project's own code running there.

One boot of a q35 machine under TCG with an emulated Intel IOMMU (interrupt remapping,
caching mode, as VFIO in a guest needs) and, behind one pcie-root-port, a bochs-display at
01:00.0 (multifunction) and an ich9-intel-hda with an hda-duplex codec at 01:00.1: one IOMMU
group, like a laptop's dGPU and its HDMI audio (passthrough-notes.md, "On-demand switching").
Debian's kernel loads vfio-pci, bochs, snd_hda_codec_generic and snd_hda_intel; Debian's
python3 runs tests/gpu_vm_guest.py, which runs ``python3 -m gpupass gpu claim | release
--model`` (tests/data/emulated-pair.toml) with nothing held, with a process holding the audio
control node, one holding the DRM card, and one holding the VFIO device. QEMU runs directly:
the test needs no libvirt. The guest ends itself with a reset; the test kills QEMU if it
ever stops answering (a write blocked in state D would do that).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from . import python_guest, vm_smoke

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parents[1]
MARK = "GPUPASS-ONDEMAND"
GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
WAIT = 170  # seconds for the whole guest (about a minute on an idle 2-core machine)
INIT = (
    vm_smoke.BUSYBOX_INIT
    + vm_smoke.INSMOD
    + """\
PATH=/usr/bin:/bin PYTHONPATH=/opt/gpupass python3 /guest.py
echo "{mark} guest script ended"
echo b > /proc/sysrq-trigger
"""
)
QEMU = [
    "qemu-system-x86_64", "-machine", "q35,kernel-irqchip=split", "-accel", "tcg",
    "-cpu", "qemu64,vendor=GenuineIntel", "-m", "512", "-smp", "1",
    "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot",
    "-device", "intel-iommu,intremap=on,caching-mode=on",
    "-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,addr=01.0",
    "-device", "bochs-display,bus=rp1,addr=00.0,multifunction=on",
    "-device", "ich9-intel-hda,id=hda,bus=rp1,addr=00.1",
    "-audiodev", "none,id=silent", "-device", "hda-duplex,bus=hda.0,audiodev=silent",
]  # fmt: skip
CMDLINE = "console=ttyS0 intel_iommu=on panic=-1 rdinit=/init"


def boot(tmp: Path) -> list[str]:
    kernel = vm_smoke.debian_kernel(modules=vm_smoke.GPU_GUEST_MODULES)
    files = {
        **python_guest.package_files(ROOT / "pkg/gpupass", "opt/gpupass"),
        "model.toml": ROOT / "tests/data/emulated-pair.toml",
        "guest.py": ROOT / "tests/gpu_vm_guest.py",
        "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    }
    initrd = tmp / "initrd"
    initrd.write_bytes(vm_smoke.initramfs(kernel, INIT, MARK) + python_guest.archive(files))
    serial = tmp / "serial.log"
    argv = [*QEMU, "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd), "-append", CMDLINE,
            "-serial", f"file:{serial}"]  # fmt: skip
    try:
        subprocess.run(argv, timeout=WAIT, check=True, capture_output=True)
    except subprocess.TimeoutExpired:
        pass  # the test reads how far the guest came
    return [line.strip("\r")[len(MARK) + 1 :] for line in serial.read_text(errors="replace").splitlines()
            if line.startswith(MARK + " ")]  # fmt: skip


Steps = dict[str, list[str]]


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Steps:
    """The guest's lines by step (``step NAME`` starts one); the pids of its holders put as {pid}."""
    steps: Steps = {"start": []}
    current = "start"
    for line in boot(tmp_path_factory.mktemp("gpu-vm")):
        if line.startswith("step "):
            current = line.removeprefix("step ")
            steps[current] = []
        else:
            steps[current].append(line)
    for lines in steps.values():
        pids = [w.split()[1] for w in lines if w.startswith(("holder ", "vfio-holder "))]
        lines[:] = [re.sub(rf"\b{pid}\b", "{pid}", line) for line in lines for pid in pids[:1]] if pids else lines
    return steps


ON_HOST = "drivers bochs-drm snd_hda_intel"
# The nodes as the guest's kernel names them: bochs-drm's card0 (and its legacy control node),
# the HDA card's control, hwdep and PCM nodes.
NODES = "nodes dri/card0 dri/controlD64 snd/controlC0 snd/hwC0D0 snd/pcmC0D0c snd/pcmC0D0p"
CLAIMED = ["claim out claim: 0000:01:00.0, 0000:01:00.1 handed to vfio-pci", "claim exit 0", "claim stuck none"]
RELEASED = ["release out release: 0000:01:00.0, 0000:01:00.1 handed back to the host", "release exit 0",
            "release stuck none"]  # fmt: skip
# As QEMU opens it: the container (API version 0, Type1v2), the group viable, a device fd.
GROUP_OPENS = "vfio group=3 api 0 type1v2 1 viable 1 device-fd yes"


def refused(action: str, holder: str) -> list[str]:
    return [
        f"{action} out gpupass: {action} refused, nothing was written:",
        f"{action} out gpupass: {holder}",
        f"{action} out gpupass: hint: gpupass gpu holders lists what holds the dGPU",
        f"{action} exit 1",
        f"{action} stuck none",
    ]


def test_the_pair_boots_on_its_drivers(guest: Steps) -> None:
    assert guest["boot"] == [f"boot {ON_HOST}", f"boot {NODES}"], guest


def test_nothing_held_claim_hands_both_to_vfio_and_release_gives_them_back(guest: Steps) -> None:
    assert guest["nothing-held"] == [
        *CLAIMED,
        "claimed drivers vfio-pci vfio-pci",
        "claimed nodes none",
        GROUP_OPENS,
        *RELEASED,
        f"released {ON_HOST}",
        f"released {NODES}",
    ]


@pytest.mark.parametrize(
    ("step", "node", "function"),
    [("audio-held", "/dev/snd/controlC0", AUDIO), ("drm-held", "/dev/dri/card0", GPU)],
)
def test_a_held_node_refuses_claim_naming_the_holder(guest: Steps, step: str, node: str, function: str) -> None:
    assert guest[step] == [
        f"holder {{pid}} {node}",
        *refused(
            "claim",
            f"pid {{pid}} (python3, user root) holds {node} of {function}: quit it, or end it with: kill {{pid}}",
        ),
        f"after {ON_HOST}",
        f"after {NODES}",
    ]


def test_release_refuses_while_a_process_holds_the_vfio_device(guest: Steps) -> None:
    assert guest["vm-up"] == [
        *CLAIMED,
        GROUP_OPENS,
        "vfio-holder {pid}",
        *refused("release", "pid {pid} (python3, user root) holds /dev/vfio/3 of 0000:01:00.0:"
                 " the VM still has it; shut the VM down first"),
        "after drivers vfio-pci vfio-pci",
        "after nodes none",
    ]  # fmt: skip
    assert guest["vm-gone"] == [*RELEASED, f"after {ON_HOST}", f"after {NODES}"]


def test_nothing_ever_blocked_and_the_guest_ended_itself(guest: Steps) -> None:
    """Every gpupass run returned (none "blocked"), no process was in state D after any of them
    (the "stuck" lines above), and the guest script reached its end."""
    assert not [line for lines in guest.values() for line in lines if " blocked" in line]
    assert guest["done"] == ["reset"]
    assert guest["start"] == []  # no module failed to load
