"""The model's own libvirt domain, booted under TCG with a Debian kernel and a busybox initramfs.

What the guest is given comes from Debian's packages: the kernel (and its ac/battery
modules) from ``linux-image-amd64``'s current dependency, fetched with ``apt-get download``
and cached; busybox from busybox-static as installed on this machine. The initramfs is a
cpio archive written here, so no cpio tool is needed.

``smoke_domain`` changes the rendered domain only where a test machine forces it; every
change says why. The firmware (OVMF, without Secure Boot), SMBIOS, features and the
``<qemu:commandline>`` with the package's AML stay as the package ships them.
"""

from __future__ import annotations

import base64
import itertools
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", QEMU_NS)

KERNEL_META_PACKAGE = "linux-image-amd64"
# efivarfs: the firmware's variables (SecureBoot, SetupMode) are read through it. button and
# evdev: the ACPI power button as an input device (test_power_vm's guest). vfio-pci, bochs,
# snd_hda_codec_generic, snd_hda_intel: the display + HDMI-audio pair of test_gpu_vm's guest.
# One module list, so every VM test shares one downloaded kernel; each guest loads only the
# modules it names (``debian_kernel(modules=...)``) and their dependencies.
GUEST_MODULES = ("ac", "battery", "efivarfs", "button", "evdev")
GPU_GUEST_MODULES = ("vfio_pci", "vfio_iommu_type1", "bochs", "snd_hda_codec_generic", "snd_hda_intel")
ALL_GUEST_MODULES = GUEST_MODULES + GPU_GUEST_MODULES
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
BUSYBOX = Path("/bin/busybox")
MARK = "GPUPASS-SMOKE"
# The emulated device that stands at the GPU's guest address: virtio-rng (modern virtio id).
STAND_IN_IDS = "0x1af4:0x1044"

# What every test guest's /init starts with: the kernel's file systems and busybox's applets.
BUSYBOX_INIT = """\
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
"""
# Then: load the guest's modules (dependencies first), saying which failed.
INSMOD = """\
for module in {modules}; do
    insmod "/lib/modules/$module.ko" || echo "{mark} insmod $module failed"
done
"""
# The guest's /init: load the ACPI AC and battery drivers, print what they found and the
# DMI strings, power off. Every line the test reads starts with MARK.
INIT = (
    BUSYBOX_INIT
    + """\
echo "{mark} init started"
for module in {modules}; do
    insmod "/lib/modules/$module.ko" && echo "{mark} insmod $module ok" || echo "{mark} insmod $module failed"
done
# The drivers bind to their ACPI devices as they load; give a slow TCG guest a moment.
i=0
while [ $i -lt 50 ]; do
    types=$(cat /sys/class/power_supply/*/type 2>/dev/null)
    case $types in *Battery*) case $types in *Mains*) break ;; esac ;; esac
    i=$((i + 1))
    sleep 0.2
done
for supply in /sys/class/power_supply/*; do
    for attribute in type present status capacity online; do
        if [ -r "$supply/$attribute" ]; then
            echo "{mark} power_supply ${{supply##*/}} $attribute=$(cat "$supply/$attribute")"
        fi
    done
done
for attribute in sys_vendor product_name; do
    echo "{mark} dmi $attribute=$(cat /sys/class/dmi/id/$attribute)"
done
# What Windows 11's setup checks: UEFI, a TPM 2.0, Secure Boot. An efivars file is 4 bytes of
# attributes, then the value (one byte for these two); its bytes are printed in decimal.
[ -d /sys/firmware/efi ] && echo "{mark} firmware uefi" || echo "{mark} firmware bios"
echo "{mark} tpm tpm_version_major=$(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null || echo none)"
[ -e /sys/firmware/acpi/tables/TPM2 ] && echo "{mark} acpi TPM2=present" || echo "{mark} acpi TPM2=absent"
# gpupass's experimental NPCF device (guest.nvpcf), as the kernel enumerated it from the SSDT.
[ -e /sys/bus/acpi/devices/NVDA0820:00 ] && echo "{mark} acpi NVDA0820=present" || echo "{mark} acpi NVDA0820=absent"
mount -t efivarfs efivarfs /sys/firmware/efi/efivars && echo "{mark} efivarfs mounted"
for name in SecureBoot SetupMode; do
    file=/sys/firmware/efi/efivars/$name-{efi_global}
    if [ -r "$file" ]; then
        echo "{mark} efivar $name=$(od -An -tu1 "$file" | tr -s ' \n' '  ')"
    else
        echo "{mark} efivar $name=absent"
    fi
done
# Each PCI device's ACPI node, as Linux matched it to QEMU's DSDT (none: "-").
for device in /sys/bus/pci/devices/*; do
    node=$(cat "$device/firmware_node/path" 2>/dev/null)
    echo "{mark} pci ${{device##*/}} $(cat "$device/vendor"):$(cat "$device/device") ${{node:--}}"
done
# QEMU's own DSDT, for acpiexec on the test machine; and every ACPI error the kernel logged.
base64 /sys/firmware/acpi/tables/DSDT | sed "s/^/{mark} dsdt /"
dmesg | grep -e "AE_" -e "ACPI BIOS Error" -e "ACPI Error" | sed "s/^/{mark} acpi-error /"
echo "{mark} done"
poweroff -f
"""
)

