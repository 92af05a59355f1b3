"""gpupass doctor against fixture trees: a fully set-up aurora-z laptop, then one broken piece at a time.

The trees come from tests/sysfs.py (with the files doctor reads besides sysfs: the vBIOS, OVMF,
AppArmor, modules.builtin); the initramfs listing and libvirt's answers are handed in as data
(``doctor_facts.Initramfs``, ``doctor_facts.Libvirt``), as gather() would have read them. The tool-tier
test at the end asks a real libvirtd.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings

from gpupass import cli, model
from gpupass.laptop import command, machine
from gpupass.laptop.doctor import diagnose as doctor_diagnose
from gpupass.laptop.doctor import facts as doctor_facts
from gpupass.laptop.doctor import finding as doctor_finding
from gpupass.laptop.doctor import vm as doctor_vm
from gpupass.laptop.onboarding import probe
from gpupass.laptop.rom import acpi_table
from gpupass.laptop.rom import store as rom_store
from gpupass.laptop.vm import define as vm_define
from gpupass.laptop.vm import libvirtconn, xmledit
from gpupass.packaging import render

from . import sysfs
from .conftest import ROOT
from .layouts import AURORA_Z
from .libvirt import Daemon
from .strategies import machines
from .sysfs import changed
from .test_vbios import GPU_ROM

AURORA = model.load(ROOT / "models" / "aurora-z.toml")
KERNEL = "6.1.0-28-amd64"
CMDLINE = f"BOOT_IMAGE=/vmlinuz-{KERNEL} root=/dev/mapper/root ro quiet splash"
SET_UP_CMDLINE = f"{CMDLINE} intel_iommu=on iommu=pt vfio-pci.ids=10de:25a2,10de:2291"
ASLEEP = {"runtime_status": "suspended", "power_control": "auto", "power_state": "D3cold"}
SET_UP_PCI = {
    **AURORA_Z.devices,
    "0000:00:01.0": dataclasses.replace(AURORA_Z.devices["0000:00:01.0"], driver="pcieport", **ASLEEP),
    "0000:01:00.0": dataclasses.replace(AURORA_Z.devices["0000:01:00.0"], driver="vfio-pci", **ASLEEP),
    "0000:01:00.1": dataclasses.replace(AURORA_Z.devices["0000:01:00.1"], driver="vfio-pci", **ASLEEP),
}
# The dGPU awake (D0) while the VM is off.
AWAKE = changed(SET_UP_PCI, "0000:01:00.0", runtime_status="active", power_state="D0")
# Debian builds vfio-pci as a module: modules.builtin lists others, the initramfs has it.
BUILTIN = ("kernel/drivers/pci/pcie/portdrv.ko", "kernel/drivers/iommu/intel/iommu.ko")
INITRAMFS = doctor_facts.Initramfs(
    f"/boot/initrd.img-{KERNEL}",
    (
        "usr/lib/modprobe.d/gpupass-aurora-z.conf",
        f"usr/lib/modules/{KERNEL}/kernel/drivers/vfio/vfio.ko",
        f"usr/lib/modules/{KERNEL}/kernel/drivers/vfio/pci/vfio-pci-core.ko",
        f"usr/lib/modules/{KERNEL}/kernel/drivers/vfio/pci/vfio-pci.ko",
    ),
)
# Debian 13's abstraction (libvirt 11.3) ends with the include; Debian 12's (libvirt 9.0) has none.
ABSTRACTION = "  #include <abstractions/base>\n  include if exists <local/abstractions/libvirt-qemu>\n"
READS_DROP_INS = ABSTRACTION + "  include if exists <abstractions/libvirt-qemu.d>\n"
LAPTOP_CPUS = tuple(range(12))
DEFINED = vm_define.define_xml(
    render.render_all(AURORA)["usr/share/gpupass/domain.xml"].decode(),
    AURORA,
    name="win11-gpu",
    disk=Path("/var/lib/libvirt/images/win11-gpu.qcow2"),
    host_cpus=LAPTOP_CPUS,
)


def libvirt(domain_xml: str | None = DEFINED, active: bool = False) -> doctor_facts.Libvirt:
    domains = ("win11-gpu",) if domain_xml else ()
    return doctor_facts.Libvirt(
        "qemu:///system", survey=libvirtconn.Survey(9_000_000, LAPTOP_CPUS, domains, domain_xml, active)
    )


def laptop(
    tmp_path: Path,
    *,
    devices=SET_UP_PCI,
    cmdline: str = SET_UP_CMDLINE,
    vbios: bytes | None = GPU_ROM.rom,
    abstraction: str = READS_DROP_INS,
    disable_idle_d3: str = "N",
) -> Path:
    """The aurora-z laptop after install and reboot, VM defined and shut off (or as changed)."""
    root = AURORA_Z.build(
        tmp_path / "root",
        devices=devices,
        cmdline=cmdline,
        kernel_release=KERNEL,
        modules_builtin=BUILTIN,
        kvm=True,
        disable_idle_d3=disable_idle_d3,
    )
    files = {
        "usr/share/OVMF/OVMF_CODE_4M.fd": b"\0" * 16,
        "usr/share/OVMF/OVMF_VARS_4M.fd": b"\0" * 16,
        "etc/apparmor.d/abstractions/libvirt-qemu": abstraction.encode(),
    }
    if vbios is not None:
        files["var/lib/gpupass/vbios.rom"] = vbios
        files["var/lib/gpupass/ssdt-rom.aml"] = acpi_table.ssdt(vbios)  # written beside it by every store
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
        (root / path).chmod(0o644)  # as gpupass vbios writes it, whatever the umask
    return root


def holding(root: Path, pid: int, command: str, *files: str) -> Path:
    """A process with ``files`` open, as /proc shows QEMU with a VM's devices."""
    proc = root / "proc" / str(pid)
    (proc / "fd").mkdir(parents=True)
    (proc / "comm").write_text(command + "\n")
    for fd, target in enumerate(("/dev/null", "/dev/vfio/vfio", *files)):
        (proc / "fd" / str(fd)).symlink_to(target)
    return root


def run(root: Path, *, initramfs=INITRAMFS, lv=None, as_json: bool = False) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = doctor_diagnose.cli(
        AURORA, root, initramfs=initramfs, libvirt=lv if lv is not None else libvirt(), as_json=as_json, out=out
    )
    return status, out.getvalue().splitlines()


