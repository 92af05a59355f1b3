"""Who holds the dGPU: every process with one of its device nodes open, and what the kernel holds.

Read once into a frozen snapshot, like ``laptop/machine.py`` (``read(model, machine, root)``;
``root`` is ``/`` on a laptop and a fixture tree in the tests). Nothing is written.

A function's nodes are found from its own sysfs entries, by device number: ``drm/*/dev``,
``sound/card*/*/dev``, ``graphics/fb*/dev`` and ``vfio-dev/vfio*/dev`` under the function's
directory (named paths: sysfs has directory symlink loops, a recursive glob never ends), its
IOMMU group's ``/dev/vfio/N``, and for an NVIDIA function every ``/dev/nvidia*``. Card numbers
are not stable (an unbound DRM card comes back as a new minor), so names are never guessed.
A process holds a node when one of its ``/proc/PID/fd`` entries is that device number: the
entry's target may end in `` (deleted)``, and stat() of the entry still gives the open file.
What /proc does not show: the NVIDIA modules' reference counts beyond their dependent modules
(nvidia-drm's fbdev, a CUDA context), and nvidia-persistenced or nvidia-powerd running.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from ...model import Model
from ..machine import PCI_DEVICES, PROCESSES, Machine, entry_names, read_text

NVIDIA_VENDOR = "10de"
# Unloaded in this order by ``modprobe -r`` (users before what they use).
NVIDIA_MODULES = ("nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia")
NVIDIA_DAEMONS = ("nvidia-persistenced", "nvidia-powerd")
MODULES = "sys/module"
DELETED = " (deleted)"
VFIO_PCI_DRIVER_DIR = "sys/bus/pci/drivers/vfio-pci"


@dataclass(frozen=True)
class Node:
    """A device node of one dGPU function, by device number."""

    function: str  # PCI address
    name: str  # where it is found: /dev/dri/card1, /dev/vfio/14 (for reading; the number decides)
    rdev: int


@dataclass(frozen=True)
class Holder:
    """A process with a dGPU function's node open."""

    pid: int
    command: str | None  # /proc/PID/comm
    user: str  # the owner's name, or uid when it has none
    node: str  # the fd's target as /proc shows it, ` (deleted)` included
    function: str

    @property
    def vfio(self) -> bool:
        return self.node.removesuffix(DELETED).startswith("/dev/vfio/")


@dataclass(frozen=True)
class ModuleUse:
    """A loaded NVIDIA module: its reference count and the modules that use it (each counts one)."""

    name: str
    refcnt: int
    holders: tuple[str, ...]

    @property
    def held_by_kernel(self) -> int:
        """References beyond the modules that depend on it: an open file, fbdev, a CUDA context."""
        return max(self.refcnt - len(self.holders), 0)


@dataclass(frozen=True)
class Daemon:
    pid: int
    name: str  # nvidia-persistenced
    user: str


@dataclass(frozen=True)
class Holders:
    nodes: tuple[Node, ...]
    processes: tuple[Holder, ...]  # by pid, then node
    modules: tuple[ModuleUse, ...] = ()  # the loaded NVIDIA modules, in NVIDIA_MODULES order
    daemons: tuple[Daemon, ...] = ()
    unlisted_processes: int = 0  # processes whose open files could not be listed (not root)
    vfio_pci_loaded: bool = False  # the vfio-pci driver is registered

    @property
    def user_holders(self) -> tuple[Holder, ...]:
        return tuple(h for h in self.processes if not h.vfio)

    @property
    def vfio_holders(self) -> tuple[Holder, ...]:
        return tuple(h for h in self.processes if h.vfio)


def _dev_number(path: Path) -> int | None:
    """A sysfs ``dev`` file, MAJOR:MINOR, as a device number."""
    major, _, minor = (read_text(path) or "").partition(":")
    try:
        return os.makedev(int(major), int(minor))
    except ValueError:
        return None


def _char_rdev(path: Path) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_rdev if stat.S_ISCHR(st.st_mode) else None


def function_nodes(root: Path, address: str, group: str | None, nvidia: bool) -> list[Node]:
    directory = root / PCI_DEVICES / address
    found: list[tuple[str, Path]] = []
    for card in entry_names(directory / "drm"):
        found.append((f"/dev/dri/{card}", directory / "drm" / card / "dev"))
    for card in entry_names(directory / "sound", "card"):
        for entry in entry_names(directory / "sound" / card):
            found.append((f"/dev/snd/{entry}", directory / "sound" / card / entry / "dev"))
    for fb in entry_names(directory / "graphics", "fb"):
        found.append((f"/dev/{fb}", directory / "graphics" / fb / "dev"))
    for vfio in entry_names(directory / "vfio-dev", "vfio"):
        found.append((f"/dev/vfio/devices/{vfio}", directory / "vfio-dev" / vfio / "dev"))
    nodes = [Node(address, name, rdev) for name, dev in found if (rdev := _dev_number(dev)) is not None]
    devices = [f"vfio/{group}"] if group else []
    if nvidia:
        devices += [name for name in entry_names(root / "dev", "nvidia")]
    for name in devices:
        if (rdev := _char_rdev(root / "dev" / name)) is not None:
            nodes.append(Node(address, f"/dev/{name}", rdev))
    return nodes


