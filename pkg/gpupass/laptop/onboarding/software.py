"""The software ``gpupass report`` names, each read as one allow-listed value: the distribution
(os-release's PRETTY_NAME), installed packages' versions (dpkg's status file) and the host NVIDIA
driver's version. Nothing else of those files is kept. Standard library only.
"""

from __future__ import annotations

import re
from pathlib import Path

# os-release(5): /etc/os-release, else /usr/lib/os-release.
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
DPKG_STATUS = "var/lib/dpkg/status"
# The loaded NVIDIA kernel module's version: the module's own, else the driver's proc file
# ("NVRM version: NVIDIA UNIX [Open ]Kernel Module [for x86_64]  550.54.14  Release Build  (builder@host) date").
NVIDIA_MODULE_VERSION = "sys/module/nvidia/version"
NVIDIA_PROC_VERSION = "proc/driver/nvidia/version"
VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?")
NVRM = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)\b")
# A package version as dpkg allows it (deb-version(7)): nothing else is copied from the file.
DEB_VERSION = re.compile(r"(?:\d+:)?[0-9][A-Za-z0-9.+~-]*")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def distribution(root: Path) -> str | None:
    """os-release's PRETTY_NAME, e.g. ``Debian GNU/Linux 12 (bookworm)``; None when there is none."""
    for name in OS_RELEASE:
        text = _read(root / name)
        if text is None:
            continue
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "PRETTY_NAME":
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                    value = value[1:-1]
                value = "".join(c for c in value if c.isprintable()).strip()
                return value[:80] or None
        return None
    return None


def package_versions(root: Path, packages: tuple[str, ...]) -> dict[str, str | None] | None:
    """Each package's installed version from dpkg's status file (None: not installed); None
    when the status file cannot be read."""
    text = _read(root / DPKG_STATUS)
    if text is None:
        return None
    found: dict[str, str | None] = dict.fromkeys(packages)
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        name, status = fields.get("Package"), fields.get("Status", "")
        version = DEB_VERSION.fullmatch(fields.get("Version", ""))
        if name in found and status.endswith(" installed") and version:
            found[name] = version.group()
    return found


def nvidia_driver(root: Path) -> str | None:
    """The loaded host NVIDIA driver's version (the number only); None when none is loaded."""
    module = (_read(root / NVIDIA_MODULE_VERSION) or "").strip()
    if VERSION.fullmatch(module):
        return module
    match = NVRM.search(_read(root / NVIDIA_PROC_VERSION) or "")
    return match.group(1) if match else None