SET_UP = [
    "gpupass doctor: MECHREVO Aurora Z (gpupass-aurora-z)",
    "ok: CPU virtualisation is on (vmx, /dev/kvm)",
    "ok: the IOMMU is on (ACPI DMAR table, dmar0, 5 IOMMU groups)",
    "ok: the kernel command line has intel_iommu=on iommu=pt vfio-pci.ids=10de:25a2,10de:2291",
    "ok: 0000:01:00.0 (gpu 10de:25a2) is bound to vfio-pci",
    "ok: 0000:01:00.1 (audio 10de:2291) is bound to vfio-pci",
    f"ok: vfio-pci is in the initramfs /boot/initrd.img-{KERNEL}",
    "ok: IOMMU group 14 holds only 0000:01:00.0, 0000:01:00.1 and PCI bridge 0000:00:01.0",
    "ok: vBIOS /var/lib/gpupass/vbios.rom: valid PCI expansion ROM for 10de:25a2, 3 images, 2560 bytes",
    "ok: _ROM SSDT /var/lib/gpupass/ssdt-rom.aml serves the vBIOS on the GPU's guest node \\_SB.PCI0.SE0.S00"
    " (proven in emulation, not yet on a laptop)",
    "ok: OVMF without Secure Boot is there (/usr/share/OVMF/OVMF_CODE_4M.fd, /usr/share/OVMF/OVMF_VARS_4M.fd)",
    "ok: libvirt 9.0.0 answers at qemu:///system",
    "ok: AppArmor: libvirt's QEMU abstraction reads /etc/apparmor.d/abstractions/libvirt-qemu.d/gpupass-aurora-z",
    "ok: VM win11-gpu holds every passthrough piece (hostdevs on one multifunction slot, vBIOS rom, MMIO window,"
    " battery table, SMBIOS, no Secure Boot)",
    "ok: power: the dGPU 0000:01:00.0 (D3cold) and its root port 0000:00:01.0 (D3cold) are runtime-suspended"
    " while the VM is off",
    "ok: mode: boot (vfio-pci takes the dGPU at every boot)",
    "15 ok, 0 warnings, 0 failures",
]


def test_a_fully_set_up_laptop_is_all_ok(tmp_path: Path) -> None:
    assert run(laptop(tmp_path)) == (0, SET_UP)


def test_the_rom_ssdt_missing_or_stale(tmp_path: Path) -> None:
    root = laptop(tmp_path)
    aml = root / "var/lib/gpupass/ssdt-rom.aml"
    aml.write_bytes(acpi_table.ssdt(b"\x55\xaa\x01"))
    assert problems(run(root)[1]) == [
        "warn: /var/lib/gpupass/ssdt-rom.aml does not serve the stored vBIOS (fix: sudo gpupass vbios ssdt)"
    ]
    aml.unlink()
    assert problems(run(root)[1]) == [
        "fail: no _ROM SSDT at /var/lib/gpupass/ssdt-rom.aml: a VM that loads it does not start"
        " (fix: sudo gpupass vbios ssdt)"
    ]


def problems(lines: list[str]) -> list[str]:
    """The lines that are not ok, without the header and the summary."""
    return [line for line in lines[1:-1] if not line.startswith("ok: ")]


SOFTDEP_AUDIO = (
    'add "softdep snd_hda_intel pre: vfio-pci" to /etc/modprobe.d/gpupass-local.conf,'
    " then sudo update-initramfs -u (or sudo dracut --force) and reboot"
)


def test_the_audio_function_on_snd_hda_intel(tmp_path: Path) -> None:
    """snd_hda_intel got the audio function first: it is named, with the softdep; and the dGPU's slot stays awake."""
    awake = {"runtime_status": "active", "power_control": "auto", "power_state": "D0"}
    devices = changed(SET_UP_PCI, "0000:01:00.1", driver="snd_hda_intel", **awake)
    devices = changed(devices, "0000:01:00.0", **awake)
    devices = changed(devices, "0000:00:01.0", **awake)
    status, lines = run(laptop(tmp_path, devices=devices))
    assert status == 1
    assert problems(lines) == [
        f"fail: 0000:01:00.1 (audio 10de:2291) is held by snd_hda_intel, not vfio-pci (fix: {SOFTDEP_AUDIO})",
        "fail: power: the dGPU stays awake while the VM is off, costing battery: 0000:01:00.0 active (D0),"
        " 0000:01:00.1 active (D0), 0000:00:01.0 active (D0); 0000:01:00.1 is on the host driver snd_hda_intel"
        f" (fix: {SOFTDEP_AUDIO})",
    ]
    assert lines[-1] == "13 ok, 0 warnings, 2 failures"


def test_a_driver_named_apart_from_its_module_gets_the_modules_softdep(tmp_path: Path) -> None:
    """A USB function held by xhci_hcd: the softdep names the module, xhci_pci."""
    devices = changed(SET_UP_PCI, "0000:01:00.1", driver="xhci_hcd")
    status, lines = run(laptop(tmp_path, devices=devices))
    assert problems(lines) == [
        "fail: 0000:01:00.1 (audio 10de:2291) is held by xhci_hcd, not vfio-pci (fix: add"
        ' "softdep xhci_pci pre: vfio-pci" to /etc/modprobe.d/gpupass-local.conf, then sudo update-initramfs -u'
        " (or sudo dracut --force) and reboot)",
    ]


@pytest.mark.parametrize(
    "cmdline,line",
    [
        (
            f"{CMDLINE} intel_iommu=on iommu=pt",
            "fail: the kernel command line lacks vfio-pci.ids=10de:25a2,10de:2291 (/proc/cmdline) (fix: sudo"
            " update-grub, then reboot (/etc/default/grub.d/gpupass-aurora-z.cfg adds the arguments; without GRUB"
            " add them to /etc/kernel/cmdline, then sudo kernel-install add-all))",
        ),
        (
            # Whole tokens: intel_iommu=on is not iommu=on's prefix match, iommu=ptx is not iommu=pt.
            f"{CMDLINE} intel_iommu=on iommu=ptx vfio-pci.ids=10de:25a2,10de:2291",
            "fail: the kernel command line lacks iommu=pt (/proc/cmdline) (fix: sudo update-grub, then reboot"
            " (/etc/default/grub.d/gpupass-aurora-z.cfg adds the arguments; without GRUB add them to"
            " /etc/kernel/cmdline, then sudo kernel-install add-all))",
        ),
        (
            f"{SET_UP_CMDLINE} iommu=off",
            "fail: the kernel command line turns the IOMMU off (iommu=off) (fix: remove iommu=off from"
            " GRUB_CMDLINE_LINUX* in /etc/default/grub (or /etc/kernel/cmdline), then sudo update-grub and reboot)",
        ),
    ],
    ids=["vfio-pci.ids missing", "iommu=pt only as a prefix", "iommu=off"],
)
def test_kernel_arguments_are_whole_tokens(tmp_path: Path, cmdline: str, line: str) -> None:
    status, lines = run(laptop(tmp_path, cmdline=cmdline))
    assert (status, problems(lines)) == (1, [line])


