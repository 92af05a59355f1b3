"""gpupass gpu claim | release: the decision for every case as a table, on fixture trees, and a
property that no refused case writes anything (the writer is a recorder here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpupass import cli
from gpupass.errors import GpupassError
from gpupass.laptop import machine
from gpupass.laptop.gpu import holders, switch
from gpupass.laptop.gpu.switch import Modprobe, Write

from .sysfs import char_device, class_device, process
from .test_doctor import AURORA
from .test_gpu import ALICE, AUDIO, GPU, IDLE_NVIDIA, QEMU_UID, laptop, nvidia_on_host

# What the kernel shows as a function's modalias (drivers/pci/pci-sysfs.c: modalias_show).
MODALIAS = {
    GPU: "pci:v000010DEd000025A2sv00001D05sd00001162bc03sc00i00",
    AUDIO: "pci:v000010DEd00002291sv00001D05sd00001162bc04sc03i00",
}


class Recorder:
    """The writer, recording what it is asked to do instead of doing it."""

    def __init__(self) -> None:
        self.done: list[switch.Step] = []

    def write(self, path: str, text: str) -> None:
        self.done.append(Write(path, text))

    def modprobe(self, args: tuple[str, ...]) -> None:
        self.done.append(Modprobe(args))


def with_modalias(root: Path) -> Path:
    for address, alias in MODALIAS.items():
        (root / "sys/bus/pci/devices" / address / "modalias").write_text(alias + "\n")
    return root


def on_vfio(root: Path) -> Path:
    with_modalias(laptop(root, gpu_driver="vfio-pci", audio_driver="vfio-pci"))
    char_device(root, "/dev/vfio/14", 243, 0)
    return root


def nouveau(root: Path) -> Path:
    laptop(root, gpu_driver="nouveau")
    (root / "sys/bus/pci/drivers/vfio-pci").mkdir()
    class_device(root, GPU, "drm/card1", 226, 1)
    char_device(root, "/dev/dri/card1", 226, 1)
    return root


def decide(action: str, root: Path) -> switch.Decision:
    snapshot = machine.read(root, rebar=False, processes=False)
    return switch.decide(action, AURORA, snapshot, holders.read(AURORA, snapshot, root))


def override(address: str, text: str) -> Write:
    return Write(f"sys/bus/pci/devices/{address}/driver_override", text)


def probe(address: str) -> Write:
    return Write("sys/bus/pci/drivers_probe", address)


def unbind(driver: str, address: str) -> Write:
    return Write(f"sys/bus/pci/drivers/{driver}/unbind", address)


NVIDIA_CLAIM = (
    Modprobe(("vfio-pci",)),
    Modprobe(("-r", "nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia")),
    override(GPU, "vfio-pci"), override(AUDIO, "vfio-pci"),
    unbind("snd_hda_intel", AUDIO),
    probe(GPU), probe(AUDIO),
)  # fmt: skip
NOUVEAU_CLAIM = (
    override(GPU, "vfio-pci"), override(AUDIO, "vfio-pci"),
    unbind("nouveau", GPU), unbind("snd_hda_intel", AUDIO),
    probe(GPU), probe(AUDIO),
)  # fmt: skip
RELEASE = (
    override(GPU, "\n"), override(AUDIO, "\n"),
    unbind("vfio-pci", GPU), unbind("vfio-pci", AUDIO),
    probe(GPU), probe(AUDIO),
    Modprobe(("-b", "-a", MODALIAS[GPU], MODALIAS[AUDIO])),
)  # fmt: skip


def wireplumber(root: Path) -> Path:
    process(root, 2051, "wireplumber", ALICE, {30: "/dev/snd/controlC1"})
    return root


def firefox_on_nouveau(root: Path) -> Path:
    process(nouveau(root), 3300, "firefox-esr", ALICE, {40: "/dev/dri/card1"})
    return root


def persistenced(root: Path) -> Path:
    process(root, 812, "nvidia-persistenced", 0, {}, argv0="/usr/bin/nvidia-persistenced")
    return root


def qemu(root: Path) -> Path:
    process(root, 5120, "qemu-system-x86", QEMU_UID, {30: "/dev/vfio/vfio", 31: "/dev/vfio/14"})
    return root


def other_endpoint(root: Path) -> Path:
    """A third function in group 14, which the model does not name."""
    laptop(root, gpu_driver="nouveau")
    extra = Path(str(root / "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.2"))
    extra.mkdir()
    for name, value in (("vendor", "0x10de"), ("device", "0x1aed"), ("class", "0x0c8000")):
        (extra / name).write_text(value + "\n")
    for link, target in (("sys/bus/pci/devices/0000:01:00.2", extra),
                         ("sys/kernel/iommu_groups/14/devices/0000:01:00.2", extra)):  # fmt: skip
        (root / link).symlink_to(target)
    (extra / "iommu_group").symlink_to(root / "sys/kernel/iommu_groups/14")
    return root


KILL = ": quit it, or end it with: kill"
TABLE = {
    # case: (action, fixture, steps, refusals)
    "claim, nothing held, NVIDIA driver": (
        "claim", lambda r: nvidia_on_host(r, IDLE_NVIDIA), NVIDIA_CLAIM, ()),
    "claim, nothing held, nouveau": ("claim", nouveau, NOUVEAU_CLAIM, ()),
    "claim, a user holds the audio control node": (
        "claim", lambda r: wireplumber(nvidia_on_host(r, IDLE_NVIDIA)), (),
        (f"pid 2051 (wireplumber, user alice) holds /dev/snd/controlC1 of 0000:01:00.1{KILL} 2051",)),
    "claim, a user holds the DRM card": (
        "claim", firefox_on_nouveau, (),
        (f"pid 3300 (firefox-esr, user alice) holds /dev/dri/card1 of 0000:01:00.0{KILL} 3300",)),
    "claim, held inside the kernel (refcount)": (
        "claim", lambda r: nvidia_on_host(r, {**IDLE_NVIDIA, "nvidia_drm": (1, ())}), (),
        ("module nvidia_drm is in use inside the kernel (refcnt 1, 1 beyond the modules that use it): end the"
         " programs using the GPU (CUDA, Vulkan); nvidia-drm's framebuffer console (nvidia_drm.fbdev=1) holds"
         " it until a reboot with nvidia_drm.fbdev=0",)),
    "claim, nvidia-persistenced running": (
        "claim", lambda r: persistenced(nvidia_on_host(r, IDLE_NVIDIA)), (),
        ("nvidia-persistenced is running (pid 812, user root): stop it with:"
         " sudo systemctl stop nvidia-persistenced",)),
    "claim, the group holds a function the model does not name": (
        "claim", other_endpoint, (),
        ("IOMMU group 14 also holds 0000:01:00.2 (10de:1aed, driver none), which the model does not name:"
         " vfio-pci takes a whole group",)),
    "claim, already on vfio-pci (the VM running)": ("claim", lambda r: qemu(on_vfio(r)), (), ()),
    "release, nothing held": ("release", on_vfio, RELEASE, ()),
    "release, the VM still up (VFIO group held)": (
        "release", lambda r: qemu(on_vfio(r)), (),
        ("pid 5120 (qemu-system-x86, user libvirt-qemu) holds /dev/vfio/14 of 0000:01:00.0: the VM still has it;"
         " shut the VM down first",)),
    "release, already on the host drivers": (
        "release", lambda r: wireplumber(nvidia_on_host(r, IDLE_NVIDIA)), (), ()),
}  # fmt: skip


@pytest.mark.parametrize("case", TABLE)
def test_decision_table(tmp_path: Path, case: str) -> None:
    action, build, steps, refusals = TABLE[case]
    decision = decide(action, build(tmp_path))
    assert (decision.steps, decision.refusals) == (steps, refusals)
    recorder = Recorder()
    if refusals:
        with pytest.raises(GpupassError) as refused:
            switch.execute(decision, recorder)
        assert refused.value.lines() == [
            f"{action} refused, nothing was written:",
            *refusals,
            "hint: gpupass gpu holders lists what holds the dGPU",
        ]
    else:
        switch.execute(decision, recorder)
    assert recorder.done == list(steps)


# The property: every combination of drivers, holders, module counts and daemons ------------


def snapshot(drivers: tuple[str | None, str | None]) -> machine.Machine:
    def device(address: str, vendor_device: str, driver: str | None) -> machine.PciDevice:
        vendor, device_id = vendor_device.split(":")
        return machine.PciDevice(address, vendor, device_id, None, None, "0x030000" if address == GPU else "0x040300",
                                 driver, None, ("0000:00:01.0",), (), "14", None, None, None,
                                 modalias=MODALIAS[address])  # fmt: skip

    port = machine.PciDevice("0000:00:01.0", "8086", "460d", None, None, "0x060400", "pcieport", None, (), (), "14",
                             None, None, None)  # fmt: skip
    pci = (port, device(GPU, "10de:25a2", drivers[0]), device(AUDIO, "10de:2291", drivers[1]))
    return machine.Machine(pci=pci, iommu_groups={"14": ("0000:00:01.0", GPU, AUDIO)})


DRIVERS = st.sampled_from([None, "nvidia", "nouveau", "snd_hda_intel", "vfio-pci"])
NODES = st.sampled_from(["/dev/dri/card1", "/dev/nvidiactl", "/dev/snd/controlC1 (deleted)", "/dev/vfio/14",
                         "/dev/vfio/devices/vfio0"])  # fmt: skip
HOLDER = st.builds(holders.Holder, st.integers(1, 99999), st.just("x"), st.just("alice"), NODES, st.just(GPU))
MODULE = st.builds(holders.ModuleUse, st.sampled_from(holders.NVIDIA_MODULES), st.integers(0, 3), st.just(()))
DAEMON = st.builds(holders.Daemon, st.integers(1, 99999), st.sampled_from(holders.NVIDIA_DAEMONS), st.just("root"))
HOLDERS = st.builds(holders.Holders, st.just(()), st.lists(HOLDER, max_size=3).map(tuple),
                    st.lists(MODULE, max_size=4).map(tuple), st.lists(DAEMON, max_size=2).map(tuple),
                    st.integers(0, 2), st.booleans())  # fmt: skip


@given(st.sampled_from([switch.CLAIM, switch.RELEASE]), st.tuples(DRIVERS, DRIVERS), HOLDERS)
def test_no_refused_case_writes_anything(action: str, drivers: tuple, found: holders.Holders) -> None:
    decision = switch.decide(action, AURORA, snapshot(drivers), found)
    recorder = Recorder()
    if decision.refused:
        assert decision.steps == ()
        with pytest.raises(GpupassError):
            switch.execute(decision, recorder)
        assert recorder.done == []
        return
    switch.execute(decision, recorder)
    # What may be written at all: never remove/rescan, never a forced module removal.
    for step in recorder.done:
        if isinstance(step, Write):
            assert step.path.rsplit("/", 1)[1] in ("driver_override", "unbind", "drivers_probe"), step
        else:
            assert "-f" not in step.args and "--force" not in step.args, step
    # Nothing is unbound while anyone holds a node: refusal is the only outcome with a holder.
    moving = [d for d in drivers if (d == "vfio-pci") == (action == switch.RELEASE)]
    if moving and action == switch.CLAIM:
        assert not found.user_holders and not found.daemons and not found.unlisted_processes
        assert not any(m.held_by_kernel for m in found.modules)
    if moving and action == switch.RELEASE:
        assert not found.vfio_holders and not found.unlisted_processes


def test_claim_and_release_commands_on_a_fixture_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The commands write through the one writer into the tree under --root; exit 0 done, 1 refused, 2 usage."""
    root = nouveau(tmp_path)
    for address in (GPU, AUDIO):
        (root / "sys/bus/pci/devices" / address / "driver_override").write_text("(null)\n")
    for driver in ("nouveau", "snd_hda_intel"):
        (root / "sys/bus/pci/drivers" / driver / "unbind").write_text("")
    (root / "sys/bus/pci/drivers_probe").write_text("")
    model = str(Path(__file__).resolve().parents[1] / "models/aurora-z.toml")
    process(root, 3300, "firefox-esr", ALICE, {40: "/dev/dri/card1"})
    assert cli.main(["gpu", "claim", "--model", model, "--root", str(root)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "gpupass: claim refused, nothing was written:",
        f"gpupass: pid 3300 (firefox-esr, user alice) holds /dev/dri/card1 of 0000:01:00.0{KILL} 3300",
        "gpupass: hint: gpupass gpu holders lists what holds the dGPU",
    ]
    assert (root / "sys/bus/pci/devices" / GPU / "driver_override").read_text() == "(null)\n"
    (root / "proc/3300/fd/40").unlink()
    assert cli.main(["gpu", "claim", "--model", model, "--root", str(root)]) == 0
    assert capsys.readouterr().out == "claim: 0000:01:00.0, 0000:01:00.1 handed to vfio-pci\n"
    assert (root / "sys/bus/pci/devices" / GPU / "driver_override").read_text() == "vfio-pci"
    assert (root / "sys/bus/pci/drivers/nouveau/unbind").read_text() == GPU
    assert (root / "sys/bus/pci/drivers_probe").read_text() == AUDIO  # each write opens the file anew
    with pytest.raises(SystemExit) as usage:
        cli.main(["gpu", "claim", "--model", model, "--root", str(root), "--bogus"])
    assert usage.value.code == 2


def test_release_command_refuses_while_the_vm_holds_the_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = qemu(on_vfio(tmp_path))
    (root / "sys/bus/pci/drivers/vfio-pci/unbind").write_text("")
    (root / "sys/bus/pci/drivers_probe").write_text("")
    model = str(Path(__file__).resolve().parents[1] / "models/aurora-z.toml")
    assert cli.main(["gpu", "release", "--model", model, "--root", str(root)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "gpupass: release refused, nothing was written:",
        "gpupass: pid 5120 (qemu-system-x86, user libvirt-qemu) holds /dev/vfio/14 of 0000:01:00.0:"
        " the VM still has it; shut the VM down first",
        "gpupass: hint: gpupass gpu holders lists what holds the dGPU",
    ]
    assert (root / "sys/bus/pci/drivers/vfio-pci/unbind").read_text() == ""
    # With the VM gone, the NVIDIA driver is loaded back by modprobe, which a fixture tree refuses.
    (root / "proc/5120/fd/31").unlink()
    assert cli.main(["gpu", "release", "--model", model, "--root", str(root)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"gpupass: modprobe -b -a {MODALIAS[GPU]} {MODALIAS[AUDIO]}: not run for a fixture tree (--root {root})"
    ]
    assert (root / "sys/bus/pci/drivers/vfio-pci/unbind").read_text() == AUDIO


def test_a_failed_write_names_the_step(tmp_path: Path) -> None:
    decision = decide("claim", nouveau(tmp_path))

    class Failing(Recorder):
        def write(self, path: str, text: str) -> None:
            if path.endswith("/unbind"):
                raise OSError(19, "No such device")
            super().write(path, text)

    with pytest.raises(GpupassError) as failed:
        switch.execute(decision, Failing())
    assert failed.value.lines() == [
        "echo 0000:01:00.0 > /sys/bus/pci/drivers/nouveau/unbind: No such device (after 2 of 6 steps)",
        "hint: gpupass gpu status shows where each function is now",
    ]


def test_release_refuses_without_root_reading_everything() -> None:
    found = holders.Holders((), (), unlisted_processes=3)
    decision = switch.decide(switch.RELEASE, AURORA, snapshot(("vfio-pci", "vfio-pci")), found)
    assert decision.refusals == ("3 processes' open files could not be read: run as root (sudo gpupass ...)",)
    assert dataclasses.replace(decision, refusals=()).steps == ()