# The Hyper-V enlightenments QEMU's TCG refuses to start with (see smoke_domain).
TCG_LACKS_HYPERV = ("vpindex", "synic", "stimer", "tlbflush", "ipi")
KERNEL_CMDLINE = "console=ttyS0 panic=0 rdinit=/init"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpupass" / "vm-smoke"


def run(*argv: str, cwd: Path | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr.strip()}")
    return result.stdout


# --- the kernel ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    package: str  # e.g. linux-image-6.1.0-56-amd64 6.1.192-2
    vmlinuz: Path
    modules: tuple[Path, ...]  # to insmod in this order (dependencies first)


def apt_field(package: str, name: str) -> str:
    """A field of the candidate version of a package, as apt-cache sees it."""
    text = run("apt-cache", "show", "--no-all-versions", package)
    match = re.search(rf"^{name}: (.*)$", text, re.MULTILINE)
    if not match:
        raise AssertionError(f"apt-cache show {package}: no {name} field (run apt-get update?)")
    return match.group(1)


def module_depends(ko: bytes) -> list[str]:
    """The ``depends=`` of a kernel module's .modinfo section (what ``modinfo -F depends`` prints)."""
    for entry in ko.split(b"\0"):
        if entry.startswith(b"depends="):
            return [name for name in entry[len(b"depends=") :].decode().split(",") if name]
    return []


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def debian_kernel(cache: Path | None = None, modules: tuple[str, ...] = GUEST_MODULES) -> Kernel:
    """The kernel linux-image-amd64 currently depends on, with ``modules`` and their dependencies.

    Downloaded once per kernel version into the cache, with every module of ALL_GUEST_MODULES
    (one download serves every VM test); only vmlinuz and the modules are kept.
    """
    cache = cache or cache_dir()
    meta_depends = apt_field(KERNEL_META_PACKAGE, "Depends")
    package = re.match(r"(linux-image-[^\s,(]+)", meta_depends)
    if not package:
        raise AssertionError(f"{KERNEL_META_PACKAGE} depends on {meta_depends!r}: no linux-image package")
    name = package.group(1)
    version = apt_field(name, "Version")
    dest = cache / f"{name}_{version}"
    order_file = dest / "modules.order"
    cached = set(order_file.read_text().split()) if order_file.is_file() else set()
    if not {m.replace("-", "_") for m in (*ALL_GUEST_MODULES, *modules)} <= cached:
        for stale in [*cache.glob("linux-image-*"), *cache.glob("download-*")]:
            shutil.rmtree(stale)
        dest.mkdir(parents=True)
        with tempfile.TemporaryDirectory(prefix="download-", dir=cache) as tmp:
            run("apt-get", "download", "-q", f"{name}={version}", cwd=Path(tmp))
            (deb,) = Path(tmp).glob("*.deb")
            tree = Path(tmp) / "tree"
            run("dpkg-deb", "-x", str(deb), str(tree))
            (vmlinuz,) = (tree / "boot").glob("vmlinuz-*")
            shutil.copy(vmlinuz, dest / "vmlinuz")
            found = {
                re.sub(r"\.ko(\.xz)?$", "", p.name).replace("-", "_"): p for p in (tree / "lib/modules").rglob("*.ko*")
            }
            order: list[str] = []

            def add(module: str) -> None:
                module = module.replace("-", "_")
                if module in order:
                    return
                if module not in found:
                    raise AssertionError(f"{name}: no module {module}.ko (built in, or renamed?)")
                data = read_module(found[module])
                for dependency in module_depends(data):
                    add(dependency)
                (dest / f"{module}.ko").write_bytes(data)
                order.append(module)

            for module in (*ALL_GUEST_MODULES, *modules):
                add(module)
        order_file.write_text("\n".join(order) + "\n")
    # The cached modules in load order, keeping ``modules`` and what they depend on.
    wanted: set[str] = set()

    def need(module: str) -> None:
        if module not in wanted:
            wanted.add(module)
            for dependency in module_depends((dest / f"{module}.ko").read_bytes()):
                need(dependency.replace("-", "_"))

    for module in modules:
        need(module.replace("-", "_"))
    order = [m for m in order_file.read_text().split() if m in wanted]
    return Kernel(f"{name} {version}", dest / "vmlinuz", tuple(dest / f"{m}.ko" for m in order))


