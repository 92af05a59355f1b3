"""Writing a file whole: the laptop side's one writer for what must never be seen half-written
(the vBIOS and its records, the report, the mode's overrides, setup's model file).

Standard library only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """``path`` holds either its old content or all of ``data``, never a part, even across a
    crash: a temporary file beside it, fsync, rename, fsync the directory. The parent directory
    is made if need be; ``mode`` defaults to world-readable (the qemu process reads the vBIOS as
    another user). Raises OSError, and leaves no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write_all(file, data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_all(file: BinaryIO, data: bytes) -> None:
    """A seam of its own so tests can interrupt the write half way through."""
    file.write(data)


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