def test_the_module_parameter_may_be_spelt_with_an_underscore(tmp_path: Path) -> None:
    cmdline = SET_UP_CMDLINE.replace("vfio-pci.ids", "vfio_pci.ids")
    assert run(laptop(tmp_path, cmdline=cmdline))[0] == 0


def test_no_vbios(tmp_path: Path) -> None:
    status, lines = run(laptop(tmp_path, vbios=None))
    assert (status, problems(lines)) == (
        1,
        [
            "fail: no vBIOS at /var/lib/gpupass/vbios.rom (fix: sudo gpupass vbios extract, or take the GPU's ROM"
            " from the laptop's BIOS update: sudo gpupass vbios from-update FILE)"
        ],
    )


def test_a_vbios_for_another_gpu(tmp_path: Path) -> None:
    rom = bytearray(GPU_ROM.rom)
    pcir = int.from_bytes(rom[0x18:0x1A], "little")
    rom[pcir + 6 : pcir + 8] = (0x25A0).to_bytes(2, "little")  # the first image's device id
    rom[2 * 512 - 1] = (rom[2 * 512 - 1] - sum(rom[: 2 * 512])) % 256  # its checksum kept right
    status, lines = run(laptop(tmp_path, vbios=bytes(rom)))
    assert (status, problems(lines)) == (
        1,
        [
            "fail: /var/lib/gpupass/vbios.rom: image 1: PCIR says 10de:25a0, the GPU is 10de:25a2 (fix: replace it"
            " with a valid ROM: take the GPU's ROM from the laptop's BIOS update: sudo gpupass vbios from-update FILE)"
        ],
    )


def test_a_secure_boot_loader(tmp_path: Path) -> None:
    secure = DEFINED.replace(">/usr/share/OVMF/OVMF_CODE_4M.fd<", ">/usr/share/OVMF/OVMF_CODE_4M.secboot.fd<")
    assert secure != DEFINED
    status, lines = run(laptop(tmp_path), lv=libvirt(secure))
    assert (status, problems(lines)) == (
        1,
        [
            "fail: VM win11-gpu boots a Secure Boot firmware: its loader /usr/share/OVMF/OVMF_CODE_4M.secboot.fd is a"
            " Secure Boot build (fix: shut the VM off, then sudo gpupass vm attach win11-gpu)"
        ],
    )


def test_a_vm_without_the_hostdevs(tmp_path: Path) -> None:
    root = xmledit.parse(DEFINED)
    devices = root.find("devices")
    for hostdev in devices.findall("hostdev"):
        devices.remove(hostdev)
    status, lines = run(laptop(tmp_path), lv=libvirt(xmledit.to_text(root)))
    assert status == 1
    assert problems(lines) == [
        "fail: VM win11-gpu lacks hostdevs (one multifunction guest slot, vBIOS rom): add hostdev 0000:01:00.0;"
        " add hostdev 0000:01:00.1 (fix: shut the VM off, then sudo gpupass vm attach win11-gpu)"
    ]


def test_a_vm_without_a_tpm(tmp_path: Path) -> None:
    root = xmledit.parse(DEFINED)
    root.find("devices").remove(root.find("devices/tpm"))
    status, lines = run(laptop(tmp_path), lv=libvirt(xmledit.to_text(root)))
    assert (status, problems(lines)) == (
        2,
        [
            "warn: VM win11-gpu has no TPM, and Windows 11 setup refuses a machine without TPM 2.0 (fix: with swtpm"
            " and swtpm-tools installed, shut the VM off, then sudo virt-xml win11-gpu --add-device --tpm"
            " model=tpm-crb,backend.type=emulator,backend.version=2.0)"
        ],
    )


def test_a_vm_without_some_hyperv_enlightenments(tmp_path: Path) -> None:
    """Passthrough works without them: a warning, and attach adds them."""
    root = xmledit.parse(DEFINED)
    hyperv = root.find("features/hyperv")
    for name in ("stimer", "ipi"):
        hyperv.remove(hyperv.find(name))
    status, lines = run(laptop(tmp_path), lv=libvirt(xmledit.to_text(root)))
    assert (status, problems(lines)) == (
        2,
        [
            "warn: VM win11-gpu lacks Hyper-V enlightenments: add features/hyperv/stimer; add features/hyperv/ipi"
            " (fix: shut the VM off, then sudo gpupass vm attach win11-gpu)"
        ],
    )


def test_no_vm(tmp_path: Path) -> None:
    status, lines = run(laptop(tmp_path), lv=libvirt(None))
    assert (status, problems(lines)) == (
        1,
        [
            "fail: no libvirt domain win11-gpu (domains: none) (fix: sudo gpupass vm define win11-gpu, or for a VM of"
            " your own: sudo gpupass vm attach NAME, then gpupass doctor --vm NAME)"
        ],
    )


def test_the_dgpu_kept_in_d0_by_power_control_on(tmp_path: Path) -> None:
    devices = changed(SET_UP_PCI, "0000:01:00.0", runtime_status="active", power_control="on", power_state="D0")
    devices = changed(devices, "0000:00:01.0", runtime_status="active", power_state="D0")
    status, lines = run(laptop(tmp_path, devices=devices))
    assert (status, problems(lines)) == (
        1,
        [
            "fail: power: the dGPU stays awake while the VM is off, costing battery: 0000:01:00.0 active (D0),"
            " 0000:00:01.0 active (D0); 0000:01:00.0 has power/control=on (fix: echo auto | sudo tee"
            " /sys/bus/pci/devices/0000:01:00.0/power/control, and remove what sets it (a udev rule, TLP's"
            " RUNTIME_PM_ON_AC=on))"
        ],
    )


def test_vfio_pci_told_not_to_idle(tmp_path: Path) -> None:
    status, lines = run(laptop(tmp_path, devices=AWAKE, disable_idle_d3="Y"))
    assert (status, problems(lines)) == (
        1,
        [
            "fail: power: the dGPU stays awake while the VM is off, costing battery: 0000:01:00.0 active (D0);"
            " vfio-pci has disable_idle_d3=Y (fix: remove disable_idle_d3 from vfio-pci's options (/etc/modprobe.d,"
            " the kernel command line), then reboot)"
        ],
    )


