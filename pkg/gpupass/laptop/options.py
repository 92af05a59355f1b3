"""What every area's commands share on the command line: which model, which root, which libvirt."""

from __future__ import annotations

import argparse


def add_command(commands: argparse._SubParsersAction, name: str, func, help: str) -> argparse.ArgumentParser:
    """A ``gpupass NAME`` command listed in --help, run as ``func(args)``."""
    parser = commands.add_parser(name, help=help, description=help)
    parser.set_defaults(func=func)
    return parser


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model id or .toml (default: the installed package's model)")


def add_connect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connect", metavar="URI", help="libvirt URI (default: qemu:///system)")


def add_root(parser: argparse.ArgumentParser, help: str = argparse.SUPPRESS) -> None:
    """--root DIR: read sysfs (and gpupass's files) under DIR, a fixture tree."""
    parser.add_argument("--root", default="/", help=help)
