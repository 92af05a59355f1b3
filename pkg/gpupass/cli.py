"""The ``gpupass`` command (also ``python -m gpupass``).

Only assembles what each area registers. Laptop steps, run from the installed package: check,
probe and report (laptop/onboarding), doctor (laptop/doctor), vbios (laptop/rom), vm (laptop/vm),
power (laptop/power), gpu (laptop/gpu), mode (laptop/mode). Maintainer steps, run from the source
tree (maintainer.py): models, validate, preview, render, build-deb, build-source, build-all,
publish, ppa (left out of --help where the source tree or the build side's jinja2 is absent).
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__, maintainer
from .errors import GpupassError
from .laptop.doctor import commands as doctor_commands
from .laptop.gpu import commands as gpu_commands
from .laptop.mode import commands as mode_commands
from .laptop.onboarding import commands as onboarding_commands
from .laptop.power import commands as power_commands
from .laptop.rom import commands as rom_commands
from .laptop.vm import commands as vm_commands

# In the order --help lists them: the laptop's, then the maintainer's.
AREAS = (
    onboarding_commands,
    doctor_commands,
    rom_commands,
    vm_commands,
    power_commands,
    gpu_commands,
    mode_commands,
    maintainer,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpupass", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"gpupass {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log every external command")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in AREAS:
        area.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except GpupassError as e:
        if args.debug:
            raise
        for line in e.lines():
            print(f"gpupass: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gpupass: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
