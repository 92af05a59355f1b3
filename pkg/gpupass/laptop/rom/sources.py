"""Where ``gpupass vbios extract`` finds the GPU's vBIOS on the laptop, in order: the ROM BAR,
the copy the kernel's EFI stub kept of what the firmware handed it, nouveau's copy; and the
user's own file (``gpupass vbios import``).

Reading the ROM BAR may need the GPU unbound from its driver; it is bound back whatever
happens (errors, Ctrl-C, SIGTERM), because an unbound GPU stays unusable until the next boot.
Standard library only.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import copies
from .format import RomError, RomReport, check_file, parse_id, validate
from .store import Installed, install, present_rom, sigterm_raises

IMPORT_HINT = (
    "many Optimus laptops do not expose the vBIOS through the ROM BAR; take the GPU's ROM from"
    " the laptop maker's BIOS update with: gpupass vbios from-update FILE, or install a ROM file"
    " you have with: gpupass vbios import FILE"
)


class NothingHere(RomError):
    """One source of ``extract`` gave no valid ROM (the next one is tried); one line, why."""


# Reading the ROM BAR ------------------------------------------------------------------


class SysfsDevice:
    """One PCI device under a sysfs root.

    Every access to a sysfs file goes through ``read`` and ``write``: the kernel answers
    there in ways a regular file cannot (EIO on the rom file, binding on a bind write), so
    tests play the kernel's part by overriding these two methods.
    """

    def __init__(self, address: str, sysfs_root: Path) -> None:
        self.address = address
        self.path = sysfs_root / "bus/pci/devices" / address
        self.drivers = sysfs_root / "bus/pci/drivers"
        self.rom = self.path / "rom"

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def write(self, path: Path, text: str) -> None:
        with open(path, "w") as file:
            file.write(text)

    def driver(self) -> str | None:
        """The bound driver's name, from the ``driver`` symlink the kernel keeps."""
        link = self.path / "driver"
        return Path(os.readlink(link)).name if link.is_symlink() else None

    def pci_id(self) -> str:
        vendor, device = (int(self.read(self.path / name).decode().strip(), 16) for name in ("vendor", "device"))
        return f"{vendor:04x}:{device:04x}"


def read_rom_bar(device: SysfsDevice) -> bytes:
    """Read the ROM BAR; if that fails while a driver holds the GPU, unbind, retry, bind back."""
    driver = device.driver()
    try:
        return _read_enabled(device)
    except OSError as e:
        if driver is None:
            raise _unreadable(device, e, "no driver was bound") from None
    with _unbound(device, driver):
        try:
            return _read_enabled(device)
        except OSError as e:
            raise _unreadable(device, e, f"also after unbinding it from {driver}") from None


def _read_enabled(device: SysfsDevice) -> bytes:
    """The rom file reads only while enabled; it is disabled again whatever the read does."""
    _write(device, device.rom, "1", "enable the ROM BAR of")
    try:
        return device.read(device.rom)
    finally:
        _write(device, device.rom, "0", "disable the ROM BAR of")


@contextmanager
def _unbound(device: SysfsDevice, driver: str) -> Iterator[None]:
    """Unbind ``driver`` for the duration and bind it back whatever happens.

    Binding back looks at the ``driver`` symlink instead of assuming the unbind happened: an
    unbind that failed (the GPU still bound) is not followed by a bind that would fail too.
    """
    try:
        _write(device, device.drivers / driver / "unbind", device.address, f"unbind {driver} from")
        yield
    finally:
        if device.driver() != driver:
            _write(
                device,
                device.drivers / driver / "bind",
                device.address,
                f"bind {driver} back to",
                hint=f"the GPU is unbound: run 'echo {device.address} > /sys/bus/pci/drivers/{driver}/bind' or reboot",
            )


def _write(device: SysfsDevice, path: Path, text: str, action: str, hint: str | None = None) -> None:
    try:
        device.write(path, text)
    except OSError as e:
        raise RomError(f"cannot {action} {device.address}: {e.strerror}", hint=hint) from None


