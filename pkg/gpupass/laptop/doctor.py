"""``gpupass doctor``: is passthrough set up on this laptop, and does the dGPU sleep while the VM is off?

One line per check, ``ok`` / ``warn`` / ``fail``, each failure with its fix. The checks are pure
functions of the model, the machine snapshot (machine.py, the one reader of sysfs and procfs)
and ``Facts``: what is not in sysfs (the vBIOS file, modules.builtin, the initramfs listing,
the OVMF and AppArmor files, libvirt's view of the VM), gathered once by ``gather``. The tests
build both from fixture trees, and hand in the initramfs listing and libvirt's answers as data.

Exit status: 0 everything ok, 1 a failure, 2 only warnings. Standard library only; libvirt
is reached through libvirtconn, other programs through command.run.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from .. import guest, paths
from ..errors import GpupassError
from ..model import IOMMU_ARG, Model
from . import command, libvirtconn, machine, vm, xmledit
from .machine import Machine, PciDevice
from .preflight import IOMMU_TABLES, group_companions, intruder_problem, no_iommu_table

OK, WARN, FAIL = "ok", "warn", "fail"
VFIO_DRIVER = "vfio-pci"
VFIO_MODULE = re.compile(r"(^|/)vfio[-_]pci\.ko(\.[a-z0-9]+)?$")  # compressed modules: .ko.xz, .ko.zst
LOCAL_MODPROBE = "/etc/modprobe.d/gpupass-local.conf"
REBUILD_INITRAMFS = "sudo update-initramfs -u (or sudo dracut --force)"
CPU_FLAGS = {"intel": ("vmx", "Intel VT-x"), "amd": ("svm", "AMD-V")}
IOMMU_OFF = ("iommu=off", "intel_iommu=off", "amd_iommu=off")
# Listers of an initramfs image: (program, the Debian package that has it).
INITRAMFS_LISTERS = (("lsinitramfs", "initramfs-tools-core"), ("lsinitrd", "dracut"))
# As debian/maintscript-functions.sh decides whether libvirt's AppArmor abstraction reads the drop-in.
APPARMOR_ABSTRACTION = "/etc/apparmor.d/abstractions/libvirt-qemu"
APPARMOR_LOCAL = "/etc/apparmor.d/local/abstractions/libvirt-qemu"
APPARMOR_INCLUDE = re.compile(r"^[ \t]*#?include[ \t]*(if exists[ \t]*)?<abstractions/libvirt-qemu\.d>", re.MULTILINE)
APPARMOR_LINE = "include if exists <abstractions/libvirt-qemu.d>"


@dataclass(frozen=True)
class Finding:
    check: str  # a short name, for --json
    status: str  # ok, warn, fail
    what: str
    fix: str = ""

    def line(self) -> str:
        fix = f" (fix: {self.fix})" if self.fix and self.status != OK else ""
        return f"{self.status}: {self.what}{fix}"


@dataclass(frozen=True)
class Initramfs:
    """The running kernel's initramfs image as the laptop names it, and what it holds."""

    image: str  # /boot/initrd.img-<release>
    files: tuple[str, ...] | None = None  # the listing's lines; None: not listed
    problem: str = ""  # why it was not listed
    fix: str = ""


@dataclass(frozen=True)
class Libvirt:
    """libvirt's answers about the VM; ``problem`` when it could not be asked."""

    uri: str
    problem: str = ""
    no_python_api: bool = False
    survey: libvirtconn.Survey | None = None  # when reached


