"""What identifies the laptop's owner, read only to take it out of ``gpupass report``'s text.

The report is built from an allow-list of facts (report.py); this is the second line of
defence: every string it writes passes ``Scrubber.scrub``, which replaces the machine's own
identifiers (DMI serials and UUID, the host name, the machine id, every network interface's
MAC address, the batteries' serial numbers, the users with uid >= 1000 and their home
directories) and anything shaped like a serial-free identifier class (MAC addresses, UUIDs,
IPv4/IPv6 addresses, user@host, /home/<user> paths) by a placeholder, and counts what it
replaced. The machine snapshot (machine.py) holds none of these on purpose, so nothing built
from it can leak them; this module is the one reader of them. Standard library only.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..machine import read_text

# Each kind the report never contains, in the order the "left out" line names them: how that
# line names it, and the placeholder that stands where one was found.
KINDS = {
    "serial number": ("serial numbers", "[serial number]"),
    "UUID": ("UUIDs", "[UUID]"),
    "MAC address": ("MAC addresses", "[MAC address]"),
    "host name": ("the host name", "[host name]"),
    "machine id": ("the machine id", "[machine id]"),
    "user name": ("user names", "[user name]"),
    "home path": ("home paths", "[home]"),
    "IP address": ("IP addresses", "[IP address]"),
    "user@host": ("user@host addresses", "[user@host]"),
}
DMI = "sys/class/dmi/id"
DMI_SERIALS = ("product_serial", "board_serial", "chassis_serial", "board_asset_tag", "chassis_asset_tag")
# What firmware writes where the maker left a field empty: not an identifier, and common words.
PLACEHOLDERS = {
    "",
    "0",
    "none",
    "n/a",
    "na",
    "default string",
    "to be filled by o.e.m.",
    "not specified",
    "not applicable",
    "system serial number",
    "chassis serial number",
    "base board serial number",
    "serial number",
    "asset tag",
    "no asset tag",
    "unknown",
    "0123456789",
    "123456789",
}
# Shorter values identify nobody and, replaced as words, would mangle the report's prose.
SHORTEST = 3
# Debian Policy 9.2.2: uids 1000-59999 are people's accounts; 60000-64999 are system users
# Debian allocates (libvirt-qemu is 64055), 65534 is nobody.
PEOPLES_UIDS = range(1000, 60000)

_HEX = "[0-9A-Fa-f]"
_BYTE = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Identifier shapes, whoever's they are. Order matters: user@host before the address in it.
SHAPES = (
    ("user@host", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*")),
    ("UUID", re.compile(rf"(?<!\w){_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}(?!\w)")),
    ("MAC address", re.compile(rf"(?<![\w:-]){_HEX}{{2}}(?:([:-]){_HEX}{{2}})(?:\1{_HEX}{{2}}){{4}}(?![\w:-])")),
    ("machine id", re.compile(rf"(?<!\w){_HEX}{{32}}(?!\w)")),
    ("IP address", re.compile(rf"(?<![\w.]){_BYTE}(?:\.{_BYTE}){{3}}(?!\.?\w)")),
    # IPv6: eight groups, or fewer around "::" (a PCI address has two colons and no "::").
    (
        "IP address",
        re.compile(
            rf"(?<![\w:])(?:(?:{_HEX}{{1,4}}:){{7}}{_HEX}{{1,4}}"
            rf"|(?:{_HEX}{{1,4}}:){{1,6}}:(?:{_HEX}{{1,4}}(?::{_HEX}{{1,4}}){{0,5}})?"
            rf"|::(?:{_HEX}{{1,4}}(?::{_HEX}{{1,4}}){{0,6}}))(?![\w:])"
        ),
    ),
    ("home path", re.compile(r"/home/[^/\s\"'`]+")),
)


@dataclass(frozen=True)
class Identifiers:
    """This machine's own identifiers, by kind (values as found, placeholders dropped)."""

    values: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _kept(values: list[str | None]) -> tuple[str, ...]:
    found = {v for v in values if v and len(v) >= SHORTEST and v.lower() not in PLACEHOLDERS}
    return tuple(sorted(found, key=lambda v: (-len(v), v)))  # longest first: a value inside another


def _users(root: Path) -> tuple[list[str], list[str]]:
    """(names, home directories) of /etc/passwd's people (uid 1000-59999)."""
    names, homes = [], []
    for line in (read_text(root / "etc/passwd") or "").splitlines():
        fields = line.split(":")
        if len(fields) < 7 or not fields[2].isdigit():
            continue
        if int(fields[2]) in PEOPLES_UIDS:
            names.append(fields[0])
            homes.append(fields[5].rstrip("/"))
    return names, [h for h in homes if h not in ("", "/", "/nonexistent")]


def read(root: Path = Path("/")) -> Identifiers:
    """The identifiers of the machine whose file system is at ``root``."""
    dmi = root / DMI
    names, homes = _users(root)
    nets = sorted((root / "sys/class/net").glob("*/address"))
    batteries = sorted((root / "sys/class/power_supply").glob("*/serial_number"))
    values = {
        "serial number": _kept([read_text(dmi / name) for name in DMI_SERIALS] + [read_text(p) for p in batteries]),
        "UUID": _kept([read_text(dmi / "product_uuid")]),
        "MAC address": _kept([v for p in nets if (v := read_text(p)) != "00:00:00:00:00:00"]),
        "host name": _kept([read_text(root / "etc/hostname"), read_text(root / "proc/sys/kernel/hostname")]),
        "machine id": _kept([read_text(root / "etc/machine-id"), read_text(root / "var/lib/dbus/machine-id")]),
        "home path": _kept(homes),
        "user name": _kept(names),
    }
    return Identifiers({kind: found for kind, found in values.items() if found})


class Scrubber:
    """Replaces identifiers in text by their kind's placeholder and counts what it replaced."""

    def __init__(self, identifiers: Identifiers) -> None:
        self.replaced: Counter[str] = Counter()
        self._own: list[tuple[str, re.Pattern[str]]] = []
        # Home directories before user names (a home holds the name), longest values first.
        for kind in ("home path", "serial number", "UUID", "MAC address", "machine id", "host name", "user name"):
            for value in identifiers.values.get(kind, ()):
                # As a whole word: a user "al" must not turn "always" into "[user name]ways".
                flags = 0 if kind == "user name" else re.IGNORECASE
                self._own.append((kind, re.compile(rf"(?<![\w-]){re.escape(value)}(?![\w-])", flags)))

    def scrub(self, text: str) -> str:
        for kind, pattern in (*self._own, *SHAPES):
            text, count = pattern.subn(KINDS[kind][1], text)
            if count:
                self.replaced[kind] += count
        return text

    def scrub_data(self, data):
        """``scrub`` every string (and key) of JSON data."""
        if isinstance(data, str):
            return self.scrub(data)
        if isinstance(data, dict):
            return {self.scrub(k): self.scrub_data(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.scrub_data(v) for v in data]
        return data

    def left_out(self) -> list[str]:
        """Every kind the report leaves out, each with how many were found in its text and replaced."""
        out = []
        for kind, (plural, placeholder) in KINDS.items():
            n = self.replaced[kind]
            out.append(f"{plural} ({n} replaced by {placeholder})" if n else plural)
        return out