# --- the initramfs ------------------------------------------------------------------------


def cpio_newc(entries: list[tuple[str, int, bytes, int]], mtimes: dict[str, int] | None = None) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks: (path, mode, data, rdev) each.

    ``mtimes``: a path's modification time, where it matters (the kernel keeps it: Python
    checks a cached .pyc against its source's)."""
    out = bytearray()
    mtimes = mtimes or {}

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (path, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], start=1):
        name = path.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, mtimes.get(path, 0), len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(name), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + name)
        pad()
        out.extend(data)
        pad()
    return bytes(out)


def initramfs(kernel: Kernel, init: str = INIT, mark: str = MARK) -> bytes:
    """busybox, the kernel's modules and ``init`` (its {mark}, {modules} and {efi_global} filled in)."""
    modules = " ".join(p.stem for p in kernel.modules)
    directory, executable, regular, chardev = 0o040755, 0o100755, 0o100644, 0o020600
    entries = [
        ("bin", directory, b"", 0),
        ("dev", directory, b"", 0),
        ("dev/console", chardev, b"", (5 << 8) | 1),
        ("lib", directory, b"", 0),
        ("lib/modules", directory, b"", 0),
        ("proc", directory, b"", 0),
        ("sys", directory, b"", 0),
        ("bin/busybox", executable, BUSYBOX.read_bytes(), 0),
        ("init", executable, init.format(mark=mark, modules=modules, efi_global=EFI_GLOBAL).encode(), 0),
    ]
    entries += [(f"lib/modules/{p.name}", regular, p.read_bytes(), 0) for p in kernel.modules]
    return cpio_newc(entries)


# --- the domain ---------------------------------------------------------------------------


def guest_memory_mib(wanted: int, meminfo: str | None = None, overcommit: str | None = None) -> int:
    """The model's guest memory if this host lets QEMU map it, else 1 GiB.

    The guest touches only a few hundred MiB, so the mapping's size does not matter, but
    Linux refuses a mapping larger than RAM + swap (the default overcommit heuristic) or
    than what is left of the commit limit (strict overcommit).
    """
    meminfo = meminfo if meminfo is not None else Path("/proc/meminfo").read_text()
    overcommit = overcommit if overcommit is not None else Path("/proc/sys/vm/overcommit_memory").read_text()
    kib = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in meminfo.splitlines() if ":" in line)}
    limit = {
        "0": kib["MemTotal"] + kib["SwapTotal"],
        "1": None,
        "2": kib["CommitLimit"] - kib["Committed_AS"],
    }[overcommit.strip()]
    return wanted if limit is None or wanted * 1024 <= limit else 1024


def smoke_domain(
    product_xml: bytes,
    *,
    kernel: Path,
    initrd: Path,
    tables: dict[str, Path],
    serial_log: Path,
    memory_mib: int,
) -> bytes:
    """The product's domain with only what this machine cannot provide changed."""
    root = ET.fromstring(product_xml)
    devices = root.find("devices")
    os_ = root.find("os")
    assert devices is not None and os_ is not None

    # No usable KVM on a test machine (a container, a CI VM without nested virtualisation):
    # QEMU's TCG emulates the CPU instead, the same on every machine. The Hyper-V features
    # and the hidden KVM signature stay: TCG takes them all.
    root.set("type", "qemu")
    # The pins name the laptop's performance CPUs (0-7): libvirt cannot set an affinity to
    # CPUs a smaller machine lacks ("cannot set CPU affinity on process N: Invalid argument").
    for cputune in root.findall("cputune"):
        root.remove(cputune)
    # One vCPU: eight emulated ones (a host thread each under TCG) would only slow the boot
    # on a 2-core test machine.
    root.find("vcpu").text = "1"
    # Only where the host could not map the model's memory at all (see guest_memory_mib).
    for tag in ("memory", "currentMemory"):
        element = root.find(tag)
        assert element.get("unit") == "MiB", ET.tostring(element)
        if int(element.text) != memory_mib:
            element.text = str(memory_mib)
    # QEMU 7.2's TCG cannot give a guest the Hyper-V VP index ("kernel doesn't allow setting
    # HyperV VP_INDEX", the KVM path), so neither what needs it: synic, stimer, tlbflush, ipi.
    # libvirt 9.0 turns each into its hv- flag all the same (tests/test_vm.py, domxml-to-native).
    hyperv = root.find("features/hyperv")
    for name in TCG_LACKS_HYPERV:
        for element in hyperv.findall(name):
            hyperv.remove(element)
    # host-passthrough needs a hardware accelerator for -cpu host (libvirt: "CPU mode
    # 'host-passthrough' for x86_64 qemu domain on x86_64 host is not supported by
    # hypervisor"); "maximum" (-cpu max) is TCG's closest equivalent: every feature it emulates.
    cpu = root.find("cpu")
    cpu.set("mode", "maximum")
    cpu.find("topology").attrib.update(sockets="1", dies="1", cores="1", threads="1")
    # The GPU and its audio function are the laptop's, bound to vfio-pci there ("host doesn't
    # support passthrough of host PCI devices"); the Windows disk image and libvirt's
    # "default" network do not exist on a test machine.
    gpu_address = devices.find("hostdev/address[@type='pci']")
    for tag in ("hostdev", "disk", "interface"):
        for element in devices.findall(tag):
            devices.remove(element)
    # An emulated device (virtio-rng, vendor 1af4) stands at the GPU's guest address, so the
    # guest shows the ACPI node QEMU gives that slot.
    if gpu_address is not None:
        rng = ET.SubElement(devices, "rng", model="virtio")
        ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
        rng.append(gpu_address)
    # The subsystem-id overrides name those hostdevs by alias: with the hostdevs gone there is
    # nothing for them to apply to.
    for override in root.findall(f"{{{QEMU_NS}}}override"):
        root.remove(override)
    # Direct kernel boot: OVMF loads the kernel and initramfs from fw_cfg.
    for tag, text in (("kernel", str(kernel)), ("initrd", str(initrd)), ("cmdline", KERNEL_CMDLINE)):
        ET.SubElement(os_, tag).text = text
    # The guest's console, to a file the test reads.
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(serial_log))
    ET.SubElement(serial, "target", port="0")
    # The package's ACPI tables, at the paths where this test wrote them (not yet installed):
    # the battery SSDT and, for an NVIDIA model, the _ROM SSDT written on the laptop.
    args = list(root.iter(f"{{{QEMU_NS}}}arg"))
    found = [value for option, value in itertools.pairwise(args) if option.get("value") == "-acpitable"]
    assert sorted(v.get("value") for v in found) == sorted(f"file={t}" for t in tables), "unexpected -acpitable"
    for value in found:
        value.set("value", f"file={tables[value.get('value').removeprefix('file=')]}")
    ET.indent(root, "  ")
    return ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"


