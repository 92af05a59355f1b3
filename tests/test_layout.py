"""The two sides: the laptop side (what the installed command runs) imports nothing from the
build side, and nothing beyond the standard library (and libvirt, where the laptop has it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pkg"

# The build side and its dependencies made unimportable; sys.argv[1] is the pkg/ directory.
BLOCKER = """
import importlib, pkgutil, sys
BLOCKED = ("gpupass.packaging", "jinja2", "sh", "stdeb", "lxml", "hypothesis")
class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"the laptop side imported {name}")
        return None
sys.meta_path.insert(0, Block())
sys.path[:0] = [sys.argv[1]]
"""
# Every laptop-side module, imported with the blocker in place.
PROBE = (
    BLOCKER
    + """
import gpupass.laptop
names = ["gpupass.cli", "gpupass.errors", "gpupass.guest", "gpupass.model", "gpupass.modelfiles", "gpupass.paths",
         "gpupass.schema", "gpupass.maintainer"]
names += [m.name for m in pkgutil.walk_packages(gpupass.laptop.__path__, "gpupass.laptop.")]
for name in names:
    importlib.import_module(name)
print(" ".join(sorted(names)))
"""
)


def test_laptop_side_imports_nothing_from_the_build_side() -> None:
    result = subprocess.run([sys.executable, "-I", "-c", PROBE, str(PKG)], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    imported = result.stdout.split()
    laptop = {"preflight", "rom.format", "rom.sources", "rom.store", "rom.bios_update", "rom.acpi_table", "vm.pieces",
              "vm.attach", "vm.define", "vm.xmledit", "vm.libvirtconn", "machine", "onboarding.probe",
              "doctor.diagnose", "gpu.sleep", "power.apply", "power.status", "command"}  # fmt: skip
    assert {f"gpupass.laptop.{name}" for name in laptop} | {"gpupass.cli"} <= set(imported)


def test_the_blocker_catches_a_build_import(tmp_path: Path) -> None:
    """The probe above fails when a laptop module does import the build side."""
    tree = tmp_path / "pkg"
    subprocess.run(["cp", "-r", str(PKG), str(tree)], check=True)
    bad = tree / "gpupass" / "laptop" / "bad.py"
    bad.write_text("from ..packaging import render\n")
    result = subprocess.run([sys.executable, "-I", "-c", PROBE, str(tree)], capture_output=True, text=True, cwd="/")
    assert result.returncode != 0
    assert "ImportError: the laptop side imported gpupass.packaging" in result.stderr


# The installed command's --help: the build side's jinja2 is not there.
HELP = (
    BLOCKER
    + """
from gpupass import cli
cli.main(["--help"])
"""
)


def test_the_installed_commands_help_lists_the_laptops_commands() -> None:
    result = subprocess.run([sys.executable, "-I", "-c", HELP, str(PKG)], capture_output=True, text=True, cwd="/")
    assert (result.returncode, result.stderr) == (0, "")
    listed = re.findall(r"^    ([a-z][a-z-]*)", result.stdout, re.M)
    assert listed == ["check", "probe", "setup", "report", "doctor", "vbios", "vm", "power", "gpu", "mode"]


def test_the_source_trees_help_lists_the_maintainers_commands_after_them() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from gpupass import cli; cli.main(['--help'])"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^    ([a-z][a-z-]*)", result.stdout, re.M)
    assert listed == [
        "check", "probe", "setup", "report", "doctor", "vbios", "vm", "power", "gpu", "mode",
        "models", "validate", "preview", "render", "build-deb", "build-source", "build-tool", "build-all", "publish",
        "ppa",
    ]  # fmt: skip


def test_a_maintainers_command_still_runs_where_help_hides_it() -> None:
    """Hidden from the installed command's help, not taken away: validate runs with jinja2 blocked."""
    validate = (
        BLOCKER
        + """
from gpupass import cli
sys.exit(cli.main(["validate", "aurora-z"]))
"""
    )
    result = subprocess.run([sys.executable, "-I", "-c", validate, str(PKG)], capture_output=True, text=True, cwd="/")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "models/aurora-z.toml: ok (MECHREVO Aurora Z, package gpupass-aurora-z)\n",
        "",
    )
