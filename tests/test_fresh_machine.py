"""A new machine: the README's two set-up commands, exactly as written there, in a clean chroot.

CI runs on a developer's machine, where whatever was installed by hand hides a missing line
in tools/install-deps. This test starts from a Debian system with only apt, git and the
host's apt sources and certificate settings, clones the committed checkout into it, and runs
the two commands README.md gives under "Set up a new machine". The second command's test run
inside is limited to what a fresh machine can break, a missing dependency: one representative
test per tier (conftest.ONE_PER_TIER, by GPUPASS_ONE_PER_TIER), not a second full run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from . import chroot
from .conftest import ONE_PER_TIER, ONE_PER_TIER_VARIABLE

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


def test_each_tiers_representative_is_a_test_of_that_tier() -> None:
    """The inner run stops at a representative it cannot find (conftest); this names it before
    a fresh machine is made: a file with a function of that name, marked for its tier."""
    for tier, nodeid in ONE_PER_TIER.items():
        path, _, name = nodeid.partition("::")
        source = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {re.escape(name.split('[')[0])}\(", source, re.M), nodeid
        marks = re.findall(r"^pytestmark = pytest\.mark\.(\w+)$", source, re.M)
        assert marks == ([] if tier == "unit" else [tier]), (tier, nodeid)


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


def run_in_fresh_system(target: Path, command: str, log: Path) -> subprocess.Popen[bytes]:
    """``command`` started in the machine, in a process group of its own (FreshMachine.stop ends it all)."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        INSIDE: "1",
        # The inner run proves this machine's set-up, not the code (the outer run does): one
        # test per tier, each running its tier's external tools.
        ONE_PER_TIER_VARIABLE: "1",
        **{name: os.environ[name] for name in CERTIFICATE_VARIABLES if name in os.environ},
    }
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", IN_MACHINE, "sh", str(target)]
    argv += ["env", "-i", *(f"{k}={v}" for k, v in env.items()), "sh", "-c", f"cd {CHECKOUT} && {command}"]
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def summary(log: Path, lines: int = 40) -> str:
    """The lines that say what went wrong, then the end of the output."""
    text = log.read_text(errors="replace").splitlines()
    errors = [line for line in text[:-lines] if re.search(r"error:|Unmet|not found|^(FAILED|ERROR) ", line)]
    return "\n".join([*errors[-20:], "...", *text[-lines:]])


class FreshMachine:
    """README's set-up commands in a fresh machine, run in a thread of their own.

    Most of their time is spent waiting on the mirror, PyPI and dpkg, so conftest starts them
    as soon as the session has collected this module's test (``start_if_selected``): they run
    beside the other tiers, and the test only waits for them and checks what they did."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.target = workdir / "machine"
        self.results: list[tuple[str, Path, int]] = []  # command, its log, its exit status
        self.error: BaseException | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="fresh-machine", daemon=True)

    def _run(self) -> None:
        try:
            commands = setup_commands((ROOT / "README.md").read_text(encoding="utf-8"))
            make_fresh_system(self.target)
            for n, command in enumerate(commands, start=1):
                if self.stopped:
                    return
                log = self.workdir / f"command-{n}.log"
                self.process = run_in_fresh_system(self.target, command, log)
                try:
                    returncode = self.process.wait(COMMAND_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.kill()
                    raise
                self.results.append((command, log, returncode))
                if returncode:
                    break
        except BaseException as error:  # shown by the test
            self.error = error

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """End what still runs (the session ends without the test having waited for it)."""
        self.stopped = True
        self.kill()
        self.thread.join()

    def start(self) -> FreshMachine:
        self.thread.start()
        return self

    def check(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert len(self.results) == 2, self.results
        for command, log, returncode in self.results:
            assert returncode == 0, f"`{command}` failed ({returncode}):\n{summary(log)}"
        assert (self.target / CHECKOUT.lstrip("/") / "build/gpupass-aurora-z.deb").is_file()


TEST_NAME = "test_readme_setup_commands_pass_on_a_fresh_machine"
STARTED: dict[str, FreshMachine] = {}


def start_if_selected(session: pytest.Session) -> None:
    """Start the fresh machine at the end of collection when its test is to run (conftest)."""
    selected = any(item.path == Path(__file__) and item.name == TEST_NAME for item in session.items)
    if session.config.option.collectonly or not selected:
        return
    if not os.environ.get(INSIDE) and os.geteuid() == 0 and shutil.which("mmdebstrap"):
        # tmp_path_factory's directory (kept, like a test's tmp_path, for the logs).
        workdir = session.config._tmp_path_factory.mktemp("fresh-machine")
        STARTED["machine"] = FreshMachine(workdir).start()


def stop_unchecked() -> None:
    """At the session's end (conftest): a machine the test did not wait for (-x, Ctrl-C) is stopped."""
    machine = STARTED.pop("machine", None)
    if machine is not None:
        machine.stop()


def test_readme_setup_commands_pass_on_a_fresh_machine(tmp_path: Path) -> None:
    if os.environ.get(INSIDE):
        pytest.skip("already inside the fresh machine this test made")
    chroot.require_root_tools()
    machine = STARTED.pop("machine", None) or FreshMachine(tmp_path).start()
    machine.check()
