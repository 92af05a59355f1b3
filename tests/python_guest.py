"""Debian's python3 for a test guest's initramfs, so the project's own code runs inside the guest.

The interpreter and its standard library as installed on this machine (Debian's python3), the
shared libraries ``ldd`` names for it and its extension modules (with the loader), and the
cached bytecode with each source's modification time kept, so the guest compiles nothing.
An uncompressed cpio archive: concatenated after the busybox one (the kernel unpacks both),
and faster to unpack under TCG than a compressed one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .vm_smoke import cpio_newc, run

# What the guest never imports: tests, GUI toolkits, build files, installers, other packages.
LEFT_OUT = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "site-packages",
            "dist-packages", "venv", "distutils", "unittest", "sqlite3"}  # fmt: skip
# Extension modules whose libraries would double the archive (OpenSSL, SQLite, Tk, curses...).
HEAVY = re.compile(
    r"_(ssl|hashlib|sqlite3|tkinter|curses|curses_panel|dbm|gdbm|ctypes_test|test\w*|xx\w*)\.|readline|nis"
)
DIRECTORY, EXECUTABLE, REGULAR, SYMLINK = 0o040755, 0o100755, 0o100644, 0o120777
# Debian's interpreter (python3 on PATH may be another build, with its stdlib elsewhere).
DEBIAN_PYTHON = Path("/usr/bin/python3")


def _libraries(files: list[Path]) -> set[Path]:
    """Every library ldd resolves for ``files``, and the loader, as absolute paths."""
    found: set[Path] = set()
    text = run("ldd", *map(str, files))
    for line in text.splitlines():
        match = re.search(r"(?:=> )?(/\S+) \(0x", line)
        if match:
            found.add(Path(match.group(1)))
    return found


def archive(files: dict[str, bytes | Path], executables: tuple[str, ...] = ()) -> bytes:
    """Python, its standard library, and ``files`` (guest path -> bytes or a file to copy)."""
    python = Path(os.path.realpath(DEBIAN_PYTHON))
    stdlib = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])").strip())
    entries: dict[str, tuple[int, bytes]] = {}
    mtimes: dict[str, int] = {}

    def add(guest: str, mode: int, data: bytes, mtime: int = 0) -> None:
        guest = guest.lstrip("/")
        parts = guest.split("/")
        for i in range(1, len(parts)):
            entries.setdefault("/".join(parts[:i]), (DIRECTORY, b""))
        entries[guest] = (mode, data)
        if mtime:
            mtimes[guest] = mtime

    dynload = []
    for directory, subdirs, names in os.walk(stdlib):
        subdirs[:] = sorted(d for d in subdirs if d not in LEFT_OUT and not d.startswith("config-"))
        for name in sorted(names):
            path = Path(directory) / name
            if name.endswith(".py") or (name.endswith(".pyc") and ".opt-" not in name):
                add(str(path), REGULAR, path.read_bytes(), int(path.stat().st_mtime))
            elif name.endswith(".so") and not HEAVY.search(name):
                add(str(path), REGULAR, path.read_bytes())
                dynload.append(path)
    add(str(python), EXECUTABLE, python.read_bytes())
    add("/usr/bin/python3", SYMLINK, python.name.encode())
    for library in sorted(_libraries([python, *dynload])):
        add(str(library), EXECUTABLE, Path(os.path.realpath(library)).read_bytes())
    for guest, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        add(guest, EXECUTABLE if guest in executables else REGULAR, data)
    return cpio_newc([(path, mode, data, 0) for path, (mode, data) in sorted(entries.items())], mtimes)


def package_files(package: Path, guest_dir: str) -> dict[str, Path]:
    """A Python package's source files, under ``guest_dir`` in the guest."""
    return {
        f"{guest_dir}/{path.relative_to(package.parent)}": path
        for path in sorted(package.rglob("*.py"))
        if "__pycache__" not in path.parts
    }
