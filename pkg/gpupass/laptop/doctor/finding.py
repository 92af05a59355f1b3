"""One line of ``gpupass doctor``: ``ok`` / ``warn`` / ``fail``, what was found, and the fix;
and the report and exit status they add up to (0 all ok, 1 a failure, 2 only warnings)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ...model import Model

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Finding:
    check: str  # a short name, for --json
    status: str  # ok, warn, fail
    what: str
    fix: str = ""

    def line(self) -> str:
        fix = f" (fix: {self.fix})" if self.fix and self.status != OK else ""
        return f"{self.status}: {self.what}{fix}"


def exit_status(findings: list[Finding]) -> int:
    statuses = {f.status for f in findings}
    return 1 if FAIL in statuses else 2 if WARN in statuses else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def report(model: Model, findings: list[Finding], as_json: bool = False) -> str:
    if as_json:
        return json.dumps([asdict(f) for f in findings], indent=2) + "\n"
    count = {s: sum(f.status == s for f in findings) for s in (OK, WARN, FAIL)}
    lines = [f"gpupass doctor: {model.name} ({model.package})"]
    lines += [f.line() for f in findings]
    lines.append(f"{count[OK]} ok, {_count(count[WARN], 'warning')}, {_count(count[FAIL], 'failure')}")
    return "\n".join(lines) + "\n"
