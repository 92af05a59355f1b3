"""A local signed apt repository: the offline default for publishing model packages.

reprepro keeps the pool and the indices and signs Release with the maintainers' key;
users add one sources entry with ``signed-by`` the exported keyring. Model packages are
Architecture: all and depend only on python3, so one suite serves Debian and Ubuntu.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import GpupassError
from . import tools

SUITE = "gpupass"
COMPONENT = "main"
ARCHITECTURES = ("amd64", "arm64")
KEYRING = "gpupass-archive-keyring.gpg"
KEY_VARIABLE = "GPUPASS_SIGNING_KEY"


def distributions(key: str) -> str:
    return "\n".join(
        [
            "Origin: gpupass",
            "Label: gpupass",
            f"Codename: {SUITE}",
            f"Architectures: {' '.join(ARCHITECTURES)}",
            f"Components: {COMPONENT}",
            "Description: gpupass laptop GPU passthrough packages",
            f"SignWith: {key}",
            "",
        ]
    )


def signing_key(key: str | None) -> str:
    key = key or os.environ.get(KEY_VARIABLE)
    if not key:
        raise GpupassError(
            "no signing key for the repository",
            hint=f"pass --key KEYID or set {KEY_VARIABLE} (a key in your gpg keyring; `gpg --list-secret-keys`)",
        )
    return key


def publish(debs: list[Path], repo: Path, key: str | None = None) -> Path:
    """Add ``debs`` to the repository at ``repo`` (created if need be), signed with ``key``.

    Returns the path of the exported public keyring users pass to ``signed-by``.
    """
    key = signing_key(key)
    for deb in debs:
        if not deb.is_file() or deb.suffix != ".deb":
            raise GpupassError(f"{deb}: not a .deb file")
    conf = repo / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "distributions").write_text(distributions(key), encoding="utf-8")
    for deb in debs:
        tools.run("reprepro", "--basedir", repo, "includedeb", SUITE, deb, what=f"adding {deb.name} to {repo}")
    keyring = repo / KEYRING
    tools.run("gpg", "--batch", "--yes", "--output", keyring, "--export", key, what="exporting the public key")
    if keyring.stat().st_size == 0:
        raise GpupassError(f"gpg exported nothing for key {key!r}", hint="check the key id with gpg --list-keys")
    return keyring


def sources_entry(repo: Path) -> str:
    """The deb822 sources entry that points apt at ``repo``."""
    return "\n".join(
        [
            "Types: deb",
            f"URIs: file:{repo}",
            f"Suites: {SUITE}",
            f"Components: {COMPONENT}",
            f"Signed-By: {repo / KEYRING}",
            "",
        ]
    )