def _unreadable(device: SysfsDevice, error: OSError, context: str) -> RomError:
    return NothingHere(f"cannot read the ROM BAR of {device.address}: {error.strerror} ({context})")


def _check_device(device: SysfsDevice, expected_id: str) -> None:
    """Refuse before touching anything if the address is not the GPU: unbinding the wrong
    device (say, the NVMe disk) would take the host down."""
    hint = "check gpu.functions[0].address in the model against 'lspci -Dnn'"
    if not device.path.exists():
        raise NothingHere(f"no PCI device {device.address} (expected the GPU {expected_id} there; {hint})")
    found = device.pci_id()
    if found != expected_id:
        raise NothingHere(f"{device.address} is {found}, not the GPU {expected_id}; not touching it ({hint})")
    if not device.rom.exists():
        raise NothingHere(f"{device.address} has no ROM BAR ({device.rom} is missing)")


# The sources of extract -----------------------------------------------------------------

EFI_STUB = "EFI stub's copy"
NOUVEAU = "nouveau's copy"
# struct pci_setup_rom, arch/x86/include/asm/setup_data.h (asm/pci.h in older kernels), which
# drivers/firmware/efi/libstub/x86-stub.c (preserve_pci_rom_image) fills for every PCI device
# whose option ROM the firmware handed over, as setup_data of type SETUP_PCI:
#   struct setup_data data;      header: u64 next, u32 type, u32 len (sysfs "data" starts after it)
#   uint16_t vendor, devid;      offsets 0, 2
#   uint64_t pcilen;             offset 8 (aligned: 4 bytes of padding before it)
#   unsigned long segment, bus, device, function;   offsets 16-40, 8 bytes each on x86_64
#   uint8_t romdata[];           offset 48, pcilen bytes
# arch/x86/kernel/ksysfs.c shows each entry as /sys/kernel/boot_params/setup_data/N/{type,data}.
PCI_SETUP_ROM = struct.Struct("<HH4xQQQQQ")


def _one_line(error: RomError) -> str:
    """A source's problems as the one line ``extract`` reports for it."""
    return "; ".join(error.problems)


def _from_rom_bar(address: str, expected_id: str, root: Path) -> tuple[RomReport, str]:
    device = SysfsDevice(address, root / "sys")
    _check_device(device, expected_id)
    data = read_rom_bar(device)
    source = f"ROM BAR of {address}"
    if not data:
        raise NothingHere(f"{source}: read 0 bytes (the firmware put no image there)")
    try:
        return validate(data, *parse_id(expected_id), source=source), source
    except RomError as e:
        raise NothingHere(_one_line(e)) from None


def _address_parts(address: str) -> tuple[int, int, int, int]:
    """0000:01:00.0 -> (segment, bus, device, function)."""
    segment, bus, rest = address.split(":")
    device, function = rest.split(".")
    return int(segment, 16), int(bus, 16), int(device, 16), int(function, 16)


