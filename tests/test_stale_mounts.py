"""What a killed session leaves mounted in its chroots is unmounted when the next one starts
(chroot.release_stale_mounts, from conftest's pytest_configure), and a live session's mounts
are left alone: pytest's clean-up of old session directories would otherwise delete through a
bind mount of /dev into the host's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import chroot

pytestmark = pytest.mark.install


def mounted(path: Path) -> bool:
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return any(line.split()[1] == str(path) for line in f)


def session(base: Path, name: str, pid: int | None) -> Path:
    """A pytest-N directory with a chroot whose /dev and /dev/shm are mounted (tmpfs, as a
    stand-in for the bind mount), its .lock naming ``pid`` (none: a session that ended)."""
    top = base / name
    dev = top / "boot0/debian12/dev"
    dev.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(dev)], check=True)
    (dev / "shm").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(dev / "shm")], check=True)
    if pid is not None:
        (top / ".lock").write_text(str(pid))
    return dev


def test_a_dead_session_s_mounts_go_and_a_live_one_s_stay(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    gone = subprocess.Popen([sys.executable, "-c", ""])  # a process that has ended
    gone.wait()
    dead = session(tmp_path, "pytest-1", gone.pid)
    ended = session(tmp_path, "pytest-2", None)
    live = session(tmp_path, "pytest-3", os.getpid())
    try:
        released = chroot.release_stale_mounts(tmp_path)
        assert sorted(released) == sorted(str(p) for p in (dead, dead / "shm", ended, ended / "shm"))
        assert not any(mounted(p) for p in (dead, dead / "shm", ended, ended / "shm"))
        assert mounted(live) and mounted(live / "shm")
    finally:
        for path in (live / "shm", live, dead / "shm", dead, ended / "shm", ended):
            subprocess.run(["umount", "--lazy", str(path)], capture_output=True)