def test_an_awake_dgpu_without_a_known_cause_is_a_warning(tmp_path: Path) -> None:
    """Only warnings: exit status 2."""
    status, lines = run(laptop(tmp_path, devices=AWAKE))
    assert (status, problems(lines)) == (
        2,
        [
            "warn: power: the dGPU stays awake while the VM is off, costing battery: 0000:01:00.0 active (D0);"
            " nothing gpupass knows of keeps it so (fix: something may be using it (lspci -vv, nvidia-smi, reading"
            " its rom wake it; it suspends after a few idle seconds): run gpupass doctor again)"
        ],
    )
    assert lines[-1] == "14 ok, 1 warning, 0 failures"


def test_power_is_not_checked_while_the_vm_runs(tmp_path: Path) -> None:
    status, lines = run(laptop(tmp_path, devices=AWAKE), lv=libvirt(active=True))
    assert status == 0
    assert lines[-3] == "ok: power: not checked while win11-gpu runs (the dGPU is the VM's)"


DOWN = doctor_facts.Libvirt("qemu:///system", problem="cannot connect to libvirt at qemu:///system: connection refused")


def test_power_is_not_checked_while_a_process_holds_the_dgpu_group(tmp_path: Path) -> None:
    """libvirt unreachable (or a VM it does not know): /proc still shows QEMU holding group 14."""
    root = holding(laptop(tmp_path, devices=AWAKE), 4242, "qemu-system-x86", "/dev/vfio/14")
    holding(root, 4300, "qemu-system-x86", "/dev/vfio/7")  # another group: not the dGPU's
    snapshot = machine.read(root, rebar=False)
    assert snapshot.vfio_users == (
        machine.VfioUser(4242, "qemu-system-x86", "/dev/vfio/14"),
        machine.VfioUser(4300, "qemu-system-x86", "/dev/vfio/7"),
    )
    status, lines = run(root, lv=DOWN)
    assert "ok: power: not checked while qemu-system-x86 (pid 4242: /dev/vfio/14) holds the dGPU" in lines
    assert [line for line in problems(lines) if "power" in line] == []
    # Only another group held: the awake dGPU is reported as before.
    other = holding(laptop(tmp_path / "other", devices=AWAKE), 4300, "qemu-system-x86", "/dev/vfio/7")
    assert any(line.startswith("warn: power: the dGPU stays awake") for line in run(other, lv=DOWN)[1])


def test_power_is_not_checked_while_a_process_holds_the_dgpus_iommufd_device(tmp_path: Path) -> None:
    """With the iommufd backend QEMU opens /dev/vfio/devices/vfioN, named by the GPU's sysfs vfio-dev/."""
    root = laptop(tmp_path, devices=AWAKE)
    (root / "sys/bus/pci/devices/0000:01:00.0/vfio-dev/vfio0").mkdir(parents=True)
    (root / "sys/bus/pci/devices/0000:01:00.1/vfio-dev/vfio1").mkdir(parents=True)
    holding(root, 5151, "qemu-system-x86", "/dev/iommu", "/dev/vfio/devices/vfio0", "/dev/vfio/devices/vfio1")
    snapshot = machine.read(root, rebar=False)
    assert snapshot.device("0000:01:00.0").vfio_device == "vfio0"
    status, lines = run(root, lv=DOWN)
    assert (
        "ok: power: not checked while qemu-system-x86 (pid 5151: /dev/vfio/devices/vfio0, /dev/vfio/devices/vfio1)"
        " holds the dGPU"
    ) in lines


def test_an_awake_dgpu_with_libvirt_unreachable_and_processes_unlisted_is_a_warning(tmp_path: Path) -> None:
    """Not root: other users' open files cannot be listed, so a VM may hold the dGPU unseen."""
    root = laptop(tmp_path, devices=AWAKE)
    snapshot = dataclasses.replace(machine.read(root, rebar=False), unlisted_processes=3)
    facts = doctor_facts.gather(AURORA, snapshot, root, initramfs=INITRAMFS, libvirt=DOWN)
    power = [f.line() for f in doctor_diagnose.diagnose(AURORA, snapshot, facts) if f.check == "power"]
    assert power == [
        "warn: power: the dGPU is awake (0000:01:00.0 active (D0)), and whether a VM holds it is unknown: libvirt"
        " was not reached and the open files of 3 other users' processes could not be listed (fix: run gpupass"
        " doctor as root)"
    ]


# What the installed command runs on; the tests' venv lives inside the checkout.
SYSTEM_PYTHON = "/usr/bin/python3"


