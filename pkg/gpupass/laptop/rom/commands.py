"""``gpupass vbios``: the GPU's vBIOS for the guest (extract | check | import | from-update | ssdt).

Standard library only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ... import paths
from ...model import Model
from ...modelfiles import chosen_model
from .. import options


def register(commands: argparse._SubParsersAction) -> None:
    parser = options.add_command(
        commands, "vbios", run, "the GPU's vBIOS for the guest: extract | check | import | from-update | ssdt"
    )
    options.add_model(parser)
    parser.add_argument(
        "vbios_args", nargs=argparse.REMAINDER, metavar="extract | check | import | from-update | ssdt ..."
    )


def run(args: argparse.Namespace) -> int:
    return cli(args.vbios_args, chosen_model(args.model))


def cli(argv: list[str], model: Model) -> int:
    """``gpupass vbios extract | check FILE | import FILE | from-update FILE | ssdt`` for the model's GPU.

    Prints the report and returns 0; every failure is raised as a GpupassError for the
    caller to print (argparse itself exits 2 on misuse).
    """
    parser = argparse.ArgumentParser(prog="gpupass vbios", description="The GPU's vBIOS for the guest.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def storing(name: str, help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help)
        command.add_argument(
            "--out",
            type=Path,
            default=paths.VBIOS_ROM,
            metavar="FILE",
            help=f"store it here (default: {paths.VBIOS_ROM})",
        )
        return command

    extract_parser = storing("extract", "read the vBIOS from the GPU's ROM BAR, the EFI stub's copy or nouveau's")
    extract_parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    commands.add_parser("check", help="validate a ROM file against the GPU").add_argument("file", type=Path)
    storing("import", "validate a ROM file and install it").add_argument("file", type=Path)
    storing("from-update", "find the GPU's ROM in the laptop maker's BIOS update and install it").add_argument(
        "file", type=Path
    )
    ssdt_parser = commands.add_parser("ssdt", help="write the guest SSDT whose ACPI _ROM serves the vBIOS")
    ssdt_parser.add_argument(
        "--rom", type=Path, default=paths.VBIOS_ROM, help=f"the vBIOS (default: {paths.VBIOS_ROM})"
    )
    ssdt_parser.add_argument(
        "--out", type=Path, default=paths.ROM_AML, help=f"the SSDT to write (default: {paths.ROM_AML})"
    )
    args = parser.parse_args(argv)
    # Imported here, not above: every gpupass command registers this one, few run it.
    from ... import guest
    from . import acpi_table, bios_update
    from .format import check_file
    from .sources import extract, import_rom
    from .store import store

    gpu = model.gpu.functions[0]
    if args.command == "extract":
        lines = extract(gpu.address, gpu.id, args.out, args.root).lines()
    elif args.command == "check":
        lines = check_file(args.file, gpu.id).describe()
    elif args.command == "import":
        lines = import_rom(args.file, gpu.id, args.out).lines()
    elif args.command == "from-update":
        lines = bios_update.from_update(args.file, gpu.id, args.out).lines()
    else:
        rom = check_file(args.rom, gpu.id).rom
        store(acpi_table.ssdt(rom), args.out)
        lines = [f"{args.out}: written: _ROM on {guest.gpu_acpi_path()} serves the {len(rom)} bytes of {args.rom}"]
        if not model.acpi_rom:
            lines.append(
                f"note: {model.package}'s VM does not load it (guest.acpi_rom is off, or the GPU is not NVIDIA)"
            )
    print("\n".join(lines))
    return 0
