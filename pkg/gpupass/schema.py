"""Declarative constraints for model fields.

Each constraint both *validates* a value read from a model file and *generates* valid
values for property tests (``strategy()``), so the tests explore exactly the space the
validator accepts. Hypothesis is imported only when a strategy is asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


def show(value: Any) -> str:
    """A value as the user wrote it, for messages."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Constraint:
    expected: str

    def check(self, value: Any) -> str | None:
        """Return what is wrong with ``value`` (without the expectation), or None."""
        raise NotImplementedError

    def strategy(self):  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True)
class Int(Constraint):
    lo: int
    hi: int
    power_of_two: bool = False
    unit: str = ""

    @property
    def expected(self) -> str:
        kind = "a power of two" if self.power_of_two else "an integer"
        unit = f" {self.unit}" if self.unit else ""
        return f"{kind} from {self.lo} to {self.hi}{unit}"

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{show(value)} is not an integer"
        if not self.lo <= value <= self.hi:
            return f"{value} is out of range"
        if self.power_of_two and value & (value - 1):
            return f"{value} is not a power of two"
        return None

    def strategy(self):
        from hypothesis import strategies as st

        if self.power_of_two:
            exps = [e for e in range(self.hi.bit_length()) if self.lo <= 1 << e <= self.hi]
            return st.sampled_from([1 << e for e in exps])
        return st.integers(self.lo, self.hi)


@dataclass(frozen=True)
class Text(Constraint):
    """A string matching ``pattern`` (full match); ``what`` names it in messages."""

    pattern: str
    what: str
    example: str
    # For strategies: an alphabet and length bounds that stay inside ``pattern``.
    alphabet: str | None = None
    min_len: int = 1
    max_len: int = 64

    @property
    def expected(self) -> str:
        return self.example

    def check(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"{show(value)} is not a string"
        if not re.fullmatch(self.pattern, value):
            return f"{show(value)} is not {self.what}"
        return None

    def strategy(self):
        from hypothesis import strategies as st

        if self.alphabet is not None:
            # From the pattern, not filtered to it: plain text over the alphabet rarely
            # matches a pattern with a fixed first character (ABS_PATH's "/").
            return st.from_regex(self.pattern, fullmatch=True, alphabet=self.alphabet).filter(
                lambda s: self.min_len <= len(s) <= self.max_len
            )
        return st.from_regex(self.pattern, fullmatch=True)


@dataclass(frozen=True)
class FreeText(Constraint):
    """Human text (SMBIOS strings, names): any printable characters, XML-special and
    non-ASCII included; no control characters, no leading/trailing blanks."""

    max_len: int = 64

    @property
    def expected(self) -> str:
        return f"printable text of 1 to {self.max_len} characters"

    def check(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"{show(value)} is not a string"
        if not 1 <= len(value) <= self.max_len:
            return f"{show(value)} has {len(value)} characters"
        if not value.isprintable():
            return f"{show(value)} has a control character"
        if value != value.strip():
            return f"{show(value)} has leading or trailing blanks"
        return None

    def strategy(self):
        from hypothesis import strategies as st

        chars = st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn", "Zl", "Zp"))
        return st.text(chars, min_size=1, max_size=self.max_len).filter(lambda s: self.check(s) is None)


@dataclass(frozen=True)
class OneOf(Constraint):
    choices: tuple[str, ...]

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(self.choices)

    def check(self, value: Any) -> str | None:
        if value not in self.choices:
            return f"{show(value)} is not allowed"
        return None

    def strategy(self):
        from hypothesis import strategies as st

        return st.sampled_from(self.choices)


@dataclass(frozen=True)
class Bool(Constraint):
    expected: str = "true or false"

    def check(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"{show(value)} is not a boolean"

    def strategy(self):
        from hypothesis import strategies as st

        return st.booleans()


@dataclass(frozen=True)
class ListOf:
    """A TOML array of ``item`` (a Constraint or a model dataclass)."""

    item: Any
    min_len: int = 0
    max_len: int = 64
    unique: bool = False

    def describe(self) -> str:
        return f"a list of {self.min_len} to {self.max_len} items"


# Reusable field kinds ---------------------------------------------------------------

# PCI slots (devices) go from 00 to 1f, functions from 0 to 7.
PCI_ADDRESS = Text(
    r"[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]",
    "a PCI address",
    "domain:bus:slot.function in lower-case hex, slot 00-1f, function 0-7, e.g. 0000:01:00.0",
)
PCI_ID = Text(r"[0-9a-f]{4}:[0-9a-f]{4}", "a vendor:device id", "1234:abcd")
# A PCI subsystem vendor:device id, or "" where it is not known.
SUBSYSTEM_ID = Text(
    r"([0-9a-f]{4}:[0-9a-f]{4})?",
    "a subsystem vendor:device id",
    '1234:abcd, or "" when unknown',
    alphabet="0123abcdef:",
    min_len=0,
    max_len=9,
)
MODULE = Text(r"[a-z0-9_]+", "a kernel module name", "e.g. nouveau", alphabet="abcdefgh_0123", max_len=16)
ABS_PATH = Text(
    r"/[A-Za-z0-9._+/-]+",
    "an absolute path",
    "an absolute path of letters, digits and ._+-/",
    alphabet="abcOVMF_CODE4.fd/-+",
    max_len=40,
)
VM_NAME = Text(
    r"[A-Za-z0-9][A-Za-z0-9_.-]{0,49}",
    "a VM name",
    "letters, digits and ._- (at most 50, starting with a letter or digit)",
    alphabet="abcWin11-_.0123",
    max_len=20,
)
# ASL string literals: kept to characters that need no escaping in ASL.
ASL_STRING = Text(
    r"[A-Za-z0-9 ._-]{1,16}",
    "an ACPI string",
    "1 to 16 letters, digits, blanks and ._-",
    alphabet="ABCxyz019 ._-",
    max_len=16,
)
ACPI_OEM_ID = Text(r"[A-Z0-9_]{1,6}", "an ACPI OEM id", "1 to 6 of A-Z 0-9 _", alphabet="GPUAS_09", max_len=6)
ACPI_OEM_TABLE_ID = Text(
    r"[A-Z0-9_]{1,8}", "an ACPI OEM table id", "1 to 8 of A-Z 0-9 _", alphabet="FAKEBT_09", max_len=8
)
HYPERV_VENDOR_ID = Text(
    r"[A-Za-z0-9]{1,12}", "a Hyper-V vendor id", "1 to 12 letters or digits", alphabet="abcXYZ0189", max_len=12
)
# A display mode as the kernel's DRM connectors list it (modes: 2560x1600).
RESOLUTION = Text(
    r"[1-9][0-9]{2,4}x[1-9][0-9]{2,4}",
    "a resolution",
    "WIDTHxHEIGHT in pixels, e.g. 1920x1080",
    alphabet="0123456789x",
    min_len=7,
    max_len=11,
)