def test_processes_another_user_cannot_list_are_counted(tmp_path: Path) -> None:
    """For real: as nobody, this machine's /proc shows root's processes but not their open files."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run a process as nobody")
    program = "from gpupass.laptop import machine; print(machine.read().unlisted_processes)"
    # nobody may not read the checkout (a clone in /root or a 0700 home) nor the venv in it:
    # it gets a world-readable copy of the package in a directory of its own, and the
    # system's python3 (the laptop side needs only the standard library).
    with tempfile.TemporaryDirectory(prefix="gpupass-nobody-") as readable:
        os.chmod(readable, 0o755)
        shutil.copytree(ROOT / "pkg/gpupass", Path(readable, "gpupass"), ignore=shutil.ignore_patterns("__pycache__"))
        for path in Path(readable).rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": readable, "PYTHONDONTWRITEBYTECODE": "1"}
        as_root = subprocess.run([SYSTEM_PYTHON, "-c", program], env=env, capture_output=True, text=True, check=True)
        as_nobody = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", SYSTEM_PYTHON, "-c", program],
            env=env, capture_output=True, text=True, check=True, cwd="/",
        )  # fmt: skip
    assert int(as_root.stdout) == 0
    assert int(as_nobody.stdout) > 0  # this test's own pytest process, at least


def test_a_vbios_only_root_can_read(tmp_path: Path) -> None:
    root = laptop(tmp_path)
    (root / "var/lib/gpupass/vbios.rom").chmod(0o600)
    status, lines = run(root)
    assert (status, problems(lines)) == (
        1,
        [
            "fail: vBIOS /var/lib/gpupass/vbios.rom is valid but only its owner can read it (mode 0600): QEMU,"
            " running as another user, cannot load it (fix: sudo chmod 644 /var/lib/gpupass/vbios.rom)"
        ],
    )


@pytest.mark.parametrize(
    ("record", "said"),
    [
        (
            rom_store.origin_record(GPU_ROM.rom, "EFI stub's copy (/sys/kernel/boot_params/setup_data/2)"),
            ", from EFI stub's copy (/sys/kernel/boot_params/setup_data/2)",
        ),
        (
            rom_store.origin_record(b"another ROM", "gpupass vbios import /tmp/x.rom"),
            ", from an unknown source (/var/lib/gpupass/vbios.rom.source is for another ROM)",
        ),
    ],
    ids=["recorded", "record-of-another-rom"],
)
def test_doctor_says_where_the_vbios_came_from(tmp_path: Path, record: bytes, said: str) -> None:
    root = laptop(tmp_path)
    (root / "var/lib/gpupass/vbios.rom.source").write_bytes(record)
    status, lines = run(root)
    assert status == 0
    assert [line for line in lines if line.startswith("ok: vBIOS")] == [
        "ok: vBIOS /var/lib/gpupass/vbios.rom: valid PCI expansion ROM for 10de:25a2, 3 images, 2560 bytes" + said
    ]


def test_vfio_pci_missing_from_the_initramfs(tmp_path: Path) -> None:
    listing = doctor_facts.Initramfs(INITRAMFS.image, INITRAMFS.files[:2])
    status, lines = run(laptop(tmp_path), initramfs=listing)
    assert (status, problems(lines)) == (
        1,
        [
            f"fail: vfio-pci is not in the initramfs /boot/initrd.img-{KERNEL} (nor built into the kernel {KERNEL})"
            " (fix: sudo update-initramfs -u (or sudo dracut --force), then reboot)"
        ],
    )


def test_vfio_pci_built_in_needs_no_initramfs(tmp_path: Path) -> None:
    root = laptop(tmp_path)
    (root / f"lib/modules/{KERNEL}/modules.builtin").write_text("kernel/drivers/vfio/pci/vfio-pci.ko\n")
    status, lines = run(root, initramfs=doctor_facts.Initramfs(INITRAMFS.image, problem="not listed"))
    assert status == 0
    assert f"ok: vfio-pci is built into the kernel {KERNEL}" in lines


def test_an_initramfs_that_cannot_be_listed_is_a_warning(tmp_path: Path) -> None:
    """What list_initramfs says where neither lister is installed (its text is tested in the tool tier)."""
    unlisted = doctor_facts.Initramfs(
        INITRAMFS.image, problem="cannot list it: neither lsinitramfs nor lsinitrd is installed", fix="install one"
    )
    status, lines = run(laptop(tmp_path), initramfs=unlisted)
    assert (status, problems(lines)) == (
        2,
        ["warn: cannot list it: neither lsinitramfs nor lsinitrd is installed (fix: install one)"],
    )


def test_apparmor_without_the_include(tmp_path: Path) -> None:
    """Debian 12's libvirt 9.0: the line to add, where the package's notice says."""
    root = laptop(tmp_path, abstraction=ABSTRACTION)
    status, lines = run(root)
    fail = (
        "fail: AppArmor: libvirt's QEMU abstraction does not read"
        " /etc/apparmor.d/abstractions/libvirt-qemu.d/gpupass-aurora-z, so the VM may be denied the vBIOS and the"
        " battery table (fix: echo 'include if exists <abstractions/libvirt-qemu.d>' | sudo tee -a"
        " /etc/apparmor.d/local/abstractions/libvirt-qemu)"
    )
    assert (status, problems(lines)) == (1, [fail])
    # After the fix, as the admin makes it:
    local = root / "etc/apparmor.d/local/abstractions/libvirt-qemu"
    local.parent.mkdir(parents=True)
    local.write_text("include if exists <abstractions/libvirt-qemu.d>\n")
    assert run(root)[0] == 0


def test_libvirt_unreachable_and_its_python_api_missing(tmp_path: Path) -> None:
    root = laptop(tmp_path)
    down = doctor_facts.Libvirt(
        "qemu:///system",
        problem="cannot connect to libvirt at qemu:///system: Failed to connect socket to"
        " '/var/run/libvirt/libvirt-sock': No such file or directory",
    )
    status, lines = run(root, lv=down)
    assert (status, problems(lines)) == (
        1,
        [
            "fail: cannot connect to libvirt at qemu:///system: Failed to connect socket to"
            " '/var/run/libvirt/libvirt-sock': No such file or directory (fix: sudo systemctl start libvirtd (or"
            " virtqemud.socket, where libvirt's modular daemons run), and run gpupass doctor as root or as a member"
            " of the libvirt group)",
            "warn: VM win11-gpu not checked: libvirt not reached (fix: see the libvirt check)",
        ],
    )
    no_api = doctor_facts.Libvirt(
        "qemu:///system", problem="libvirt's Python API is not installed (import libvirt failed)", no_python_api=True
    )
    status, lines = run(root, lv=no_api)
    assert (status, problems(lines)[0]) == (
        2,
        "warn: libvirt not checked: libvirt's Python API is not installed (import libvirt failed)"
        " (fix: sudo apt install python3-libvirt)",
    )


def test_json_for_scripts(tmp_path: Path) -> None:
    status, lines = run(laptop(tmp_path, vbios=None), as_json=True)
    findings = json.loads("\n".join(lines))
    assert status == 1
    assert [f["status"] for f in findings] == ["ok"] * 7 + ["fail"] + ["ok"] * 6
    assert findings[7] == {
        "check": "vbios",
        "status": "fail",
        "what": "no vBIOS at /var/lib/gpupass/vbios.rom",
        "fix": "sudo gpupass vbios extract, or take the GPU's ROM from the laptop's BIOS update:"
        " sudo gpupass vbios from-update FILE",
    }


NOTHING_SET_UP = [
    "gpupass doctor: MECHREVO Aurora Z (gpupass-aurora-z)",
    "fail: CPU virtualisation is off: no vmx flag in /proc/cpuinfo (fix: enable Intel VT-x (virtualisation) in the"
    " firmware setup)",
    "fail: no ACPI DMAR table (/sys/firmware/acpi/tables/DMAR): the firmware exposes no IOMMU (fix: enable VT-d"
    " (IOMMU) in the firmware setup)",
    "fail: cannot read /proc/cmdline (fix: run gpupass doctor on the laptop itself)",
    "fail: 0000:01:00.0 (gpu 10de:25a2): no PCI device there (fix: switch the dGPU on in the firmware setup (hybrid"
    " graphics); gpupass check tells whether this is the laptop of the model)",
    "fail: 0000:01:00.1 (audio 10de:2291): no PCI device there (fix: switch the dGPU on in the firmware setup"
    " (hybrid graphics); gpupass check tells whether this is the laptop of the model)",
    "warn: cannot tell the running kernel (no /proc/sys/kernel/osrelease) (fix: run gpupass doctor on the laptop"
    " itself)",
    "warn: the IOMMU groups are not checked: there are none (the IOMMU is off) (fix: see the IOMMU check)",
    "fail: no vBIOS at /var/lib/gpupass/vbios.rom (fix: sudo gpupass vbios extract, or take the GPU's ROM from the"
    " laptop's BIOS update: sudo gpupass vbios from-update FILE)",
    "fail: no OVMF firmware file /usr/share/OVMF/OVMF_CODE_4M.fd, /usr/share/OVMF/OVMF_VARS_4M.fd (fix: sudo apt"
    " install ovmf)",
]


def test_a_machine_where_nothing_is_set_up(tmp_path: Path) -> None:
    """An empty root: every check still answers, none with a traceback."""
    root = tmp_path / "empty"
    root.mkdir()
    status, lines = run(root, initramfs=None, lv=libvirt(None))
    assert status == 1
    assert lines[: len(NOTHING_SET_UP)] == NOTHING_SET_UP
    assert lines[len(NOTHING_SET_UP) :] == [
        "ok: libvirt 9.0.0 answers at qemu:///system",
        "ok: AppArmor: no /etc/apparmor.d/abstractions/libvirt-qemu here, nothing confines QEMU's files",
        "fail: no libvirt domain win11-gpu (domains: none) (fix: sudo gpupass vm define win11-gpu, or for a VM of"
        " your own: sudo gpupass vm attach NAME, then gpupass doctor --vm NAME)",
        "warn: power: not checked: no PCI device at 0000:01:00.0 (fix: see the vfio-pci checks)",
        "ok: mode: boot (vfio-pci takes the dGPU at every boot)",
        "3 ok, 3 warnings, 8 failures",
    ]


def test_the_command_on_a_machine_where_nothing_is_set_up(tmp_path: Path) -> None:
    """The real command, libvirt asked at a socket that is not there: exit 1, no traceback."""
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "gpupass", "doctor", "--model", "aurora-z", "--root", str(tmp_path / "empty"),
         "--connect", f"qemu:///system?socket={tmp_path}/no-libvirt-sock"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (1, "")
    lines = result.stdout.splitlines()
    assert lines[: len(NOTHING_SET_UP)] == NOTHING_SET_UP
    assert lines[-1].endswith("failures")
    # Without --model and no package installed: the one error, no traceback.
    result = subprocess.run([sys.executable, "-m", "gpupass", "doctor"], capture_output=True, text=True, cwd=ROOT)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "gpupass: /usr/share/gpupass/models: 0 model files (expected the installed package's one)\n"
        "gpupass: hint: install a gpupass-<model> package, or pass --model\n"
    )


def test_the_command_checks_the_vm_named_and_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--vm, --connect and --json reach doctor; the libvirt answer is this test's Python's own."""
    root = laptop(tmp_path)
    argv = ["doctor", "--model", "aurora-z", "--root", str(root), "--vm", "mine", "--json"]
    status = cli.main([*argv, "--connect", f"qemu:///system?socket={tmp_path}/no-libvirt-sock"])
    findings = {f["check"]: f for f in json.loads(capsys.readouterr().out)}
    assert findings["vm"] == {
        "check": "vm",
        "status": "warn",
        "what": "VM mine not checked: libvirt not reached",
        "fix": "see the libvirt check",
    }
    # Without python3-libvirt a warning, with it a daemon that cannot be reached: a failure.
    no_api = importlib.util.find_spec("libvirt") is None
    assert (findings["libvirt"]["status"], status) == (("warn", 2) if no_api else ("fail", 1))
    # The tree has no initramfs image for the kernel: that, too, is only a warning.
    assert findings["initramfs"]["what"] == f"no initramfs image /boot/initrd.img-{KERNEL} for the running kernel"


