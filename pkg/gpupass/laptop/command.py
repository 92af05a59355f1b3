"""The laptop side's one way to run another program (the build side has build/tools.py).

A program that is not installed is a message naming the Debian package that brings it;
one that fails shows its exit status and stderr. Standard library only.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

from ..errors import ToolError

log = logging.getLogger("gpupass")


def find(program: str) -> str | None:
    """Where ``program`` is on PATH, or None when it is not installed."""
    return shutil.which(program)


def run(argv: list[str], package: str) -> str:
    """Run ``argv`` and return its stdout; ``package`` is what to install when it is missing."""
    program = find(argv[0])
    if program is None:
        raise ToolError(f"{argv[0]} not found", hint=f"install {package}")
    log.info("$ %s", " ".join(argv))
    result = subprocess.run([program, *argv[1:]], capture_output=True, text=True, errors="replace")
    if result.returncode:
        stderr = result.stderr.strip()
        raise ToolError(f"{' '.join(argv)} failed ({result.returncode}){': ' + stderr if stderr else ''}")
    return result.stdout


def stream(argv: list[str], package: str) -> None:
    """Run ``argv`` with its output going straight to ours (what it says is for the user, as in
    a maintainer script); a failure is its exit status, after what it printed."""
    program = find(argv[0])
    if program is None:
        raise ToolError(f"{argv[0]} not found", hint=f"install {package}")
    log.info("$ %s", " ".join(argv))
    returncode = subprocess.run([program, *argv[1:]]).returncode
    if returncode:
        raise ToolError(f"{' '.join(argv)} failed ({returncode})")
