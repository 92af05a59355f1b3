"""What ``gpupass doctor`` reads besides the machine snapshot, gathered once: the vBIOS file,
modules.builtin, the initramfs listing, the OVMF and AppArmor files, libvirt's view of the VM.
The tests hand in the initramfs listing and libvirt's answers as data.

Standard library only; libvirt is reached through libvirtconn, other programs through command.run.
"""

from __future__ import annotations

import grp
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ... import paths
from ...errors import GpupassError
from ...model import Model
from ...paths import under
from .. import command
from ..gpu import holders, switch
from ..gpu.drivers import REBUILD_INITRAMFS
from ..machine import Machine
from ..mode import state
from ..rom.store import origin_path
from ..vm import libvirtconn

# Listers of an initramfs image: (program, the Debian package that has it).
INITRAMFS_LISTERS = (("lsinitramfs", "initramfs-tools-core"), ("lsinitrd", "dracut"))
# As debian/maintscript-functions.sh decides whether libvirt's AppArmor abstraction reads the drop-in.
APPARMOR_ABSTRACTION = "/etc/apparmor.d/abstractions/libvirt-qemu"
APPARMOR_LOCAL = "/etc/apparmor.d/local/abstractions/libvirt-qemu"
APPARMOR_INCLUDE = re.compile(r"^[ \t]*#?include[ \t]*(if exists[ \t]*)?<abstractions/libvirt-qemu\.d>", re.MULTILINE)
APPARMOR_LINE = "include if exists <abstractions/libvirt-qemu.d>"


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
class SharedFile:
    """Looking Glass's shared memory file or kvmfr device, as the client will find it."""

    kind: str  # "file", "char" (a character device), "other"
    size: int
    mode: int  # permission bits
    group: str  # the group's name, or its number when it has none


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
    # Looking Glass's /dev/shm/looking-glass and /dev/kvmfr0, those that exist (laptop path -> state).
    shared_files: dict[str, SharedFile] = field(default_factory=dict)
    mode: str = "boot"  # the installed package's mode (gpupass mode), else the model's
    mode_problem: str = ""  # the mode's state file cannot be understood
    # In on-demand mode, what claim would refuse for now (gpupass gpu claim's decision); None: not asked.
    claim_refusals: tuple[str, ...] | None = None


# Gathering ----------------------------------------------------------------------------


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def shared_file(path: Path) -> SharedFile | None:
    try:
        info = path.stat()
    except OSError:
        return None
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    kind = "file" if stat.S_ISREG(info.st_mode) else "char" if stat.S_ISCHR(info.st_mode) else "other"
    return SharedFile(kind, info.st_size, info.st_mode & 0o7777, group)


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
        if command.find(program) is None:
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
        shared_files={
            str(p): state
            for p in (paths.LOOKING_GLASS_SHM, paths.KVMFR_DEVICE)
            if (state := shared_file(under(root, p))) is not None
        },
        **_mode_facts(model, snapshot, root),
    )


def _mode_facts(model: Model, snapshot: Machine, root: Path) -> dict:
    """The mode, and in on-demand mode what claim would refuse for now (its own decision)."""
    try:
        mode = state.current(model, root)
    except GpupassError as e:
        return {"mode": model.mode, "mode_problem": e.lines()[0]}
    if mode != "on-demand":
        return {"mode": mode}
    decision = switch.decide(switch.CLAIM, model, snapshot, holders.read(model, snapshot, root))
    return {"mode": mode, "claim_refusals": decision.refusals}
