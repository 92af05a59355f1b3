"""Errors a user can act on: one line each, printed without a traceback."""

from __future__ import annotations


class GpupassError(Exception):
    """An error whose message is meant for the user as it is.

    ``problems`` holds one line per problem; ``hint`` says what to do about it.
    """

    def __init__(self, problems: str | list[str], hint: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.hint = hint
        super().__init__("\n".join(self.problems))

    def lines(self) -> list[str]:
        out = list(self.problems)
        if self.hint:
            out.append(f"hint: {self.hint}")
        return out


class ModelError(GpupassError):
    """A model file that cannot be used; every problem is listed."""


class ToolError(GpupassError):
    """An external tool failed or is missing."""