@dataclass(frozen=True)
class Facts:
    """Everything the checks read besides the machine snapshot, gathered once."""

    vm_name: str
    modules_builtin: tuple[str, ...] | None  # the running kernel's modules.builtin; None: not there
    initramfs: Initramfs | None  # None: the running kernel is unknown
    vbios: bytes | None  # None: no file
    vbios_problem: str  # the file exists but cannot be read
    present: frozenset[str]  # which of the model's OVMF files exist
    apparmor: dict[str, str]  # the AppArmor files that exist (laptop path -> text)
    libvirt: Libvirt
    vbios_mode: int | None = None  # the file's permission bits, when there is one
    vbios_origin: str | None = None  # the record beside it of where it came from; None: no record
    rom_aml: bytes | None = None  # the guest's _ROM SSDT beside the vBIOS; None: no file
    nvpcf_aml: bool = False  # the package's NVPCF SSDT is there (guest.nvpcf)


# Gathering ----------------------------------------------------------------------------


def under(root: Path, path: str | Path) -> Path:
    return root / str(path).lstrip("/")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def list_initramfs(root: Path, release: str) -> Initramfs:
    """List ``/boot/initrd.img-<release>`` under ``root`` with the laptop's lister."""
    image = f"/boot/initrd.img-{release}"
    if not under(root, image).exists():
        return Initramfs(
            image,
            problem=f"no initramfs image {image} for the running kernel",
            fix=f"sudo update-initramfs -c -k {release} (or sudo dracut --force --kver {release})",
        )
    for program, package in INITRAMFS_LISTERS:
        if shutil.which(program) is None:
            continue  # the other initramfs tool's lister, then
        try:
            listing = command.run([program, str(under(root, image))], package)
        except GpupassError as e:
            # e.g. an image only root may read, or a damaged one.
            return Initramfs(
                image,
                problem=f"cannot list {image}: {e.problems[0]}",
                fix=f"run gpupass doctor as root; if it still fails, rebuild the image: {REBUILD_INITRAMFS}",
            )
        return Initramfs(image, tuple(listing.splitlines()))
    return Initramfs(
        image,
        problem=f"cannot list {image}: neither lsinitramfs nor lsinitrd is installed",
        fix="sudo apt install initramfs-tools-core (lsinitramfs) or dracut (lsinitrd)",
    )


def query_libvirt(uri: str | None, name: str) -> Libvirt:
    shown = uri or libvirtconn.DEFAULT_URI
    try:
        conn = libvirtconn.connect(uri)
    except libvirtconn.NoPythonApi as e:
        return Libvirt(shown, problem=e.problems[0], no_python_api=True)
    except GpupassError as e:
        return Libvirt(shown, problem=e.problems[0])
    try:
        return Libvirt(shown, survey=libvirtconn.survey(conn, name))
    except GpupassError as e:
        return Libvirt(shown, problem=e.problems[0])
    finally:
        conn.close()


def gather(
    model: Model,
    snapshot: Machine,
    root: Path = Path("/"),
    *,
    vm_name: str | None = None,
    uri: str | None = None,
    initramfs: Initramfs | None = None,
    libvirt: Libvirt | None = None,
) -> Facts:
    """Read what the checks need besides sysfs; ``initramfs`` and ``libvirt`` given as data skip asking."""
    name = vm_name or model.vm.name
    release = snapshot.kernel_release
    builtin = None
    if release:
        text = _read_text(under(root, f"lib/modules/{release}/modules.builtin"))
        builtin = tuple(text.split()) if text is not None else None
        if initramfs is None:
            initramfs = list_initramfs(root, release)
    vbios, vbios_problem, vbios_mode = None, "", None
    try:
        vbios = under(root, paths.VBIOS_ROM).read_bytes()
        vbios_mode = under(root, paths.VBIOS_ROM).stat().st_mode & 0o7777
    except FileNotFoundError:
        pass
    except OSError as e:
        vbios_problem = f"{paths.VBIOS_ROM}: cannot be read: {e.strerror}"
    from .vbios import origin_path

    vbios_origin = _read_text(under(root, origin_path(paths.VBIOS_ROM)))
    try:
        rom_aml = under(root, paths.ROM_AML).read_bytes()
    except OSError:
        rom_aml = None
    ovmf = (model.vm.ovmf_code, model.vm.ovmf_vars)
    apparmor = {p: t for p in (APPARMOR_ABSTRACTION, APPARMOR_LOCAL) if (t := _read_text(under(root, p))) is not None}
    return Facts(
        vm_name=name,
        modules_builtin=builtin,
        initramfs=initramfs if release else None,
        vbios=vbios,
        vbios_problem=vbios_problem,
        present=frozenset(p for p in ovmf if under(root, p).is_file()),
        apparmor=apparmor,
        libvirt=libvirt if libvirt is not None else query_libvirt(uri, name),
        vbios_mode=vbios_mode,
        vbios_origin=vbios_origin,
        rom_aml=rom_aml,
        nvpcf_aml=under(root, paths.NVPCF_AML).is_file(),
    )


