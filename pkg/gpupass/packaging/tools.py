"""The one wrapper through which gpupass runs every external tool.

It logs the exact command line, captures output, and turns failures into messages a
user can act on: a missing tool names the Debian package that provides it; a failing
tool shows its exit status and what it printed on stderr.
"""

from __future__ import annotations

import io
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import sh

from ..errors import ToolError

log = logging.getLogger("gpupass")
logging.getLogger("sh").setLevel(logging.WARNING)  # it logs every process start at INFO

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
    provider = PROVIDERS.get(tool, tool)
    try:
        command = sh.Command(tool)
    except sh.CommandNotFound:
        raise ToolError(
            f"{tool}: command not found{f' while {what}' if what else ''}",
            hint=f"install it: apt-get install {provider}",
        ) from None
    out, err = io.BytesIO(), io.BytesIO()
    full_env = {**os.environ, **(env or {})}
    try:
        # No pseudo-terminal: tools must not page, colour or prompt.
        command(*argv, _out=out, _err=err, _cwd=str(cwd) if cwd else None, _env=full_env, _tty_out=False)
    except sh.ErrorReturnCode as e:
        stderr = err.getvalue().decode("utf-8", "replace").strip()
        stdout = out.getvalue().decode("utf-8", "replace").strip()
        detail = stderr or stdout or "(no output)"
        lines = [f"{tool} failed with exit status {e.exit_code}{f' while {what}' if what else ''}:"]
        lines += [f"  {line}" for line in detail.splitlines()[-40:]]
        raise ToolError(lines) from None
    return Result(out.getvalue().decode("utf-8", "replace"), err.getvalue().decode("utf-8", "replace"))