def test_the_snapshot_holds_what_doctor_reads(tmp_path: Path) -> None:
    """machine.read takes the new fields from the tree: kernel, /dev/kvm, vfio-pci's parameter, driver modules."""
    snapshot = machine.read(laptop(tmp_path, disable_idle_d3="Y"))
    assert (snapshot.kernel_release, snapshot.kvm_device, snapshot.vfio_pci_disable_idle_d3) == (KERNEL, True, "Y")
    gpu = snapshot.device("0000:01:00.0")
    assert (gpu.driver, gpu.driver_module, gpu.runtime_status, gpu.power_control, gpu.power_state) == (
        "vfio-pci",
        "vfio_pci",
        "suspended",
        "auto",
        "D3cold",
    )
    assert gpu.upstream == ("0000:00:01.0",)


def cpio_newc(files: dict[str, bytes]) -> bytes:
    """An initramfs as the kernel reads it: a "newc" cpio archive (mode, size, name; 4-byte aligned)."""

    def pad(data: bytes) -> bytes:
        return data + b"\0" * (-len(data) % 4)

    out = b""
    for number, (name, data) in enumerate([*files.items(), ("TRAILER!!!", b"")], start=1):
        mode = 0o100644 if name != "TRAILER!!!" else 0
        fields = [number, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        out += pad(b"070701" + "".join(f"{v:08x}" for v in fields).encode() + name.encode() + b"\0")
        out += pad(data)
    return out + b"\0" * (-len(out) % 512)


def test_no_initramfs_lister_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A laptop without lsinitramfs and lsinitrd (none on PATH): a warning with what to install."""
    root = laptop(tmp_path)
    (root / "boot").mkdir()
    (root / f"boot/initrd.img-{KERNEL}").write_bytes(gzip.compress(cpio_newc({"init": b""})))
    monkeypatch.setattr(command, "find", lambda program: None)  # not the process's PATH: threads share it
    assert doctor_facts.list_initramfs(root, KERNEL) == doctor_facts.Initramfs(
        f"/boot/initrd.img-{KERNEL}",
        problem=f"cannot list /boot/initrd.img-{KERNEL}: neither lsinitramfs nor lsinitrd is installed",
        fix="sudo apt install initramfs-tools-core (lsinitramfs) or dracut (lsinitrd)",
    )


def test_no_initramfs_image(tmp_path: Path) -> None:
    assert doctor_facts.list_initramfs(laptop(tmp_path), KERNEL) == doctor_facts.Initramfs(
        f"/boot/initrd.img-{KERNEL}",
        problem=f"no initramfs image /boot/initrd.img-{KERNEL} for the running kernel",
        fix=f"sudo update-initramfs -c -k {KERNEL} (or sudo dracut --force --kver {KERNEL})",
    )


@pytest.mark.tool
@pytest.mark.parametrize("has_vfio_pci", [True, False], ids=["with", "without"])
def test_the_initramfs_as_lsinitramfs_lists_it(tmp_path: Path, has_vfio_pci: bool) -> None:
    """initramfs-tools' own lister reads the image; doctor finds vfio-pci (compressed, as Debian 13 ships it) in it."""
    modules = f"usr/lib/modules/{KERNEL}/kernel/drivers/vfio"
    files = {"init": b"#!/bin/sh\n", f"{modules}/vfio.ko.xz": b"x"}
    if has_vfio_pci:
        files[f"{modules}/pci/vfio-pci.ko.xz"] = b"x"
    root = laptop(tmp_path)
    (root / "boot").mkdir()
    (root / f"boot/initrd.img-{KERNEL}").write_bytes(gzip.compress(cpio_newc(files)))
    listing = doctor_facts.list_initramfs(root, KERNEL)
    assert (listing.problem, f"{modules}/vfio.ko.xz" in listing.files) == ("", True)
    status, lines = run(root, initramfs=listing)
    if has_vfio_pci:
        assert (status, lines) == (0, SET_UP)
    else:
        assert problems(lines) == [
            f"fail: vfio-pci is not in the initramfs /boot/initrd.img-{KERNEL} (nor built into the kernel {KERNEL})"
            " (fix: sudo update-initramfs -u (or sudo dracut --force), then reboot)"
        ]


CHECK_NAMES = ["cpu", "iommu", "cmdline", "vfio-pci", "initramfs", "group", "vbios", "ovmf", "libvirt", "apparmor",
               "vm", "power", "mode"]  # fmt: skip


@settings(max_examples=int(os.environ.get("GPUPASS_HYPOTHESIS_EXAMPLES", "300")), deadline=None)
@given(machines())
def test_doctor_answers_every_check_on_any_machine(snapshot_: machine.Machine) -> None:
    """On every generated laptop, with the model probe makes of it: each check answers, none raises,
    and the exit status follows the findings. The strategy's devices have no driver and sleep."""
    result = probe.probe(snapshot_)
    probed = model.parse(result.toml(), result.model_id, "probe")
    facts = doctor_facts.Facts(probed.vm.name, None, None, None, "", frozenset(), {}, libvirt(None))
    findings = doctor_diagnose.diagnose(probed, snapshot_, facts)
    assert list(dict.fromkeys(f.check for f in findings)) == CHECK_NAMES
    assert [f.line() for f in findings if f.check == "vfio-pci"] == [
        f"fail: {fn.address} ({fn.role} {fn.id}) is bound to no driver (fix: sudo modprobe vfio-pci (it claims the"
        " ids of vfio-pci.ids= on the kernel command line))"
        for fn in probed.gpu.functions
    ]
    power = [f for f in findings if f.check == "power"]
    assert [f.status for f in power] == ["ok"] and "runtime-suspended" in power[0].what
    assert doctor_finding.exit_status(findings) == 1


@pytest.mark.tool
def test_a_damaged_initramfs_is_a_warning_with_the_listers_words(tmp_path: Path) -> None:
    root = laptop(tmp_path)
    (root / "boot").mkdir()
    (root / f"boot/initrd.img-{KERNEL}").write_bytes(b"not an image")
    assert doctor_facts.list_initramfs(root, KERNEL) == doctor_facts.Initramfs(
        f"/boot/initrd.img-{KERNEL}",
        problem=f"cannot list /boot/initrd.img-{KERNEL}: lsinitramfs {root}/boot/initrd.img-{KERNEL} failed (2):"
        " cpio: premature end of archive",
        fix="run gpupass doctor as root; if it still fails, rebuild the image: sudo update-initramfs -u"
        " (or sudo dracut --force)",
    )


# Against a real libvirtd (tool tier) ---------------------------------------------------


@pytest.mark.tool
def test_libvirt_facts_from_a_real_daemon(libvirtd: Daemon, tmp_path: Path) -> None:
    """query_libvirt reads the defined domain back; a domain libvirt kept is still whole for doctor."""
    from .test_libvirt import has_kvm, without_kvm

    xml = DEFINED if has_kvm(libvirtd) else without_kvm(DEFINED.encode()).decode()
    (tmp_path / "domain.xml").write_text(xml)
    libvirtd.virsh("define", str(tmp_path / "domain.xml"))
    try:
        facts = doctor_facts.query_libvirt(libvirtd.uri, "win11-gpu")
        assert facts.problem == ""
        survey = facts.survey
        assert survey.domains == ("win11-gpu",) and survey.domain_active is False
        assert survey.version >= 9_000_000 and survey.host_cpus
        # As on the laptop, whose CPUs the domain's emulator pinning was made for.
        on_the_laptop = dataclasses.replace(facts, survey=dataclasses.replace(survey, host_cpus=LAPTOP_CPUS))
        assert [f.line() for f in doctor_vm.check_vm(AURORA, None, _facts(on_the_laptop))] == [SET_UP[-4]]
        missing = doctor_facts.query_libvirt(libvirtd.uri, "no-such-vm")
        assert (missing.problem, missing.survey.domain_xml) == ("", None)
    finally:
        libvirtd.virsh("undefine", "--nvram", "win11-gpu")
    down = doctor_facts.query_libvirt(f"qemu:///system?socket={tmp_path}/no-sock", "win11-gpu")
    assert down.problem == (
        f"cannot connect to libvirt at qemu:///system?socket={tmp_path}/no-sock: Failed to connect socket to"
        f" '{tmp_path}/no-sock': No such file or directory"
    )


def _facts(lv: doctor_facts.Libvirt) -> doctor_facts.Facts:
    return doctor_facts.Facts("win11-gpu", None, None, None, "", frozenset(), {}, lv)


def test_the_laptop_sides_command_runner_names_the_package_and_shows_stderr() -> None:
    from gpupass.errors import ToolError
    from gpupass.laptop import command

    absent = "gpupass-no-such-program"  # (a name test_install_deps need not know)
    with pytest.raises(ToolError) as missing:
        command.run([absent, "x"], "some-package")
    assert missing.value.lines() == ["gpupass-no-such-program not found", "hint: install some-package"]
    with pytest.raises(ToolError) as failed:
        command.run(["sh", "-c", "echo oops >&2; exit 3"], "dash")
    assert failed.value.lines() == ["sh -c echo oops >&2; exit 3 failed (3): oops"]
    assert command.run(["sh", "-c", "echo listed"], "dash") == "listed\n"


def test_nvpcf_is_said_to_be_experimental(tmp_path: Path) -> None:
    """Only for a model that turns it on (SET_UP above: aurora-z as shipped has no such line)."""
    text = (ROOT / "models" / "aurora-z.toml").read_text(encoding="utf-8")
    on = model.parse(
        text + "\n[guest]\nnvpcf = true\nnvpcf_tpp_offset_w = 80\nnvpcf_max_tgp_offset_w = 35\n", "aurora-z", "x"
    )
    root = laptop(tmp_path)
    facts = doctor_facts.gather(on, machine.read(root, rebar=False), root, initramfs=INITRAMFS, libvirt=libvirt())
    assert [f.line() for f in doctor_vm.check_nvpcf(on, machine.read(root, rebar=False), facts)] == [
        "fail: no NVPCF SSDT at /usr/share/gpupass/ssdt-nvpcf.aml: a VM that loads it does not start"
        " (fix: sudo apt install --reinstall gpupass-aurora-z)"
    ]
    (root / "usr/share/gpupass").mkdir(parents=True, exist_ok=True)
    (root / "usr/share/gpupass/ssdt-nvpcf.aml").write_bytes(b"SSDT")
    facts = doctor_facts.gather(on, machine.read(root, rebar=False), root, initramfs=INITRAMFS, libvirt=libvirt())
    assert [f.line() for f in doctor_vm.check_nvpcf(on, machine.read(root, rebar=False), facts)] == [
        "warn: NVPCF is experimental: the guest gets a static \\_SB.NPCF for Dynamic Boost (TPP offset 80 W,"
        " TGP offset 0 W to 35 W, not on battery), proven in emulation, not yet on a laptop"
        " (fix: if Windows stops with ACPI_BIOS_ERROR, rebuild with guest.nvpcf = false; report how it went"
        " (README: NVPCF))"
    ]


# --- on-demand mode (gpupass mode on-demand) -------------------------------------------------

ON_DEMAND_CMDLINE = f"{CMDLINE} intel_iommu=on iommu=pt"
ON_HOST = changed(changed(SET_UP_PCI, "0000:01:00.0", driver="nouveau"), "0000:01:00.1", driver="snd_hda_intel")


def on_demand(tmp_path: Path) -> Path:
    """The laptop after gpupass mode on-demand and a reboot: the dGPU on its host drivers, the VM off."""
    root = laptop(tmp_path, devices=ON_HOST, cmdline=ON_DEMAND_CMDLINE)
    (root / "var/lib/gpupass/mode").write_text("on-demand\n")
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n")
    sysfs.class_device(root, "0000:01:00.0", "drm/card1", 226, 1)
    sysfs.char_device(root, "/dev/dri/card1", 226, 1)
    return root


def test_on_demand_with_the_dgpu_on_its_host_driver_is_fine(tmp_path: Path) -> None:
    status, lines = run(on_demand(tmp_path))
    assert problems(lines) == []
    assert status == 0
    for line in (
        "ok: the kernel command line has intel_iommu=on iommu=pt",
        "ok: 0000:01:00.0 (gpu 10de:25a2) is on its host driver nouveau (on-demand: until the VM starts)",
        "ok: 0000:01:00.1 (audio 10de:2291) is on its host driver snd_hda_intel (on-demand: until the VM starts)",
        "ok: mode: on-demand (the host keeps the dGPU while the VM is off; the libvirt hook claims it at start)",
        "ok: nothing holds the dGPU: the VM can start",
    ):
        assert line in lines
    assert not [line for line in lines if "initramfs" in line]


def test_on_demand_lists_the_holders_the_vm_would_not_start_with(tmp_path: Path) -> None:
    root = on_demand(tmp_path)
    sysfs.process(root, 3300, "firefox-esr", 1000, {40: "/dev/dri/card1"})
    status, lines = run(root)
    assert status == 2
    assert problems(lines) == [
        "warn: the VM would not start now: pid 3300 (firefox-esr, user alice) holds /dev/dri/card1 of 0000:01:00.0:"
        " quit it, or end it with: kill 3300 (fix: gpupass gpu holders)"
    ]


def test_on_demand_still_wants_the_iommu_on_the_command_line(tmp_path: Path) -> None:
    root = laptop(tmp_path, devices=ON_HOST, cmdline=CMDLINE)
    (root / "var/lib/gpupass/mode").write_text("on-demand\n")
    lines = run(root)[1]
    assert "fail: the kernel command line lacks intel_iommu=on iommu=pt (/proc/cmdline) (fix: sudo update-grub," in (
        "\n".join(lines)
    )


PENDING_HINT = "(fix: reboot (with the VM shut down))"


def test_a_switch_to_on_demand_waits_for_the_reboot(tmp_path: Path) -> None:
    """gpupass mode on-demand, no reboot yet: the running kernel still has vfio-pci.ids, the dGPU
    is on vfio-pci; doctor says the switch takes effect at the next boot."""
    root = laptop(tmp_path)  # booted in boot mode
    (root / "var/lib/gpupass/mode").write_text("on-demand\n")
    status, lines = run(root)
    assert problems(lines) == [
        "warn: the running kernel was started in boot mode: on-demand mode takes effect at the next boot "
        + PENDING_HINT
    ]
    assert status == 2


def test_a_switch_back_to_boot_is_the_command_line_check_s(tmp_path: Path) -> None:
    """gpupass mode boot removes the state file, so nothing records the switch: the command line
    without vfio-pci.ids is the command-line check's failure, whose fix is the reboot; no pending
    switch is claimed from the command line alone."""
    root = on_demand(tmp_path)  # booted in on-demand mode
    (root / "var/lib/gpupass/mode").unlink()
    lines = run(root)[1]
    lacks = "fail: the kernel command line lacks vfio-pci.ids=10de:25a2,10de:2291 (/proc/cmdline) (fix: sudo"
    assert any(line.startswith(lacks) for line in lines)
    assert not [line for line in lines if "takes effect at the next boot" in line]


def test_no_switch_is_pending_when_the_running_kernel_has_the_mode_s_arguments(tmp_path: Path) -> None:
    for root in (laptop(tmp_path / "boot"), on_demand(tmp_path / "on-demand")):
        assert not [line for line in run(root)[1] if "takes effect at the next boot" in line]


def test_boot_mode_with_the_dgpu_on_its_host_driver_still_fails(tmp_path: Path) -> None:
    lines = run(laptop(tmp_path, devices=ON_HOST))[1]
    assert any(line.startswith("fail: 0000:01:00.0 (gpu 10de:25a2) is held by nouveau, not vfio-pci") for line in lines)
