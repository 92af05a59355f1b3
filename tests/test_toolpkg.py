"""The gpupass tool package (`gpupass build-tool`), checked by dpkg-deb and lintian, beside a
model package it must give way to."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpupass.packaging import toolpkg

from .conftest import ROOT
from .test_package import dpkg_deb

pytestmark = pytest.mark.tool

DIST = "./usr/lib/python3/dist-packages/"


def listing(deb: Path) -> dict[str, str]:
    """path -> mode string, for every entry of ``deb``."""
    return {line.split()[-1].split(" -> ")[0]: line.split()[0] for line in dpkg_deb("-c", str(deb)).splitlines()}


def fields(deb: Path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in dpkg_deb("-f", str(deb)).splitlines() if not line.startswith(" "))


def test_control_fields(built_tool: Path) -> None:
    control = fields(built_tool)
    assert control["Package"] == "gpupass"
    assert control["Architecture"] == "all"
    assert control["Section"] == "admin"
    # Debian packages only: what building a model's package calls on the laptop.
    assert control["Depends"] == "python3:any (>= 3.11~), " + ", ".join(toolpkg.BUILD_NEEDS)
    assert control["Recommends"] == "libvirt-daemon-system, qemu-system-x86, ovmf, python3-libvirt, swtpm, swtpm-tools"
    # The tool gives way to a model package; it claims nothing of its own.
    assert not {"Provides", "Conflicts", "Replaces", "Pre-Depends"} & control.keys()


def test_model_package_replaces_the_tool(built: Path) -> None:
    control = fields(built / "gpupass-aurora-z.deb")
    for field in ("Provides", "Conflicts", "Replaces"):
        assert control[field] == "gpupass, gpupass-model", field


def test_the_command_is_the_model_packages_and_the_build_side_is_a_source_tree(built_tool: Path, built: Path) -> None:
    tool = listing(built_tool)
    model = listing(built / "gpupass-aurora-z.deb")
    command = {p for p in tool if p.startswith((DIST, "./usr/bin/", "./usr/share/man/"))}
    # The same files as every model package ships (the build side stays out of dist-packages):
    # installing a model package takes each of them over.
    assert command == {p for p in model if p.startswith((DIST, "./usr/bin/", "./usr/share/man/"))}
    assert f"{DIST}gpupass/laptop/onboarding/probe.py" in command
    assert not any("packaging" in p for p in command)
    source = "./usr/share/gpupass/source/"
    for path in ("pkg/gpupass/packaging/debsrc.py", "acpi/", "config-templates/", "debian/rules", "setup.py"):
        assert f"{source}{path}" in tool, path
    assert tool[f"{source}debian/rules"].startswith("-rwxr-xr-x")
    # Nothing under /etc (no conffile to outlive a replacement), no maintainer scripts.
    assert not any(p.startswith("./etc") for p in tool)


def test_no_conffiles_and_only_dh_python3s_scripts(built_tool: Path, tmp_path: Path) -> None:
    """Byte-compiling at install and cleaning at removal (py3compile, py3clean): nothing of the
    tool's own survives its removal when a model package replaces it."""
    subprocess.run(["dpkg-deb", "-e", str(built_tool), str(tmp_path)], check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["control", "md5sums", "postinst", "prerm"]
    assert "py3compile -p gpupass" in (tmp_path / "postinst").read_text()
    assert "py3clean -p gpupass" in (tmp_path / "prerm").read_text()


def test_lintian_reports_no_errors_or_warnings(built_tool: Path) -> None:
    result = subprocess.run(
        ["lintian", "--fail-on", "error,warning", "--suppress-tags", "initial-upload-closes-no-bugs", str(built_tool)],
        capture_output=True,
        text=True,
    )
    errors = [line for line in result.stdout.splitlines() if line.startswith(("E:", "W:"))]
    assert result.returncode == 0 and errors == [], result.stdout + result.stderr


def test_build_tool_leaves_versioned_deb_and_alias(built_tool: Path) -> None:
    names = sorted(p.name for p in built_tool.parent.iterdir())
    assert names == ["gpupass.deb", built_tool.name]
    assert built_tool.name.startswith("gpupass_") and built_tool.name.endswith("_all.deb")
    assert (built_tool.parent / "gpupass.deb").read_bytes() == built_tool.read_bytes()
    assert (ROOT / "tool" / "debian" / "control").is_file()