def _users(root: Path) -> dict[int, str]:
    """uid -> name: from ``root``'s /etc/passwd in a fixture tree, from the system's databases on /."""
    names: dict[int, str] = {}
    for line in (read_text(root / "etc/passwd") or "").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            names.setdefault(int(fields[2]), fields[0])
    return names


def _user(uid: int, names: dict[int, str], root: Path) -> str:
    if uid in names:
        return names[uid]
    if root == Path("/"):
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            pass
    return str(uid)


def _shown(target: str, root: Path) -> str:
    """The fd's target as the process sees it (a fixture's links point into the fixture)."""
    prefix = str(root).rstrip("/")
    return target[len(prefix) :] if prefix and target.startswith(prefix + "/") else target


def read(model: Model, machine: Machine, root: Path = Path("/")) -> Holders:
    """Every holder of the model's functions present in ``machine``, under ``root``."""
    by_rdev: dict[int, Node] = {}  # the group's /dev/vfio/N is each function's: named once, by the first
    nvidia = model.gpu_function.vendor == NVIDIA_VENDOR
    for f in model.gpu.functions:
        device = machine.device(f.address)
        if device is not None:
            # /dev/nvidia* are the GPU function's (NVIDIA's driver binds only the GPU).
            for node in function_nodes(root, f.address, device.iommu_group, nvidia and f.role == "gpu"):
                by_rdev.setdefault(node.rdev, node)
    nodes = list(by_rdev.values())
    names = _users(root)
    processes: list[Holder] = []
    daemons: list[Daemon] = []
    unlisted = 0
    for pid in sorted(int(n) for n in entry_names(root / PROCESSES) if n.isdigit()):
        proc = root / PROCESSES / str(pid)
        try:
            uid = os.stat(proc).st_uid
        except OSError:
            continue
        argv0 = (read_text(proc / "cmdline") or "").split("\0")[0]
        if (program := os.path.basename(argv0)) in NVIDIA_DAEMONS:
            daemons.append(Daemon(pid, program, _user(uid, names, root)))
        try:
            fds = os.listdir(proc / "fd")
        except PermissionError:
            unlisted += 1
            continue
        except OSError:
            continue
        held: dict[str, Node] = {}
        for fd in fds:
            try:
                target = os.readlink(proc / "fd" / fd)
            except OSError:
                continue
            if not target.startswith("/"):
                continue  # socket:[…], pipe:[…], anon_inode:…
            rdev = _char_rdev(proc / "fd" / fd)  # the open file itself, deleted or not
            if rdev is not None and rdev in by_rdev:
                held[_shown(target, root)] = by_rdev[rdev]
        if held:
            command = read_text(proc / "comm")
            user = _user(uid, names, root)
            processes += [Holder(pid, command, user, target, held[target].function) for target in sorted(held)]
    modules = []
    if nvidia:
        for name in NVIDIA_MODULES:
            refcnt = read_text(root / MODULES / name / "refcnt")
            if refcnt is not None and refcnt.isdigit():
                modules.append(ModuleUse(name, int(refcnt), tuple(entry_names(root / MODULES / name / "holders"))))
    return Holders(
        nodes=tuple(nodes),
        processes=tuple(processes),
        modules=tuple(modules),
        daemons=tuple(daemons),
        unlisted_processes=unlisted,
        vfio_pci_loaded=(root / VFIO_PCI_DRIVER_DIR).is_dir(),
    )


# What the user reads --------------------------------------------------------------------


def holder_line(h: Holder) -> str:
    return f"pid {h.pid} ({h.command or '?'}, user {h.user}) holds {h.node} of {h.function}"


def module_line(m: ModuleUse) -> str:
    used = f", used by {', '.join(m.holders)}" if m.holders else ""
    return f"module {m.name}: refcnt {m.refcnt}{used}"


def daemon_line(d: Daemon) -> str:
    return f"{d.name} is running (pid {d.pid}, user {d.user})"


def report(h: Holders) -> list[str]:
    """``gpupass gpu holders``: one line per holder, then what the kernel holds."""
    lines = [holder_line(p) for p in h.processes]
    lines += [module_line(m) + (" (held inside the kernel)" if m.held_by_kernel else "") for m in h.modules]
    lines += [daemon_line(d) for d in h.daemons]
    if h.unlisted_processes:
        lines.append(f"{h.unlisted_processes} processes' open files could not be read: run as root to see them all")
    if not h.processes and not any(m.held_by_kernel for m in h.modules) and not h.daemons:
        lines.append("nothing holds the dGPU's functions")
    return lines