# The checks ---------------------------------------------------------------------------


def softdep_fix(module: str) -> str:
    return f'add "softdep {module} pre: vfio-pci" to {LOCAL_MODPROBE}, then {REBUILD_INITRAMFS} and reboot'


def _module(device: PciDevice) -> str:
    return device.driver_module or (device.driver or "").replace("-", "_")


def check_cpu(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    flag, name = CPU_FLAGS[model.cpu.vendor]
    if flag not in m.cpu_flags:
        return [
            Finding(
                "cpu",
                FAIL,
                f"CPU virtualisation is off: no {flag} flag in /proc/cpuinfo",
                f"enable {name} (virtualisation) in the firmware setup",
            )
        ]
    if not m.kvm_device:
        module = f"kvm_{model.cpu.vendor}"
        return [
            Finding(
                "cpu",
                FAIL,
                f"CPU virtualisation is on ({flag}), but there is no /dev/kvm",
                f"sudo modprobe {module} (dmesg says why it refuses)",
            )
        ]
    return [Finding("cpu", OK, f"CPU virtualisation is on ({flag}, /dev/kvm)")]


def check_iommu(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    table = IOMMU_TABLES[model.cpu.vendor][0]
    if table not in m.acpi_tables:
        return [Finding("iommu", FAIL, *no_iommu_table(model.cpu.vendor))]
    missing = [what for what, there in (("/sys/class/iommu is empty", m.iommu_units),
                                         ("there are no IOMMU groups", m.has_iommu_groups)) if not there]  # fmt: skip
    if missing:
        return [
            Finding(
                "iommu",
                FAIL,
                f"the IOMMU is off: the firmware has one (ACPI {table} table), but {' and '.join(missing)}",
                f"boot with {IOMMU_ARG[model.cpu.vendor]} (see the kernel command line check)",
            )
        ]
    groups = len(m.iommu_groups) + len(m.unlistable_groups)
    units = ", ".join(m.iommu_units)
    return [Finding("iommu", OK, f"the IOMMU is on (ACPI {table} table, {units}, {groups} IOMMU groups)")]


def _normal(token: str) -> str:
    """A kernel argument as the kernel matches it: a module's name with _ for - (vfio-pci.ids = vfio_pci.ids)."""
    name, eq, value = token.partition("=")
    module, dot, parameter = name.partition(".")
    return (module.replace("-", "_") + dot + parameter if dot else name) + eq + value


def check_cmdline(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    if m.cmdline is None:
        return [Finding("cmdline", FAIL, "cannot read /proc/cmdline", "run gpupass doctor on the laptop itself")]
    tokens = m.cmdline.split()
    have = {_normal(t) for t in tokens}
    found = []
    off = [t for t in tokens if t in IOMMU_OFF]
    if off:
        found.append(
            Finding(
                "cmdline",
                FAIL,
                f"the kernel command line turns the IOMMU off ({' '.join(off)})",
                f"remove {' '.join(off)} from GRUB_CMDLINE_LINUX* in /etc/default/grub (or /etc/kernel/cmdline),"
                " then sudo update-grub and reboot",
            )
        )
    missing = [a for a in model.kernel_args if _normal(a) not in have]
    if missing:
        found.append(
            Finding(
                "cmdline",
                FAIL,
                f"the kernel command line lacks {' '.join(missing)} (/proc/cmdline)",
                f"sudo update-grub, then reboot (/etc/default/grub.d/{model.package}.cfg adds the arguments;"
                " without GRUB add them to /etc/kernel/cmdline, then sudo kernel-install add-all)",
            )
        )
    if not found:
        found.append(Finding("cmdline", OK, f"the kernel command line has {' '.join(model.kernel_args)}"))
    return found


def check_bindings(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    found = []
    for f in model.gpu.functions:
        device = m.device(f.address)
        what = f"{f.address} ({f.role} {f.id})"
        if device is None:
            found.append(
                Finding(
                    "vfio-pci",
                    FAIL,
                    f"{what}: no PCI device there",
                    "switch the dGPU on in the firmware setup (hybrid graphics); gpupass check tells whether"
                    " this is the laptop of the model",
                )
            )
        elif device.driver == VFIO_DRIVER:
            found.append(Finding("vfio-pci", OK, f"{what} is bound to vfio-pci"))
        elif device.driver is None:
            found.append(
                Finding(
                    "vfio-pci",
                    FAIL,
                    f"{what} is bound to no driver",
                    "sudo modprobe vfio-pci (it claims the ids of vfio-pci.ids= on the kernel command line)",
                )
            )
        else:
            found.append(
                Finding(
                    "vfio-pci", FAIL, f"{what} is held by {device.driver}, not vfio-pci", softdep_fix(_module(device))
                )
            )
    return found


def check_initramfs(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    release = m.kernel_release
    if release is None:
        return [Finding("initramfs", WARN, "cannot tell the running kernel (no /proc/sys/kernel/osrelease)",
                        "run gpupass doctor on the laptop itself")]  # fmt: skip
    if facts.modules_builtin and any(VFIO_MODULE.search(line) for line in facts.modules_builtin):
        return [Finding("initramfs", OK, f"vfio-pci is built into the kernel {release}")]
    initramfs = facts.initramfs
    if initramfs is None or initramfs.files is None:
        problem = initramfs.problem if initramfs else "the initramfs was not listed"
        return [Finding("initramfs", WARN, problem, initramfs.fix if initramfs else "")]
    if any(VFIO_MODULE.search((line.split() or [""])[-1]) for line in initramfs.files):
        return [Finding("initramfs", OK, f"vfio-pci is in the initramfs {initramfs.image}")]
    return [
        Finding(
            "initramfs",
            FAIL,
            f"vfio-pci is not in the initramfs {initramfs.image} (nor built into the kernel {release})",
            f"{REBUILD_INITRAMFS}, then reboot",
        )
    ]


def check_group(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    if not m.has_iommu_groups:
        return [Finding("group", WARN, "the IOMMU groups are not checked: there are none (the IOMMU is off)",
                        "see the IOMMU check")]  # fmt: skip
    passed = [f.address for f in model.gpu.functions]
    groups: dict[str, list[str]] = {}
    for address in passed:
        device = m.device(address)
        if device is not None and device.iommu_group is not None:
            groups.setdefault(device.iommu_group, []).append(address)
    if not groups:
        return [Finding("group", WARN, "the IOMMU group is not checked: no function of the model is in one",
                        "see the vfio-pci checks")]  # fmt: skip
    found = []
    for group, members in groups.items():
        bridges, intruders = group_companions(m, group, passed)
        for address in intruders:
            found.append(
                Finding(
                    "group",
                    FAIL,
                    intruder_problem(m, group, address),
                    "none in gpupass: a device sharing the group goes to the VM with the dGPU"
                    " (a firmware update may split the group)",
                )
            )
        if not intruders:
            with_bridges = f" and PCI bridge {', '.join(bridges)}" if bridges else ""
            found.append(Finding("group", OK, f"IOMMU group {group} holds only {', '.join(members)}{with_bridges}"))
    return found


def check_vbios(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    from . import vbios

    rom = paths.VBIOS_ROM
    from_update = "take the GPU's ROM from the laptop's BIOS update: sudo gpupass vbios from-update FILE"
    if facts.vbios_problem:
        return [Finding("vbios", FAIL, facts.vbios_problem, "run gpupass doctor as root")]
    if facts.vbios is None:
        return [Finding("vbios", FAIL, f"no vBIOS at {rom}", f"sudo gpupass vbios extract, or {from_update}")]
    gpu = model.gpu_function
    vendor, device = (int(part, 16) for part in gpu.id.split(":"))
    try:
        report = vbios.validate(facts.vbios, vendor, device, source=str(rom))
    except vbios.RomError as e:
        return [Finding("vbios", FAIL, e.problems[0], f"replace it with a valid ROM: {from_update}")]
    if report.rom != facts.vbios:
        return [
            Finding(
                "vbios",
                WARN,
                f"{rom} holds a valid ROM for {gpu.id} with bytes around it",
                f"sudo gpupass vbios import {rom} (stores the ROM alone)",
            )
        ]
    if facts.vbios_mode is not None and not facts.vbios_mode & 0o004:
        # QEMU opens the rom file itself, as the user qemu.conf names (libvirt-qemu on Debian).
        return [
            Finding(
                "vbios",
                FAIL,
                f"vBIOS {rom} is valid but only its owner can read it (mode {facts.vbios_mode:04o}):"
                " QEMU, running as another user, cannot load it",
                f"sudo chmod 644 {rom}",
            )
        ]
    what = report.describe()[0].replace(f"{rom}: ", f"vBIOS {rom}: ")
    if facts.vbios_origin is not None:
        origin = vbios.recorded_origin(facts.vbios, facts.vbios_origin)
        # A record that does not describe this ROM: it was replaced by hand (or a crash came between the two).
        what += (
            f", from {origin}" if origin else f", from an unknown source ({vbios.origin_path(rom)} is for another ROM)"
        )
    return [Finding("vbios", OK, what)]


def check_ovmf(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    files = (model.vm.ovmf_code, model.vm.ovmf_vars)
    absent = [p for p in files if p not in facts.present]
    if absent:
        return [Finding("ovmf", FAIL, f"no OVMF firmware file {', '.join(absent)}", "sudo apt install ovmf")]
    return [Finding("ovmf", OK, f"OVMF without Secure Boot is there ({', '.join(files)})")]


def check_libvirt(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    lv = facts.libvirt
    if lv.no_python_api:
        return [Finding("libvirt", WARN, f"libvirt not checked: {lv.problem}", "sudo apt install python3-libvirt")]
    if lv.problem:
        return [
            Finding(
                "libvirt",
                FAIL,
                lv.problem,
                "sudo systemctl start libvirtd (or virtqemud.socket, where libvirt's modular daemons run),"
                " and run gpupass doctor as root or as a member of the libvirt group",
            )
        ]
    v = lv.survey.version
    return [Finding("libvirt", OK, f"libvirt {v // 1000000}.{v // 1000 % 1000}.{v % 1000} answers at {lv.uri}")]


def check_apparmor(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    drop_in = f"/etc/apparmor.d/abstractions/libvirt-qemu.d/{model.package}"
    if APPARMOR_ABSTRACTION not in facts.apparmor:
        return [Finding("apparmor", OK, f"AppArmor: no {APPARMOR_ABSTRACTION} here, nothing confines QEMU's files")]
    if any(APPARMOR_INCLUDE.search(text) for text in facts.apparmor.values()):
        return [Finding("apparmor", OK, f"AppArmor: libvirt's QEMU abstraction reads {drop_in}")]
    return [
        Finding(
            "apparmor",
            FAIL,
            f"AppArmor: libvirt's QEMU abstraction does not read {drop_in},"
            " so the VM may be denied the vBIOS and the battery table",
            f"echo '{APPARMOR_LINE}' | sudo tee -a {APPARMOR_LOCAL}",
        )
    ]


def check_vm(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    lv, name = facts.libvirt, facts.vm_name
    if lv.problem:
        return [Finding("vm", WARN, f"VM {name} not checked: libvirt not reached", "see the libvirt check")]
    survey = lv.survey
    if survey.domain_xml is None:
        return [
            Finding(
                "vm",
                FAIL,
                f"no libvirt domain {name} (domains: {', '.join(survey.domains) or 'none'})",
                f"sudo gpupass vm define {name}, or for a VM of your own: sudo gpupass vm attach NAME,"
                " then gpupass doctor --vm NAME",
            )
        ]
    attach = f"shut the VM off, then sudo gpupass vm attach {name}"
    found = []
    for piece, what in vm.missing(survey.domain_xml, model, survey.host_cpus):
        if piece == vm.FIRMWARE_PIECE:
            why = vm.secure_boot(xmledit.parse(survey.domain_xml))
            found.append(Finding("vm", FAIL, f"VM {name} boots a Secure Boot firmware: {why}", attach))
        elif piece == vm.HYPERV_PIECE:
            # Passthrough works without them; every one missing costs the guest latency.
            found.append(Finding("vm", WARN, f"VM {name} lacks {piece}: {what}", attach))
        else:
            found.append(Finding("vm", FAIL, f"VM {name} lacks {piece}: {what}", attach))
    if not found:
        found.append(
            Finding(
                "vm",
                OK,
                f"VM {name} holds every passthrough piece (hostdevs on one multifunction slot, vBIOS rom,"
                " MMIO window, battery table, SMBIOS, no Secure Boot)",
            )
        )
    # Not a passthrough piece (attach adds none, a user's TPM is theirs), but Windows 11
    # setup refuses a machine without one.
    if xmledit.parse(survey.domain_xml).find("devices/tpm") is None:
        found.append(
            Finding(
                "vm",
                WARN,
                f"VM {name} has no TPM, and Windows 11 setup refuses a machine without TPM 2.0",
                f"with swtpm and swtpm-tools installed, shut the VM off, then sudo virt-xml {name} --add-device"
                " --tpm model=tpm-crb,backend.type=emulator,backend.version=2.0",
            )
        )
    return found


def _power(device: PciDevice) -> str:
    return f"{device.runtime_status or 'unknown'} ({device.power_state or '?'})"


@dataclass(frozen=True)
class Sleep:
    """Whether the dGPU's functions and its root port sleep, and what gpupass knows keeps them awake.

    From the machine snapshot alone (power/runtime_status, power_state and the rest, files that do
    not wake the device): ``gpupass doctor``, ``gpupass power status`` and the libvirt hook's record."""

    gpu: PciDevice
    port: PciDevice | None  # the root port above the dGPU
    devices: tuple[PciDevice, ...]  # the model's functions present, then the root port
    awake: tuple[PciDevice, ...]  # those not runtime-suspended
    causes: tuple[tuple[str, str], ...]  # (what keeps it awake, the fix)

    @property
    def asleep(self) -> bool:
        return not self.awake

    def asleep_text(self) -> str:
        text = f"the dGPU {self.gpu.address} ({self.gpu.power_state or '?'})"
        if self.port:
            return text + f" and its root port {self.port.address} ({self.port.power_state or '?'}) are"
        return text + " is"


def dgpu_sleep(model: Model, m: Machine, gpu: PciDevice) -> Sleep:
    functions = [d for f in model.gpu.functions if (d := m.device(f.address)) is not None]
    # upstream is nearest first: its last bridge is the root port, which sleeps only when all below it do.
    port = m.device(gpu.upstream[-1]) if gpu.upstream else None
    devices = functions + ([port] if port else [])
    awake = [d for d in devices if d.runtime_status != "suspended"]
    causes: list[tuple[str, str]] = []
    for d in devices:
        if d.power_control == "on":
            causes.append(
                (
                    f"{d.address} has power/control=on",
                    f"echo auto | sudo tee /sys/bus/pci/devices/{d.address}/power/control, and remove what sets it"
                    " (a udev rule, TLP's RUNTIME_PM_ON_AC=on)",
                )
            )
    for d in functions:
        if d.driver and d.driver != VFIO_DRIVER:
            causes.append((f"{d.address} is on the host driver {d.driver}", softdep_fix(_module(d))))
    if (m.vfio_pci_disable_idle_d3 or "").upper() in ("Y", "1"):
        causes.append(
            (
                "vfio-pci has disable_idle_d3=Y",
                "remove disable_idle_d3 from vfio-pci's options (/etc/modprobe.d, the kernel command line),"
                " then reboot",
            )
        )
    return Sleep(gpu, port, tuple(devices), tuple(awake), tuple(causes) if awake else ())


def check_power(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    lv, name = facts.libvirt, facts.vm_name
    if not lv.problem and lv.survey.domain_active:
        return [Finding("power", OK, f"power: not checked while {name} runs (the dGPU is the VM's)")]
    gpu = m.device(model.gpu_function.address)
    if gpu is None:
        return [Finding("power", WARN, f"power: not checked: no PCI device at {model.gpu_function.address}",
                        "see the vfio-pci checks")]  # fmt: skip
    functions = [d for f in model.gpu.functions if (d := m.device(f.address)) is not None]
    # A VM libvirt did not tell of (libvirt unreachable, another name, plain QEMU) holds the
    # GPU's IOMMU group (or, with iommufd, the GPU's own VFIO file) open for as long as it runs.
    files = {f"/dev/vfio/devices/{d.vfio_device}" for d in functions if d.vfio_device}
    if gpu.iommu_group:
        files.add(f"/dev/vfio/{gpu.iommu_group}")
    held: dict[tuple[int, str], list[str]] = {}
    for u in m.vfio_users:
        if u.path in files:
            held.setdefault((u.pid, u.command or "a process"), []).append(u.path)
    if held:
        who = ", ".join(f"{command} (pid {pid}: {', '.join(opened)})" for (pid, command), opened in held.items())
        return [Finding("power", OK, f"power: not checked while {who} holds the dGPU")]
    sleep = dgpu_sleep(model, m, gpu)
    if sleep.asleep:
        return [Finding("power", OK, f"power: {sleep.asleep_text()} runtime-suspended while the VM is off")]
    awake, causes = sleep.awake, sleep.causes
    states = ", ".join(f"{d.address} {_power(d)}" for d in awake)
    if lv.problem and m.unlisted_processes:
        return [
            Finding(
                "power",
                WARN,
                f"power: the dGPU is awake ({states}), and whether a VM holds it is unknown: libvirt was not"
                f" reached and the open files of {m.unlisted_processes} other users' processes could not be listed",
                "run gpupass doctor as root",
            )
        ]
    what = f"power: the dGPU stays awake while the VM is off, costing battery: {states}"
    if not causes:
        return [
            Finding(
                "power",
                WARN,
                f"{what}; nothing gpupass knows of keeps it so",
                "something may be using it (lspci -vv, nvidia-smi, reading its rom wake it; it suspends after a"
                " few idle seconds): run gpupass doctor again",
            )
        ]
    return [
        Finding(
            "power", FAIL, f"{what}; {'; '.join(c for c, _ in causes)}", "; ".join(dict.fromkeys(f for _, f in causes))
        )
    ]


def check_rom_table(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    """The guest's _ROM SSDT serves the stored vBIOS (the VM does not start without the file)."""
    from . import romtable, vbios

    if not model.acpi_rom or facts.vbios is None:
        return []  # not asked for, or no vBIOS: check_vbios says what to do
    vendor, device = (int(part, 16) for part in model.gpu_function.id.split(":"))
    try:
        rom = vbios.validate(facts.vbios, vendor, device).rom
    except vbios.RomError:
        return []  # check_vbios says what is wrong with it
    aml = paths.ROM_AML
    if facts.rom_aml is None:
        return [
            Finding(
                "rom-table",
                FAIL,
                f"no _ROM SSDT at {aml}: a VM that loads it does not start",
                "sudo gpupass vbios ssdt",
            )
        ]
    if facts.rom_aml != romtable.ssdt(rom):
        return [Finding("rom-table", WARN, f"{aml} does not serve the stored vBIOS", "sudo gpupass vbios ssdt")]
    return [
        Finding(
            "rom-table",
            OK,
            f"_ROM SSDT {aml} serves the vBIOS on the GPU's guest node {guest.gpu_acpi_path()} (proven in emulation,"
            " not yet on a laptop)",
        )
    ]


def check_nvpcf(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    """guest.nvpcf is experimental: said on every run, with what the table offers."""
    if not model.nvpcf:
        return []
    if not facts.nvpcf_aml:
        return [
            Finding(
                "nvpcf",
                FAIL,
                f"no NVPCF SSDT at {paths.NVPCF_AML}: a VM that loads it does not start",
                f"sudo apt install --reinstall {model.package}",
            )
        ]
    g = model.guest
    return [
        Finding(
            "nvpcf",
            WARN,
            f"NVPCF is experimental: the guest gets a static \\_SB.NPCF for Dynamic Boost (TPP offset"
            f" {g.nvpcf_tpp_offset_w} W, TGP offset {g.nvpcf_min_tgp_offset_w} W to {g.nvpcf_max_tgp_offset_w} W,"
            f" {'also' if g.nvpcf_on_battery else 'not'} on battery), proven in emulation, not yet on a laptop",
            "if Windows stops with ACPI_BIOS_ERROR, rebuild with guest.nvpcf = false;"
            " report how it went (README: NVPCF)",
        )
    ]


Check = Callable[[Model, Machine, Facts], list[Finding]]
CHECKS: tuple[Check, ...] = (
    check_cpu,
    check_iommu,
    check_cmdline,
    check_bindings,
    check_initramfs,
    check_group,
    check_vbios,
    check_rom_table,
    check_nvpcf,
    check_ovmf,
    check_libvirt,
    check_apparmor,
    check_vm,
    check_power,
)


def diagnose(model: Model, snapshot: Machine, facts: Facts) -> list[Finding]:
    return [finding for check in CHECKS for finding in check(model, snapshot, facts)]


def exit_status(findings: list[Finding]) -> int:
    statuses = {f.status for f in findings}
    return 1 if FAIL in statuses else 2 if WARN in statuses else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def report(model: Model, findings: list[Finding], as_json: bool = False) -> str:
    if as_json:
        return json.dumps([asdict(f) for f in findings], indent=2) + "\n"
    count = {s: sum(f.status == s for f in findings) for s in (OK, WARN, FAIL)}
    lines = [f"gpupass doctor: {model.name} ({model.package})"]
    lines += [f.line() for f in findings]
    lines.append(f"{count[OK]} ok, {_count(count[WARN], 'warning')}, {_count(count[FAIL], 'failure')}")
    return "\n".join(lines) + "\n"


def cli(
    model: Model,
    root: Path = Path("/"),
    *,
    vm_name: str | None = None,
    uri: str | None = None,
    as_json: bool = False,
    initramfs: Initramfs | None = None,
    libvirt: Libvirt | None = None,
    out: TextIO | None = None,
) -> int:
    """``gpupass doctor``: print one line per check; 0 all ok, 1 a failure, 2 only warnings."""
    snapshot = machine.read(root, rebar=False)  # no Resizable BAR sizes: reading them wakes the dGPU
    facts = gather(model, snapshot, root, vm_name=vm_name, uri=uri, initramfs=initramfs, libvirt=libvirt)
    findings = diagnose(model, snapshot, facts)
    (out or sys.stdout).write(report(model, findings, as_json))
    return exit_status(findings)
