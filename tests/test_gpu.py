"""gpupass gpu status | holders on fixture trees: the dGPU's nodes found by device number from
its own sysfs entries, and the processes holding them found through /proc/PID/fd.

The trees are the reference laptop's (tests/layouts.py); the nodes are real character devices
(os.mknod: tests run as root), so stat() gives a real st_rdev as on a laptop.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpupass import cli
from gpupass.laptop import machine
from gpupass.laptop.gpu import holders, status

from .layouts import AURORA_Z
from .sysfs import build_sysfs, changed, char_device, class_device, process
from .test_doctor import AURORA

GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
ALICE, QEMU_UID = 1000, 64055
PASSWD = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n"
PASSWD += "libvirt-qemu:x:64055:108:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\n"
# NVIDIA's nodes: 195:N per GPU, 195:254 modeset, 195:255 the control device (NVIDIA's README);
# nvidia-uvm takes a dynamic major.
NVIDIA_NODES = {"/dev/nvidia0": (195, 0), "/dev/nvidiactl": (195, 255), "/dev/nvidia-modeset": (195, 254),
                "/dev/nvidia-uvm": (508, 0)}  # fmt: skip


def laptop(root: Path, gpu_driver: str = "nvidia", audio_driver: str = "snd_hda_intel") -> Path:
    devices = changed(changed(AURORA_Z.devices, GPU, driver=gpu_driver), AUDIO, driver=audio_driver)
    devices = changed(devices, "0000:00:02.0", driver="i915")
    build_sysfs(root, changed(devices, "0000:00:01.0", driver="pcieport"))
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text(PASSWD)
    # The iGPU's card0: a node of another device, which no holder of it may be blamed for.
    class_device(root, "0000:00:02.0", "drm/card0", 226, 0)
    char_device(root, "/dev/dri/card0", 226, 0)
    return root


def nvidia_on_host(root: Path, refcnt: dict[str, tuple[int, tuple[str, ...]]] | None = None) -> Path:
    """The dGPU on NVIDIA's driver (nvidia-drm's card1 and renderD128), its audio on snd_hda_intel."""
    laptop(root)
    class_device(root, GPU, "drm/card1", 226, 1)
    class_device(root, GPU, "drm/renderD128", 226, 128)
    class_device(root, AUDIO, "sound/card1/controlC1", 116, 32)
    class_device(root, AUDIO, "sound/card1/pcmC1D3p", 116, 35)
    for name, (major, minor) in {"/dev/dri/card1": (226, 1), "/dev/dri/renderD128": (226, 128),
                                 "/dev/snd/controlC1": (116, 32), "/dev/snd/pcmC1D3p": (116, 35),
                                 **NVIDIA_NODES}.items():  # fmt: skip
        char_device(root, name, major, minor)
    # Linux counts a module's users: each module depending on it (holders/), and each open file
    # of its devices or use from inside the kernel.
    for name, (count, users) in (refcnt or {}).items():
        (root / "sys/module" / name / "holders").mkdir(parents=True, exist_ok=True)
        (root / "sys/module" / name / "refcnt").write_text(f"{count}\n")
        for user in users:
            (root / "sys/module" / name / "holders" / user).mkdir(parents=True)
    return root


def read(root: Path) -> holders.Holders:
    return holders.read(AURORA, machine.read(root, rebar=False, processes=False), root)


IDLE_NVIDIA = {"nvidia_drm": (0, ()), "nvidia_modeset": (1, ("nvidia_drm",)), "nvidia_uvm": (0, ()),
               "nvidia": (2, ("nvidia_modeset", "nvidia_uvm"))}  # fmt: skip


def test_nothing_holds_an_idle_dgpu(tmp_path: Path) -> None:
    root = nvidia_on_host(tmp_path, IDLE_NVIDIA)
    process(root, 900, "bash", ALICE, {0: "/dev/pts/0", 3: "/dev/dri/card0", 4: "socket:[123]"})
    found = read(root)
    assert [n.name for n in found.nodes] == [
        "/dev/dri/card1", "/dev/dri/renderD128", "/dev/nvidia-modeset", "/dev/nvidia-uvm", "/dev/nvidia0",
        "/dev/nvidiactl", "/dev/snd/controlC1", "/dev/snd/pcmC1D3p",
    ]  # fmt: skip
    assert holders.report(found) == [
        "module nvidia_drm: refcnt 0",
        "module nvidia_modeset: refcnt 1, used by nvidia_drm",
        "module nvidia_uvm: refcnt 0",
        "module nvidia: refcnt 2, used by nvidia_modeset, nvidia_uvm",
        "nothing holds the dGPU's functions",
    ]


def test_holders_of_drm_alsa_and_nvidia_nodes(tmp_path: Path) -> None:
    root = nvidia_on_host(tmp_path, {**IDLE_NVIDIA, "nvidia_drm": (1, ()), "nvidia_uvm": (1, ())})
    process(root, 1342, "gnome-shell", ALICE, {12: "/dev/dri/card1", 13: "/dev/dri/card0", 14: "/dev/nvidiactl"})
    process(root, 2051, "wireplumber", ALICE, {30: "/dev/snd/controlC1"})
    process(root, 4410, "python3", ALICE, {5: "/dev/nvidia-uvm", 6: "/dev/nvidia0", 7: "/dev/dri/renderD128"})
    process(root, 812, "nvidia-persistenced", 0, {3: "/dev/nvidiactl"}, argv0="/usr/bin/nvidia-persistenced")
    found = read(root)
    assert holders.report(found) == [
        "pid 812 (nvidia-persiste, user root) holds /dev/nvidiactl of 0000:01:00.0",
        "pid 1342 (gnome-shell, user alice) holds /dev/dri/card1 of 0000:01:00.0",
        "pid 1342 (gnome-shell, user alice) holds /dev/nvidiactl of 0000:01:00.0",
        "pid 2051 (wireplumber, user alice) holds /dev/snd/controlC1 of 0000:01:00.1",
        "pid 4410 (python3, user alice) holds /dev/dri/renderD128 of 0000:01:00.0",
        "pid 4410 (python3, user alice) holds /dev/nvidia-uvm of 0000:01:00.0",
        "pid 4410 (python3, user alice) holds /dev/nvidia0 of 0000:01:00.0",
        "module nvidia_drm: refcnt 1 (held inside the kernel)",
        "module nvidia_modeset: refcnt 1, used by nvidia_drm",
        "module nvidia_uvm: refcnt 1 (held inside the kernel)",
        "module nvidia: refcnt 2, used by nvidia_modeset, nvidia_uvm",
        "nvidia-persistenced is running (pid 812, user root)",
    ]


def test_deleted_targets_and_a_renumbered_minor(tmp_path: Path) -> None:
    """A DRM card unbound while held comes back as a new minor (card2 here); the old handle
    (`card1 (deleted)`, 226:1) holds nothing now. An ALSA node whose /dev entry was removed and
    made again still matches by number: the holder is named with the target /proc shows."""
    root = laptop(tmp_path, gpu_driver="bochs-drm")
    class_device(root, GPU, "drm/card2", 226, 2)
    class_device(root, AUDIO, "sound/card1/controlC1", 116, 32)
    char_device(root, "/dev/dri/card2", 226, 2)
    char_device(root, "/dev/dri/card1 (deleted)", 226, 1)  # the unlinked inode of the old card
    char_device(root, "/dev/snd/controlC1 (deleted)", 116, 32)  # the unlinked inode, same number
    process(root, 700, "old-viewer", ALICE, {9: "/dev/dri/card1 (deleted)"})
    process(root, 701, "new-viewer", ALICE, {9: "/dev/dri/card2"})
    process(root, 702, "pulseaudio", ALICE, {20: "/dev/snd/controlC1 (deleted)"})
    assert holders.report(read(root)) == [
        "pid 701 (new-viewer, user alice) holds /dev/dri/card2 of 0000:01:00.0",
        "pid 702 (pulseaudio, user alice) holds /dev/snd/controlC1 (deleted) of 0000:01:00.1",
    ]


def test_vfio_group_and_iommufd_device_holders(tmp_path: Path) -> None:
    """On vfio-pci: QEMU holds the group file /dev/vfio/14, or with iommufd the function's own
    /dev/vfio/devices/vfio0 (found from vfio-dev/vfio0/dev). The holders are the VM's."""
    root = laptop(tmp_path, gpu_driver="vfio-pci", audio_driver="vfio-pci")
    char_device(root, "/dev/vfio/14", 243, 0)
    char_device(root, "/dev/vfio/vfio", 10, 196)  # the container: every VFIO user's, no device's
    class_device(root, GPU, "vfio-dev/vfio0", 511, 0)
    char_device(root, "/dev/vfio/devices/vfio0", 511, 0)
    process(root, 5120, "qemu-system-x86", QEMU_UID, {30: "/dev/vfio/vfio", 31: "/dev/vfio/14"})
    process(root, 5200, "qemu-system-x86", QEMU_UID, {30: "/dev/iommu", 31: "/dev/vfio/devices/vfio0"})
    found = read(root)
    assert holders.report(found) == [
        "pid 5120 (qemu-system-x86, user libvirt-qemu) holds /dev/vfio/14 of 0000:01:00.0",
        "pid 5200 (qemu-system-x86, user libvirt-qemu) holds /dev/vfio/devices/vfio0 of 0000:01:00.0",
    ]
    assert [h.pid for h in found.vfio_holders] == [5120, 5200] and not found.user_holders


