"""doctor's checks of the vBIOS the guest gets: the stored ROM, and the ``_ROM`` table that serves it."""

from __future__ import annotations

from ... import guest, paths
from ...model import Model
from ..machine import Machine
from ..rom import acpi_table
from ..rom.format import RomError, validate
from ..rom.store import origin_path, recorded_origin
from .facts import Facts
from .finding import FAIL, OK, WARN, Finding


def check_vbios(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    rom = paths.VBIOS_ROM
    from_update = "take the GPU's ROM from the laptop's BIOS update: sudo gpupass vbios from-update FILE"
    if facts.vbios_problem:
        return [Finding("vbios", FAIL, facts.vbios_problem, "run gpupass doctor as root")]
    if facts.vbios is None:
        return [Finding("vbios", FAIL, f"no vBIOS at {rom}", f"sudo gpupass vbios extract, or {from_update}")]
    gpu = model.gpu_function
    vendor, device = (int(part, 16) for part in gpu.id.split(":"))
    try:
        report = validate(facts.vbios, vendor, device, source=str(rom))
    except RomError as e:
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
        origin = recorded_origin(facts.vbios, facts.vbios_origin)
        # A record that does not describe this ROM: it was replaced by hand (or a crash came between the two).
        what += f", from {origin}" if origin else f", from an unknown source ({origin_path(rom)} is for another ROM)"
    return [Finding("vbios", OK, what)]


def check_rom_table(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    """The guest's _ROM SSDT serves the stored vBIOS (the VM does not start without the file)."""
    if not model.acpi_rom or facts.vbios is None:
        return []  # not asked for, or no vBIOS: check_vbios says what to do
    vendor, device = (int(part, 16) for part in model.gpu_function.id.split(":"))
    try:
        rom = validate(facts.vbios, vendor, device).rom
    except RomError:
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
    if facts.rom_aml != acpi_table.ssdt(rom):
        return [Finding("rom-table", WARN, f"{aml} does not serve the stored vBIOS", "sudo gpupass vbios ssdt")]
    return [
        Finding(
            "rom-table",
            OK,
            f"_ROM SSDT {aml} serves the vBIOS on the GPU's guest node {guest.gpu_acpi_path()} (proven in emulation,"
            " not yet on a laptop)",
        )
    ]
