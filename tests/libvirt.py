"""A private libvirtd (with its virtlogd) for the tool and VM tiers.

The daemons run as this test session's own processes, in a mount and PID namespace of their
own (``unshare --mount --pid``) where /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt,
/var/log/libvirt and /run/libvirt are scratch directories. So a system libvirtd, a stale
daemon from an earlier run, or another session's daemon cannot clash with this one (pid
files, sockets, domain definitions, NVRAM), and nothing outlives the test process: no
daemon, no QEMU, no state on the host. The client socket lives outside the namespace, so
plain ``virsh -c <uri>`` reaches it.

libvirtd runs privileged (as root), as it does for ``qemu:///system`` on a laptop; where
its QEMU driver is set up differently from Debian's defaults, ``QEMU_CONF`` says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Where a privileged libvirtd keeps its state; each is replaced inside the namespace.
PRIVATE_DIRS = {
    "etc": "/etc/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
    "run": "/run/libvirt",
    # QEMU's shared memory files (Looking Glass's /dev/shm/looking-glass): the test reads and
    # writes the guest's memory there, and no other process on the machine sees it.
    "shm": "/dev/shm",
}

LIBVIRTD_CONF = """\
unix_sock_dir = "{sock_dir}"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

VIRTLOGD_CONF = """\
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
"""

QEMU_CONF = """\
# QEMU runs as root, not libvirt-qemu: the guest's kernel, initramfs and AML live in the
# test's scratch directories (under /tmp/pytest-of-root and ~/.cache, both mode 0700).
user = "root"
group = "root"
# No AppArmor profile per guest: virt-aa-helper only allows the files named in the domain
# XML, and the -acpitable AML passed through <qemu:commandline> is at a scratch path (the
# package's own AppArmor rule is for /usr/share/gpupass/ssdt-battery.aml).
security_driver = "none"
# No cgroups for the guest. libvirtd would hand the guest to systemd-machined over D-Bus by
# its pid, but pids in this PID namespace name other processes on the host, so START hides
# D-Bus; without machined, libvirt would make a /machine cgroup of its own on the host and
# leave it there. (The tests check what the guest sees, not its resource limits.)
cgroup_controllers = [ ]
# No private /dev (mount namespace) per guest. The fresh-machine test runs this daemon inside
# a chroot, and libvirt's helpers that enter a guest's mount namespace (setns) land at that
# namespace's root, outside the chroot: there they found neither the guest's disk nor the
# swtpm socket, and QEMU found no /dev/urandom for the virtio-rng backend. QEMU then uses
# the daemon's own /dev, as it does wherever libvirt was built without namespace support.
namespaces = [ ]
"""

# The daemons start in the namespace: mount the scratch directories over libvirt's own,
# start virtlogd (it forks once it is ready), then libvirtd. This shell stays as the PID
# namespace's init: it reaps what libvirt leaves to init (QEMU is double-forked), and when
# it dies the kernel kills everything left in the namespace, QEMU included.
START = """\
set -eu
scratch=$1
shift
for pair in "$@"; do
    mkdir -p "${pair#*:}"
    mount --bind "$scratch/${pair%%:*}" "${pair#*:}"
done
# No system bus in here (see cgroup_controllers in qemu.conf).
unset DBUS_SYSTEM_BUS_ADDRESS
if [ -d /run/dbus ]; then
    mount -t tmpfs -o size=64k,mode=0755 no-dbus /run/dbus
fi
virtlogd --daemon --pid-file /run/libvirt/virtlogd.pid --config /etc/libvirt/virtlogd.conf
libvirtd --pid-file /run/libvirt/libvirtd.pid --config /etc/libvirt/libvirtd.conf
"""
# The namespace goes when this test process does, even if it is killed outright: setpriv
# has unshare SIGKILLed then (unshare blocks SIGTERM while it waits), and --kill-child
# passes that on as SIGKILL to the namespace's init.
NAMESPACE = (
    "setpriv", "--pdeathsig", "KILL",
    "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "--kill-child",
)  # fmt: skip

START_TIMEOUT = 60
# What the daemons need, and the Debian package that has it (tools/install-deps test).
PROGRAMS = {
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "virsh": "libvirt-clients",
    "qemu-system-x86_64": "qemu-system-x86",
}


def require_daemon_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("a private libvirtd needs root (mount namespace, privileged qemu driver)")
    for program, package in PROGRAMS.items():
        if not shutil.which(program):
            pytest.fail(f"{program} not found: apt-get install {package}")


@dataclass
class Daemon:
    """libvirtd and virtlogd in namespaces of their own, all state under ``scratch``."""

    scratch: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def sock_dir(self) -> Path:
        return self.scratch / "sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.sock_dir / 'libvirt-sock'}"

    def path(self, inside: str) -> Path:
        """Where a path of the namespace's libvirt directories is, seen from outside."""
        for name, target in PRIVATE_DIRS.items():
            if inside == target or inside.startswith(target + "/"):
                return self.scratch / name / inside[len(target) :].lstrip("/")
        raise ValueError(f"{inside} is not under one of libvirt's private directories")

    def virsh(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["virsh", "--quiet", "-c", self.uri, *args], capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode:
            raise AssertionError(
                f"virsh {' '.join(args)} failed ({result.returncode}):\n{result.stderr.strip()}\n{self.log_tail()}"
            )
        return result

    def log_tail(self, lines: int = 30) -> str:
        found = []
        for name in ("libvirtd.log", "virtlogd.log"):
            log = self.scratch / "log" / name
            if log.is_file() and log.stat().st_size:
                text = log.read_text(errors="replace").splitlines()[-lines:]
                found.append(f"--- {name} (last lines)\n" + "\n".join(text))
        return "\n".join(found)

    def start(self) -> None:
        require_daemon_tools()
        if len(str(self.sock_dir / "libvirt-admin-sock")) >= 108:
            pytest.fail(f"{self.sock_dir}: too long for a unix socket path; use a shorter --basetemp")
        for name in (*PRIVATE_DIRS, "sock"):
            (self.scratch / name).mkdir(parents=True, exist_ok=True)
        (self.scratch / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF.format(sock_dir=self.sock_dir))
        (self.scratch / "etc" / "virtlogd.conf").write_text(VIRTLOGD_CONF)
        (self.scratch / "etc" / "qemu.conf").write_text(QEMU_CONF)
        mounts = [f"{name}:{target}" for name, target in PRIVATE_DIRS.items()]
        with (self.scratch / "daemon.out").open("wb") as output:
            self.process = subprocess.Popen(
                [*NAMESPACE, "sh", "-c", START, "sh", str(self.scratch), *mounts],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest must not kill the daemon before teardown
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                output = (self.scratch / "daemon.out").read_text(errors="replace")
                pytest.fail(f"libvirtd exited with status {self.process.returncode}:\n{output}\n{self.log_tail()}")
            probe = subprocess.run(["virsh", "-c", self.uri, "version"], capture_output=True, text=True)
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"libvirtd did not answer within {START_TIMEOUT} s:\n{probe.stderr}\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Destroy and undefine every domain, then end the namespace: both daemons with it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            for name in self.virsh("list", "--all", "--name", check=False).stdout.split():
                self.virsh("destroy", name, check=False)
                self.virsh("undefine", "--nvram", name, check=False)
            # Nothing in the namespace needs a clean exit: its state is all scratch.
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session", name="libvirtd")
def libvirtd_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A private libvirtd for the whole session (import this into a test module to use it)."""
    with Daemon(tmp_path_factory.mktemp("libvirtd")) as daemon:
        yield daemon