def test_gpu_holders_and_status_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = nvidia_on_host(tmp_path, IDLE_NVIDIA)
    process(root, 2051, "wireplumber", ALICE, {30: "/dev/snd/controlC1"})
    model = str(Path(__file__).resolve().parents[1] / "models/aurora-z.toml")
    assert cli.main(["gpu", "holders", "--model", model, "--root", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "pid 2051 (wireplumber, user alice) holds /dev/snd/controlC1 of 0000:01:00.1",
        "module nvidia_drm: refcnt 0",
        "module nvidia_modeset: refcnt 1, used by nvidia_drm",
        "module nvidia_uvm: refcnt 0",
        "module nvidia: refcnt 2, used by nvidia_modeset, nvidia_uvm",
    ]
    assert cli.main(["gpu", "status", "--model", model, "--root", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "0000:01:00.0 (gpu): driver nvidia, unknown (?), nodes: /dev/dri/card1 /dev/dri/renderD128"
        " /dev/nvidia-modeset /dev/nvidia-uvm /dev/nvidia0 /dev/nvidiactl",
        "0000:01:00.1 (audio): driver snd_hda_intel, unknown (?), nodes: /dev/snd/controlC1 /dev/snd/pcmC1D3p",
        "holders: 1 process (gpupass gpu holders names them)",
    ]


def test_status_names_what_the_kernel_holds(tmp_path: Path) -> None:
    root = nvidia_on_host(tmp_path, {**IDLE_NVIDIA, "nvidia_drm": (1, ())})
    process(root, 812, "nvidia-persistenced", 0, {}, argv0="nvidia-persistenced")
    snapshot = machine.read(root, rebar=False, processes=False)
    assert status.report(AURORA, snapshot, holders.read(AURORA, snapshot, root))[-1] == (
        "holders: 0 processes; held inside the kernel by nvidia_drm, nvidia-persistenced"
        " (gpupass gpu holders names them)"
    )


def test_the_fixture_nodes_are_real_device_numbers(tmp_path: Path) -> None:
    """What the finder relies on: stat() through a /proc fd link gives the node's st_rdev."""
    root = nvidia_on_host(tmp_path)
    process(root, 1, "init", 0, {3: "/dev/nvidiactl"})
    assert os.stat(root / "proc/1/fd/3").st_rdev == os.makedev(195, 255)