# --- what the guest printed ---------------------------------------------------------------


@dataclass(frozen=True)
class GuestReport:
    power_supply: dict[str, dict[str, str]]  # name -> attribute -> value
    dmi: dict[str, str]
    lines: tuple[str, ...]
    # What Windows 11's checks look at: "firmware" (uefi/bios), "tpm tpm_version_major",
    # "acpi TPM2", "efivar SecureBoot", "efivar SetupMode".
    platform: dict[str, str] = field(default_factory=dict)
    pci: dict[str, tuple[str, str]] = field(default_factory=dict)  # address -> (vendor:device, ACPI path)
    dsdt: bytes = b""
    acpi_errors: tuple[str, ...] = ()

    def supply_of_type(self, kind: str) -> dict[str, str]:
        found = [attrs for attrs in self.power_supply.values() if attrs.get("type") == kind]
        printed = "\n".join(self.lines)
        assert len(found) == 1, f"expected one power supply of type {kind}; the guest printed:\n{printed}"
        return found[0]


def parse_report(serial: str) -> GuestReport:
    supply: dict[str, dict[str, str]] = {}
    dmi: dict[str, str] = {}
    platform: dict[str, str] = {}
    pci: dict[str, tuple[str, str]] = {}
    dsdt: list[str] = []
    errors: list[str] = []
    lines = []
    for line in serial.splitlines():
        line = line.strip("\r")
        if not line.startswith(MARK + " "):
            continue
        words = line[len(MARK) + 1 :].split(" ", 2)
        if words[0] == "dsdt":
            dsdt.append(words[1])
            continue  # not worth printing
        lines.append(line)
        if words[0] == "pci" and len(words) == 3:
            ids, _, path = words[2].partition(" ")
            pci[words[1]] = (ids, path)
        elif words[0] == "acpi-error":
            errors.append(line[len(MARK) + len(" acpi-error ") :])
        elif words[0] == "power_supply" and len(words) == 3:
            key, _, value = words[2].partition("=")
            supply.setdefault(words[1], {})[key] = value
        elif words[0] == "dmi" and len(words) >= 2:
            key, _, value = " ".join(words[1:]).partition("=")
            dmi[key] = value
        elif words[0] in ("firmware", "tpm", "acpi", "efivar") and len(words) >= 2:
            key, _, value = " ".join(words[1:]).partition("=")
            if words[0] == "efivar" and value != "absent":
                value = " ".join(value.split()[4:])  # the value after the 4 attribute bytes
            platform[f"{words[0]} {key}" if value else words[0]] = value or key
    return GuestReport(supply, dmi, tuple(lines), platform, pci, base64.b64decode("".join(dsdt)), tuple(errors))
