"""Switch the installed package's mode, the Debian way: the package's own files under /usr/lib
are never edited. The mode that differs from the model's is a state file (paths.MODE_STATE),
which GRUB's drop-in reads, and same-named overrides in /etc (modprobe.d, dracut.conf.d,
udev rules.d) that mask the shipped files with the variants the package ships for that mode.
Back to the model's mode, all of them are removed. postrm remove removes them too."""

from __future__ import annotations

from pathlib import Path

from ... import paths
from ...model import Model
from ...paths import under
from ..files import write_atomically


def files(model: Model, mode: str, root: Path) -> dict[Path, bytes | None]:
    """What the switch to ``mode`` leaves in place: each override's content, None where there
    is to be none (the model's own mode), and the state file's. An override whose consumer is
    not installed (no /etc/dracut.conf.d on an initramfs-tools system) is left out."""
    planned: dict[Path, bytes | None] = {}
    own = mode == model.mode
    for name, (_, override) in paths.mode_files(model.package).items():
        target = under(root, override)
        if own:
            planned[target] = None
        elif target.parent.is_dir():
            planned[target] = under(root, paths.MODE_VARIANTS / mode / name).read_bytes()
    planned[under(root, paths.MODE_STATE)] = None if own else f"{mode}\n".encode()
    return planned


def apply(planned: dict[Path, bytes | None]) -> list[Path]:
    """Write or remove each file (the state file last); return the files written."""
    written = []
    for path, data in planned.items():
        if data is None:
            path.unlink(missing_ok=True)
        else:
            write_atomically(path, data)
            written.append(path)
    return written