def _from_setup_data(address: str, expected_id: str, root: Path) -> tuple[RomReport, str]:
    entries = copies.setup_data(root)
    where = f"/{copies.SETUP_DATA}"
    if entries is None:
        raise NothingHere(
            f"{EFI_STUB}: no {where} (the kernel got no setup_data: not started through its EFI stub,"
            " or handed nothing)"
        )
    vendor, device = parse_id(expected_id)
    roms = [e for e in entries if e.type == copies.SETUP_PCI]
    unreadable = [f"{where}/{e.number}: {e.problem}" for e in entries if e.problem]
    if not roms:
        found = f"none of its {len(entries)} entries is" if entries else "it holds no entry, so none is"
        extra = f" ({'; '.join(unreadable)})" if unreadable else ""
        raise NothingHere(f"{EFI_STUB}: {where}: {found} a PCI option ROM (type 0x3){extra}")
    others = []
    for entry in roms:
        name = f"{where}/{entry.number}/data"
        if entry.data is None:
            others.append(f"setup_data/{entry.number} unreadable ({entry.problem})")
            continue
        if len(entry.data) < PCI_SETUP_ROM.size:
            raise NothingHere(
                f"{EFI_STUB}: {name}: {len(entry.data)} bytes, shorter than the {PCI_SETUP_ROM.size}-byte"
                " pci_setup_rom header"
            )
        rom_vendor, rom_device, length, *location = PCI_SETUP_ROM.unpack_from(entry.data)
        at = "{:04x}:{:02x}:{:02x}.{:x}".format(*location)
        if (rom_vendor, rom_device) != (vendor, device) or tuple(location) != _address_parts(address):
            others.append(f"{rom_vendor:04x}:{rom_device:04x} at {at}")
            continue
        rom = entry.data[PCI_SETUP_ROM.size :]
        if length > len(rom):
            raise NothingHere(f"{EFI_STUB}: {name}: pcilen says {length} bytes of ROM, only {len(rom)} follow")
        source = f"{EFI_STUB} ({where}/{entry.number})"
        try:
            return validate(rom[:length], vendor, device, source=source), source
        except RomError as e:
            raise NothingHere(_one_line(e)) from None
    raise NothingHere(
        f"{EFI_STUB}: {where} holds option ROMs of {', '.join(others)} only, none of the GPU {expected_id} at {address}"
    )


def _from_nouveau(address: str, expected_id: str, root: Path) -> tuple[RomReport, str]:
    device = SysfsDevice(address, root / "sys")
    if not device.path.exists():
        raise NothingHere(f"{NOUVEAU}: no PCI device {address}")
    driver = device.driver()
    if driver != "nouveau":
        bound = f"bound to {driver}" if driver else "bound to no driver"
        raise NothingHere(f"{NOUVEAU}: the GPU is {bound}, not nouveau (gpupass binds no driver to get a ROM)")
    devices = copies.dri_debugfs(root)
    if devices is None:
        raise NothingHere(f"{NOUVEAU}: no /{copies.DRI_DEBUGFS} (debugfs is not mounted, or this is not root)")
    match = next((d for d in devices if d.address == address), None)
    if match is None:
        raise NothingHere(f"{NOUVEAU}: no DRM device in /{copies.DRI_DEBUGFS} is {address}")
    path = f"{match.path}/vbios.rom"
    try:
        data = copies.read_bytes(root, path)
    except OSError as e:
        raise NothingHere(f"{NOUVEAU}: cannot read {path}: {e.strerror}") from None
    try:
        return validate(data, *parse_id(expected_id), source=path), f"{NOUVEAU} ({path})"
    except RomError as e:
        raise NothingHere(_one_line(e)) from None


SOURCES = (_from_rom_bar, _from_setup_data, _from_nouveau)


def extract(pci_address: str, expected_id: str, dest: Path, root: Path = Path("/")) -> Installed:
    """Store the GPU's vBIOS at ``dest`` from the first source that gives a valid one (the ROM
    BAR, the EFI stub's copy, nouveau's copy), unless a valid one is there already."""
    vendor, device_id = parse_id(expected_id)
    present = present_rom(dest, vendor, device_id)
    if present is not None:
        return Installed(dest, present, written=False)
    tried: list[str] = []
    with sigterm_raises():
        for source in SOURCES:
            try:
                report, origin = source(pci_address, expected_id, root)
            except NothingHere as e:
                tried.append(_one_line(e))
                continue
            return install(report, dest, origin, tuple(tried))
    raise RomError(tried, hint=IMPORT_HINT)


def import_rom(src: Path, expected_id: str, dest: Path) -> Installed:
    """Install a ROM the user supplies (e.g. from a BIOS update) at ``dest``, after the same checks."""
    report = check_file(src, expected_id)
    present = present_rom(dest, *parse_id(expected_id))
    if present is not None and present.rom == report.rom:
        return Installed(dest, present, written=False)
    return install(report, dest, f"gpupass vbios import {src}")
