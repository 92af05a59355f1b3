"""The passthrough pieces of a libvirt domain, and what a domain lacks of them.

``gpupass vm attach`` (attach.py) adds to an existing domain exactly what passthrough needs
and leaves the rest as it was; ``gpupass vm detach`` takes out exactly that; ``gpupass vm
define`` (define.py) defines the package's own domain with the user's disk. Each *piece* is one function of
(editor, context) that finds-or-creates its elements through ``xmledit``: run on a scratch
copy it says what is missing (``missing_pieces``, for ``gpupass doctor``), run for real it
makes the change and journals it in the domain's ``<metadata>``.

Standard library only; libvirt itself is reached through ``libvirtconn`` (laptop side).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ... import guest, paths
from ...errors import GpupassError
from ...model import SECURE_BOOT_LOADER, Model, PciFunction
from . import looking_glass, xmledit
from .looking_glass import LookingGlass
from .xmledit import Editor, quote

# libvirt 11.2 reads <os><acpi><table type="raw">, and virt-aa-helper then lets QEMU read
# the file; older releases take the table only as a QEMU argument (-acpitable).
NATIVE_ACPI_TABLE_VERSION = 11_002_000
PORT_ALIAS = guest.PORT_ALIAS
PORT_PATH = f"devices/controller[@type='pci'][@model='pcie-root-port'][alias/@name='{PORT_ALIAS}']"
MMIO_OPTION = "opt/ovmf/X-PciMmio64Mb"
SMBIOS_FIELDS = ("manufacturer", "product", "version", "family")


@dataclass(frozen=True)
class Context:
    """What a piece needs besides the model: facts about the libvirt host."""

    model: Model
    native_acpi_table: bool = False
    host_cpus: tuple[int, ...] = ()  # empty: unknown, no emulator pinning
    vbios: str = str(paths.VBIOS_ROM)
    aml: str = str(paths.INSTALLED_AML)
    rom_aml: str = str(paths.ROM_AML)
    nvpcf_aml: str = str(paths.NVPCF_AML)
    looking_glass: LookingGlass | None = None  # --looking-glass: its shared memory and SPICE input
    notices: list[str] = field(default_factory=list)


def cpuset(cpus: Iterable[int]) -> str:
    """CPUs as libvirt writes a cpuset (0-3,8), so a second attach finds it unchanged."""
    ordered = sorted(set(cpus))
    runs: list[list[int]] = []
    for cpu in ordered:
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def vcpu_pins(model: Model, vcpus: int) -> tuple[int, ...]:
    """The host CPU of each of the domain's vCPUs: the performance CPUs, in the model's order."""
    available = model.cpu.performance_cpus
    if vcpus > len(available):
        raise GpupassError(
            f"the domain has {vcpus} vCPUs, the model has {len(available)} performance CPUs"
            f" ({cpuset(available)}) to pin them to",
            hint=f"give the domain at most {len(available)} vCPUs (virsh setvcpus NAME {len(available)}"
            " --config --maximum), then attach again",
        )
    return available[:vcpus]


def emulator_cpus(model: Model, vcpus: int, host_cpus: Iterable[int]) -> tuple[int, ...]:
    """Where QEMU's own threads go: the host's CPUs the vCPUs do not use (hybrid Intel: the E-cores)."""
    used = set(vcpu_pins(model, vcpus))
    return tuple(sorted(set(host_cpus) - used))


def domain_vcpus(root: ET.Element) -> int:
    vcpu = root.find("vcpu")
    return int(vcpu.text.strip()) if vcpu is not None and vcpu.text else 1


# The pieces ---------------------------------------------------------------------------


def hostdev_path(function: PciFunction) -> str:
    domain, bus, slot, fn = function.pci_parts
    source = "source/address/@"
    return (
        "devices/hostdev[@mode='subsystem'][@type='pci']"
        f"[{source}domain='0x{domain:04x}'][{source}bus='0x{bus:02x}']"
        f"[{source}slot='0x{slot:02x}'][{source}function='0x{fn:x}']"
    )


def _guest_bus(editor: Editor, ctx: Context) -> int:
    """The guest bus for the functions' one slot: gpupass's own pcie-root-port (by alias).

    The port stands at a fixed guest address with hotplug off, so the GPU's guest ACPI node
    is the one ``guest.gpu_acpi_path`` names (an SSDT's ``_ROM`` goes there) and QEMU puts
    no hotplug methods on it. A user's device already at that address is refused, not moved.
    """
    root = editor.root
    controllers = root.findall("devices/controller[@type='pci']")
    layout = guest.PORT
    port = xmledit.find(root, PORT_PATH)
    for element in root.iterfind("devices/*"):
        address = element.find("address[@type='pci']")
        if element is port or address is None:
            continue
        if (int(address.get("bus", "0"), 16), int(address.get("slot", "0"), 16)) == (0, layout.port_slot):
            what = element.tag + (f" {element.get('model')}" if element.get("model") else "")
            raise GpupassError(
                f"the domain's {what} sits at guest PCI address 00:{layout.port_slot:02x},"
                " where gpupass puts the GPU's root port",
                hint="move it (remove its <address> and libvirt picks another), then attach again",
            )
    if port is None:
        index = max((int(c.get("index", "0")) for c in controllers), default=0) + 1
        port = editor.ensure(
            PORT_PATH,
            before=("filesystem", "interface", "smartcard", "serial", "console", "channel", "input", "graphics"),
        )
        port.set("index", str(index))
    target_path = f"{PORT_PATH}/target"
    editor.set(editor.ensure(target_path), target_path, "hotplug", "off")
    address_path = f"{PORT_PATH}/address[@type='pci']"
    address = editor.ensure(address_path)
    wanted = {"domain": "0x0000", "bus": "0x00", "slot": f"0x{layout.port_slot:02x}"}
    wanted["function"] = f"0x{layout.port_function:x}"
    for attr, value in wanted.items():
        editor.set(address, address_path, attr, value)
    return int(port.get("index", "0"))


def piece_hostdevs(editor: Editor, ctx: Context) -> None:
    bus = _guest_bus(editor, ctx)
    for number, function in enumerate(ctx.model.gpu.functions):
        path = hostdev_path(function)
        hostdev = editor.ensure(path, before=("redirdev", "watchdog", "memballoon", "rng", "panic"))
        editor.set(hostdev, path, "managed", "yes")
        if function.role == "gpu":
            rom = editor.ensure(f"{path}/rom")
            editor.set(rom, f"{path}/rom", "bar", "on")
            editor.set(rom, f"{path}/rom", "file", ctx.vbios)
        if function.subsystem_id:
            name = editor.ensure(f"{path}/alias")
            editor.set(name, f"{path}/alias", "name", function.alias)
        address_path = f"{path}/address[@type='pci']"
        address = editor.ensure(address_path)
        wanted = {"domain": "0x0000", "bus": f"0x{bus:02x}", "slot": "0x00", "function": f"0x{number:x}"}
        for attr, value in wanted.items():
            editor.set(address, address_path, attr, value)
        editor.set(address, address_path, "multifunction", "on" if number == 0 else None)


def piece_subsystem_ids(editor: Editor, ctx: Context) -> None:
    for function in ctx.model.gpu.functions:
        if not function.subsystem_id:
            continue
        vendor, _, device = function.subsystem_id.partition(":")
        device_path = f"qemu:override/qemu:device[@alias='{function.alias}']/qemu:frontend"
        for name, value in (("x-pci-sub-vendor-id", vendor), ("x-pci-sub-device-id", device)):
            path = f"{device_path}/qemu:property[@name='{name}']"
            prop = editor.ensure(path)
            editor.set(prop, path, "type", "unsigned")
            # Decimal: libvirt (9.0 at least) refuses value='0x1d05' for type='unsigned'
            # ("invalid value '0x1d05' of 'value' attribute of 'qemu:property'").
            editor.set(prop, path, "value", str(int(value, 16)))


def piece_mmio_window(editor: Editor, ctx: Context) -> None:
    value = f"{MMIO_OPTION},string={ctx.model.gpu.mmio64_mb}"
    for arg in editor.root.iterfind("qemu:commandline/qemu:arg", xmledit.NAMESPACES):
        if arg.get("value", "").startswith(MMIO_OPTION + ",") and arg.get("value") != value:
            # The user's own window, made the model's size. The journal finds the argument
            # by the value it will have when undone, the new one.
            editor.set(arg, f"qemu:commandline/qemu:arg[@value='{quote(value)}']", "value", value)
            return
    editor.add_pair("qemu:commandline", "qemu:arg", "-fw_cfg", value)


def acpi_table_paths(file: str) -> tuple[str, str]:
    return f"os/acpi/table[@type='raw'][.='{quote(file)}']", f"file={file}"


def _acpi_table(editor: Editor, ctx: Context, file: str, native_allowed: bool = True) -> None:
    """An SSDT for the guest: libvirt's own element where it has one, else QEMU's -acpitable."""
    native, argument = acpi_table_paths(file)
    commandline = editor.root.find("qemu:commandline", xmledit.NAMESPACES)
    if xmledit.find(editor.root, native) is not None:
        return
    if commandline is not None and editor.find_pair(commandline, "qemu:arg", "-acpitable", argument) is not None:
        return
    if ctx.native_acpi_table and native_allowed:
        editor.ensure("os/acpi", container=True, before=("boot", "bootmenu", "smbios", "bios"))
        editor.ensure(native)
    else:
        editor.add_pair("qemu:commandline", "qemu:arg", "-acpitable", argument)


def piece_battery_table(editor: Editor, ctx: Context) -> None:
    _acpi_table(editor, ctx, ctx.aml)


def piece_rom_table(editor: Editor, ctx: Context) -> None:
    """The SSDT whose _ROM on the GPU's guest node serves the stored vBIOS (guest.acpi_rom).

    Not for a q35 machine type older than 6.1: there QEMU before 8.0 describes no device
    behind a root port (ACPI bridge hotplug off), the table's Scope would not resolve, and an
    SSDT that fails to load can stop Windows with ACPI_BIOS_ERROR.

    Always a QEMU -acpitable argument: libvirt takes each <acpi><table> type once, and the
    one "raw" table is the battery's (the package's AppArmor drop-in lets QEMU read this file).
    """
    if not ctx.model.acpi_rom:
        return
    machine = editor.root.find("os/type")
    version = re.fullmatch(r"pc-q35-(\d+)\.(\d+)", machine.get("machine", "") if machine is not None else "")
    if version and (int(version.group(1)), int(version.group(2))) < guest.FIRST_Q35_WITH_BRIDGE_NODES:
        ctx.notices.append(
            f"the vBIOS _ROM table is left out: machine type {version.group(0)} may have no ACPI node for the GPU"
            " (QEMU before 8.0 describes devices behind a root port from pc-q35-6.1 on)"
        )
        return
    _acpi_table(editor, ctx, ctx.rom_aml, native_allowed=False)


def piece_nvpcf_table(editor: Editor, ctx: Context) -> None:
    """The experimental NVPCF SSDT (guest.nvpcf): \\_SB.NPCF needs no node of QEMU's, so no
    machine type is left out. A -acpitable argument, as the _ROM table (one raw table in libvirt)."""
    if ctx.model.nvpcf:
        _acpi_table(editor, ctx, ctx.nvpcf_aml, native_allowed=False)


def piece_smbios(editor: Editor, ctx: Context) -> None:
    editor.ensure("sysinfo[@type='smbios']", container=True, before=("bootloader", "os"))
    for name in SMBIOS_FIELDS:
        path = f"sysinfo[@type='smbios']/system/entry[@name='{name}']"
        editor.set_text(editor.ensure(path), path, getattr(ctx.model.smbios, name))
    smbios = editor.ensure("os/smbios")
    editor.set(smbios, "os/smbios", "mode", "sysinfo")


def secure_boot(root: ET.Element) -> str:
    """Why the domain boots a Secure Boot firmware, or '' if it does not."""
    os_ = root.find("os")
    if os_ is None:
        return ""
    loader = os_.find("loader")
    nvram = os_.find("nvram")
    if loader is not None and loader.get("secure") == "yes":
        return f"its loader has secure='yes' ({(loader.text or '').strip() or 'no file'})"
    if loader is not None and SECURE_BOOT_LOADER.search(loader.text or ""):
        return f"its loader {(loader.text or '').strip()} is a Secure Boot build"
    if nvram is not None and SECURE_BOOT_LOADER.search(nvram.get("template", "")):
        return f"its NVRAM template {nvram.get('template')} enrolls Secure Boot keys"
    if os_.get("firmware") == "efi":
        for feature in os_.iterfind("firmware/feature"):
            if feature.get("name") == "secure-boot":
                return "" if feature.get("enabled") == "no" else "firmware autoselection asks for secure-boot"
        # Without a secure-boot feature, libvirt takes the first matching firmware
        # descriptor, and Debian's and Ubuntu's first one is Secure Boot with Microsoft's keys.
        return "firmware autoselection may pick a Secure Boot firmware (it did not exclude secure-boot)"
    return ""


def piece_firmware(editor: Editor, ctx: Context) -> None:
    why = secure_boot(editor.root)
    if not why:
        return
    vm = ctx.model.vm
    editor.set(editor.ensure("os", container=True), "os", "firmware", None)
    editor.remove("os/firmware")
    loader = editor.ensure("os/loader", before=("nvram", "boot", "smbios"))
    for attr, value in (("readonly", "yes"), ("secure", "no"), ("type", "pflash")):
        editor.set(loader, "os/loader", attr, value)
    editor.set_text(loader, "os/loader", vm.ovmf_code)
    nvram = editor.ensure("os/nvram", before=("boot", "smbios"))
    editor.set(nvram, "os/nvram", "template", vm.ovmf_vars)
    ctx.notices.append(
        f"Secure Boot firmware switched to {vm.ovmf_code}: {why}, and Secure Boot refuses the guest's"
        " unsigned NVIDIA kernel module"
    )


def piece_hidden_kvm(editor: Editor, ctx: Context) -> None:
    for tag in ("acpi", "apic"):
        editor.ensure(f"features/{tag}")
    hidden = editor.ensure("features/kvm/hidden")
    editor.set(hidden, "features/kvm/hidden", "state", "on")


def piece_hyperv_vendor_id(editor: Editor, ctx: Context) -> None:
    path = "features/hyperv/vendor_id"
    vendor = editor.ensure(path)
    editor.set(vendor, path, "state", "on")
    editor.set(vendor, path, "value", ctx.model.vm.hyperv_vendor_id)


# The Hyper-V enlightenments current virt-manager (virtinst/domain/features.py,
# _set_hyperv_defaults) gives a Windows guest, and hv-reset, as (element, attributes,
# child elements with their state), in libvirt's order (libvirt writes them so after a
# define; the order here only keeps attach's diff readable). The vendor id has its own
# piece. evmcs and avic, which virt-manager adds on some hosts, are left out (DESIGN.md says why).
HYPERV_ORDER = (
    "relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "stimer", "reset", "vendor_id",
    "frequencies", "reenlightenment", "tlbflush", "ipi", "evmcs", "avic",
)  # fmt: skip
HYPERV_ENLIGHTENMENTS: tuple[tuple[str, dict[str, str], tuple[str, ...]], ...] = (
    ("relaxed", {}, ()),
    ("vapic", {}, ()),
    ("spinlocks", {"retries": "8191"}, ()),
    ("vpindex", {}, ()),
    ("runtime", {}, ()),
    ("synic", {}, ()),
    ("stimer", {}, ("direct",)),
    ("reset", {}, ()),
    ("frequencies", {}, ()),
    ("tlbflush", {}, ()),
    ("ipi", {}, ()),
)


def piece_hyperv_enlightenments(editor: Editor, ctx: Context) -> None:
    """Each enlightenment the domain lacks, switched on; one the user set (on or off) stays.

    ``<hyperv mode="passthrough">`` gives the guest every enlightenment the host has: left
    as it is. stimer needs the Hyper-V clock (hv-time), libvirt's hypervclock timer.
    """
    hyperv = editor.root.find("features/hyperv")
    if hyperv is not None and hyperv.get("mode") == "passthrough":
        return
    for name, attrs, children in HYPERV_ENLIGHTENMENTS:
        path = f"features/hyperv/{name}"
        if xmledit.find(editor.root, path) is not None:
            continue
        later = HYPERV_ORDER[HYPERV_ORDER.index(name) + 1 :]
        element = editor.ensure(path, before=later)
        element.set("state", "on")
        for attr, value in attrs.items():
            element.set(attr, value)
        for child in children:
            ET.SubElement(element, child, state="on")
    if xmledit.find(editor.root, "clock/timer[@name='hypervclock']") is None:
        editor.ensure("clock", container=True, before=("on_poweroff", "on_reboot", "on_crash", "pm", "perf", "devices"))
        timer = editor.ensure("clock/timer[@name='hypervclock']")
        timer.set("present", "yes")


def piece_vcpu_pinning(editor: Editor, ctx: Context) -> None:
    editor.ensure("cputune", container=True, before=("numatune", "resource", "sysinfo", "bootloader", "os"))
    for vcpu, cpu in enumerate(vcpu_pins(ctx.model, domain_vcpus(editor.root))):
        path = f"cputune/vcpupin[@vcpu='{vcpu}']"
        editor.set(editor.ensure(path, before=("emulatorpin",)), path, "cpuset", str(cpu))


def piece_emulator_pinning(editor: Editor, ctx: Context) -> None:
    cpus = emulator_cpus(ctx.model, domain_vcpus(editor.root), ctx.host_cpus)
    if not cpus:
        return  # the host has no CPU the vCPUs leave free (or it is unknown): QEMU floats
    pin = editor.ensure("cputune/emulatorpin")
    editor.set(pin, "cputune/emulatorpin", "cpuset", cpuset(cpus))


def piece_looking_glass(editor: Editor, ctx: Context) -> None:
    if ctx.looking_glass is not None:
        looking_glass.apply(editor, ctx.looking_glass, ctx.notices)


Piece = Callable[[Editor, Context], None]
# (name in messages, function), in the order attach applies them.
FIRMWARE_PIECE = "firmware without Secure Boot"
HYPERV_PIECE = "Hyper-V enlightenments"  # speed, not correctness: doctor only warns
PIECES: tuple[tuple[str, Piece], ...] = (
    ("hostdevs (one multifunction guest slot, vBIOS rom)", piece_hostdevs),
    ("PCI subsystem ids", piece_subsystem_ids),
    ("64-bit MMIO window", piece_mmio_window),
    ("battery table", piece_battery_table),
    ("vBIOS _ROM table", piece_rom_table),
    ("NVPCF table (experimental)", piece_nvpcf_table),
    ("SMBIOS sysinfo", piece_smbios),
    (FIRMWARE_PIECE, piece_firmware),
    ("hidden KVM", piece_hidden_kvm),
    ("Hyper-V vendor id", piece_hyperv_vendor_id),
    (HYPERV_PIECE, piece_hyperv_enlightenments),
    ("vCPU pinning to performance CPUs", piece_vcpu_pinning),
    ("emulator pinning to the other CPUs", piece_emulator_pinning),
    ("Looking Glass (with --looking-glass)", piece_looking_glass),
)


def apply(root: ET.Element, ctx: Context) -> Editor:
    editor = Editor(root, owner=ctx.model.package)
    for _name, piece in PIECES:
        piece(editor, ctx)
    return editor


def missing_pieces(domain_xml: str, model: Model, host_cpus: Iterable[int] = ()) -> list[str]:
    """One line per passthrough piece the domain lacks or has wrong; [] when all are there.

    Each piece is run on a scratch copy; what it would change is what is missing. The
    battery table counts in either form (native element or QEMU argument); emulator
    pinning is checked only when ``host_cpus`` is given.
    """
    return [f"{name}: {what}" for name, what in missing(domain_xml, model, host_cpus)]


def missing(domain_xml: str, model: Model, host_cpus: Iterable[int] = ()) -> list[tuple[str, str]]:
    """``missing_pieces`` as (piece name, what it lacks) pairs."""
    found = []
    for name, piece in PIECES:
        ctx = Context(model, host_cpus=tuple(host_cpus))
        editor = Editor(xmledit.parse(domain_xml), owner=model.package)
        try:
            piece(editor, ctx)
        except GpupassError as e:
            found.append((name, "; ".join(e.problems)))
            continue
        if editor.changes:
            found.append((name, _readable("; ".join(editor.changes), model)))
    return found


def _readable(text: str, model: Model) -> str:
    """Paths in words where they are long: a hostdev by its host address."""
    for function in model.gpu.functions:
        text = text.replace(hostdev_path(function), f"hostdev {function.address}")
    return text.replace(PORT_PATH, "a pcie-root-port for them")
