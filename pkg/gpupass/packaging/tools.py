"""The one wrapper through which gpupass runs every external tool.

It logs the exact command line, captures output, and turns failures into messages a
user can act on: a missing tool names the Debian package that provides it; a failing
tool shows its exit status and what it printed on stderr.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ToolError

log = logging.getLogger("gpupass")

# Which Debian package provides each tool gpupass runs.
PROVIDERS = {
    "iasl": "acpica-tools",
    "dpkg-buildpackage": "dpkg-dev",
    "dpkg-source": "dpkg-dev",
    "dpkg-genchanges": "dpkg-dev",
    "dpkg-deb": "dpkg",
    "dpkg-query": "dpkg",
    "lintian": "lintian",
    "virsh": "libvirt-clients",
    "mmdebstrap": "mmdebstrap",
    "git": "git",
    "systemd-analyze": "systemd",
    "reprepro": "reprepro",
    "gpg": "gnupg",
    "dput": "dput",
    "debsign": "devscripts",
}


@dataclass(frozen=True)
class Result:
    stdout: str
    stderr: str


def run(
    tool: str,
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    what: str | None = None,
) -> Result:
    """Run ``tool args...``; raise ToolError on a missing tool or a non-zero exit.

    ``what`` names the step for the error message (e.g. "compiling the battery SSDT").
    ``env`` is added to the current environment, never replaces it.
    """
    argv = [str(a) for a in args]
    log.info("$ %s", shlex.join([tool, *argv]))
    full_env = {**os.environ, **(env or {})}
    program = shutil.which(tool, path=full_env.get("PATH"))
    if program is None:
        raise ToolError(
            f"{tool}: command not found{f' while {what}' if what else ''}",
            hint=f"install it: apt-get install {PROVIDERS.get(tool, tool)}",
        )
    # No terminal and no input: tools must not page, colour or prompt. subprocess, not a
    # wrapper library: sh 2.x imported asyncio, 40 ms of every gpupass start that builds.
    done = subprocess.run([program, *argv], cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, capture_output=True)
    stdout, stderr = (s.decode("utf-8", "replace") for s in (done.stdout, done.stderr))
    if done.returncode != 0:
        detail = stderr.strip() or stdout.strip() or "(no output)"
        lines = [f"{tool} failed with exit status {done.returncode}{f' while {what}' if what else ''}:"]
        lines += [f"  {line}" for line in detail.splitlines()[-40:]]
        raise ToolError(lines)
    return Result(stdout, stderr)
