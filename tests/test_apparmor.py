"""The AppArmor drop-in, read by the real apparmor_parser with this machine's libvirt profiles."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpupass import model
from gpupass.packaging import render

from .conftest import ROOT

pytestmark = pytest.mark.tool

DROP_IN = "abstractions/libvirt-qemu.d/gpupass-aurora-z"
RULES = (
    "/var/lib/gpupass/vbios.rom r,",
    "/usr/share/gpupass/ssdt-battery.aml r,",
    "/dev/shm/looking-glass rw,",  # Looking Glass's shared memory (gpupass vm --looking-glass)
    "/dev/kvmfr0 rw,",  # and the kvmfr module's device
)


@pytest.fixture
def profiles(tmp_path: Path, aurora: model.Model) -> Path:
    """/etc/apparmor.d as libvirt-daemon-system installed it, plus the package's drop-in and a VM profile."""
    if not Path("/etc/apparmor.d/abstractions/libvirt-qemu").exists():
        pytest.fail("libvirt's AppArmor abstraction is missing: apt-get install libvirt-daemon-system apparmor")
    base = tmp_path / "apparmor.d"
    shutil.copytree("/etc/apparmor.d", base, symlinks=True)
    files = render.render_all(aurora)
    drop_in = base / DROP_IN
    drop_in.parent.mkdir(exist_ok=True)
    drop_in.write_bytes(files[f"etc/apparmor.d/{DROP_IN}"])
    # What virt-aa-helper generates for a domain, reduced to the part that matters here.
    (base / "vm").write_text("#include <tunables/global>\nprofile vm {\n  #include <abstractions/libvirt-qemu>\n}\n")
    return base


def expanded(base: Path) -> str:
    result = subprocess.run(
        ["apparmor_parser", "--preprocess", "--Include", str(base), str(base / "vm")],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def notice_line() -> str:
    """The line the postinst tells the user to add, taken from the script itself."""
    script = (ROOT / "debian" / "maintscript-functions.sh").read_text()
    return re.search(r"echo '(include if exists <abstractions/libvirt-qemu\.d>)'", script).group(1)


def test_vm_profile_allows_rom_and_aml(profiles: Path) -> None:
    abstraction = (profiles / "abstractions/libvirt-qemu").read_text()
    if "abstractions/libvirt-qemu.d" not in abstraction:
        # libvirt < 10 (Debian 12): the drop-in is not read until the admin adds the
        # line the postinst prints to their local file.
        assert not any(rule in expanded(profiles) for rule in RULES)
        with open(profiles / "local/abstractions/libvirt-qemu", "a") as local:
            local.write(notice_line() + "\n")
    text = expanded(profiles)
    for rule in RULES:
        assert rule in text
    subprocess.run(
        ["apparmor_parser", "--skip-kernel-load", "--skip-cache", "--Include", str(profiles), str(profiles / "vm")],
        check=True,
        capture_output=True,
    )
