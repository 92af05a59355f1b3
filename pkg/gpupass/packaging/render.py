"""Turn a Model into the files the package ships: ``{path in the package: bytes}``.

Each artifact kind lives in its own module under ``gpupass.packaging.artifacts`` with the same
shape, ``render(model, templates) -> {relative path: bytes}``, and (but for the AML)
one template in ``config-templates/``. Adding an artifact touches one module and one
template, plus its line in ARTIFACTS below.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import jinja2

from .. import paths
from ..errors import GpupassError
from ..model import Model
from .artifacts import (
    apparmor,
    domain,
    dracut,
    grub,
    initramfs,
    mode,
    modelfile,
    modprobe,
    nvpcf,
    power,
    ssdt,
    systemd,
    tmpfiles,
)

ARTIFACTS = (
    grub,
    modprobe,
    initramfs,
    dracut,
    domain,
    ssdt,
    nvpcf,
    systemd,
    apparmor,
    modelfile,
    mode,
    power,
    tmpfiles,
)


class Templates:
    """The jinja2 environment: strict about undefined names, escaping XML templates."""

    def __init__(self, directories: tuple[Path, ...] = (paths.TEMPLATES_DIR, paths.ACPI_DIR)) -> None:
        for directory in directories:
            if not directory.is_dir():
                raise GpupassError(
                    f"{directory}: templates not found",
                    hint="rendering needs the gpupass source tree (set GPUPASS_SOURCE to it)",
                )
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in directories]),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(enabled_extensions=("xml", "xml.j2"), default=False),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, name: str, model: Model, **extra: object) -> bytes:
        text = self.env.get_template(name).render(model=model, paths=paths, **extra)
        return text.encode("utf-8")


def render_all(model: Model, templates: Templates | None = None) -> dict[str, bytes]:
    """Every file of the package for ``model``, keyed by path relative to the package root."""
    templates = templates or Templates()
    files: dict[str, bytes] = {}
    for artifact in ARTIFACTS:
        for path, data in artifact.render(model, templates).items():
            assert not PurePosixPath(path).is_absolute() and path not in files, path
            files[path] = data
    return dict(sorted(files.items()))


def write_tree(files: dict[str, bytes], dest: Path) -> None:
    """Write rendered files under ``dest`` (a package root such as debian/<package>); a script
    (``#!``) is executable."""
    for path, data in files.items():
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o755 if data.startswith(b"#!") else 0o644)


def iter_text(files: dict[str, bytes]) -> Iterator[tuple[str, str]]:
    """Files for display: text as is, binaries summarised."""
    for path, data in files.items():
        try:
            yield path, data.decode("utf-8")
        except UnicodeDecodeError:
            yield path, f"<{len(data)} bytes of binary data>\n"
