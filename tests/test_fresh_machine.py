"""A new machine: the README's two set-up commands, exactly as written there, in a clean chroot.

CI runs on a developer's machine, where whatever was installed by hand hides a missing line
in tools/install-deps. This test starts from a Debian system with only apt, git and the
host's apt sources and certificate settings, clones the committed checkout into it, and runs
the two commands README.md gives under "Set up a new machine". The second command runs every
test tier again inside (this test skips itself there).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from . import chroot

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[1]
# Set inside the fresh chroot, so that the inner test run does not start another one.
INSIDE = "GPUPASS_FRESH_MACHINE"
# The host's apt sources (the mirror this machine may reach) and its extra CA certificates.
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
HOST_CERTIFICATES = Path("/usr/local/share/ca-certificates")
# The host's settings that point tools at the system's CA bundle (pip, git, curl).
CERTIFICATE_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_CERT", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO")
COMMAND_TIMEOUT = 40 * 60
# Where the fresh machine's user clones the project.
CHECKOUT = "/root/gpupass"


def setup_commands(readme: str) -> list[str]:
    """The indented command lines of README.md's "Set up a new machine" section."""
    section = re.search(r"^## Set up a new machine.*?$(.*?)^## ", readme, re.M | re.S)
    assert section, "README.md has no '## Set up a new machine' section"
    return [line.strip() for line in section.group(1).splitlines() if line.startswith("    ") and line.strip()]


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = setup_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(commands) == 2, commands
    assert commands[0].startswith("tools/install-deps build") and "nox -s build-deb" in commands[0]
    assert commands[1].startswith("tools/install-deps test") and "nox -s" in commands[1]


def make_fresh_system(target: Path) -> None:
    mirror = [str(HOST_SOURCES)] if HOST_SOURCES.exists() else []
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=apt", "--include=git,ca-certificates", chroot.SUITE, str(target), *mirror],
        check=True,
    )
    for certificate in sorted(HOST_CERTIFICATES.glob("*.crt")):
        shutil.copy2(certificate, target / "usr/local/share/ca-certificates" / certificate.name)
    subprocess.run(["chroot", str(target), "update-ca-certificates"], check=True, capture_output=True)
    # The committed checkout, as `git clone` gives it to a new user, where root's own clone
    # lands: in /root, which only root may enter (a test that runs something as another user
    # must hand it a copy it can read).
    (target / "root").chmod(0o700)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target / CHECKOUT.lstrip("/"))], check=True)


# A real machine's / is a mount point with /proc, /dev and /sys (unshare --propagation needs
# the first, the private libvirtd and the chroots of the inner run the others), and a devpts
# of its own (QEMU's serial console opens a pseudo-terminal inside libvirt's namespace, which
# the host's devpts bound in does not give it). All of it lives in a mount namespace of its
# own, gone when the command ends.
IN_MACHINE = """\
set -eu
root=$1; shift
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
mount --bind "$root/dev/pts/ptmx" "$root/dev/ptmx"
exec chroot "$root" "$@"
"""


def run_in_fresh_system(target: Path, command: str, log: Path) -> subprocess.CompletedProcess[bytes]:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        INSIDE: "1",
        # The inner run proves this machine's set-up. The release matrix needs nothing of the
        # machine that the plain chroot tests do not (mmdebstrap brings each release's own
        # tools), and it runs once, outside.
        "GPUPASS_RELEASES": "none",
        # Fewer examples per property: the outer run explores the space, the inner one
        # needs only to run each tier's code on this machine.
        "GPUPASS_HYPOTHESIS_EXAMPLES": "25",
        **{name: os.environ[name] for name in CERTIFICATE_VARIABLES if name in os.environ},
    }
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", IN_MACHINE, "sh", str(target)]
    argv += ["env", "-i", *(f"{k}={v}" for k, v in env.items()), "sh", "-c", f"cd {CHECKOUT} && {command}"]
    with log.open("wb") as out:
        return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT, env=env)


def summary(log: Path, lines: int = 40) -> str:
    """The lines that say what went wrong, then the end of the output."""
    text = log.read_text(errors="replace").splitlines()
    errors = [line for line in text[:-lines] if re.search(r"error:|Unmet|not found|^(FAILED|ERROR) ", line)]
    return "\n".join([*errors[-20:], "...", *text[-lines:]])


def test_readme_setup_commands_pass_on_a_fresh_machine(tmp_path: Path) -> None:
    if os.environ.get(INSIDE):
        pytest.skip("already inside the fresh machine this test made")
    chroot.require_root_tools()
    commands = setup_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    target = tmp_path / "machine"
    make_fresh_system(target)
    for n, command in enumerate(commands, start=1):
        log = tmp_path / f"command-{n}.log"
        result = run_in_fresh_system(target, command, log)
        assert result.returncode == 0, f"`{command}` failed ({result.returncode}):\n{summary(log)}"
    assert (target / CHECKOUT.lstrip("/") / "build/gpupass-aurora-z.deb").is_file()
