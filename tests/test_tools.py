"""The one wrapper for external tools: what the user sees when a tool is missing or fails."""

from __future__ import annotations

import pytest

from gpupass.errors import ToolError
from gpupass.packaging import tools


def test_a_missing_tool_names_the_package_to_install() -> None:
    with pytest.raises(ToolError) as e:
        tools.run("iasl", "-v", env={"PATH": "/nonexistent"}, what="compiling the battery SSDT")
    assert e.value.problems == ["iasl: command not found while compiling the battery SSDT"]
    assert e.value.hint == "install it: apt-get install acpica-tools"


def test_a_failing_tool_shows_its_status_and_stderr() -> None:
    with pytest.raises(ToolError) as e:
        tools.run("sh", "-c", "echo out; echo one >&2; echo two >&2; exit 3", what="testing the wrapper")
    assert e.value.problems == ["sh failed with exit status 3 while testing the wrapper:", "  one", "  two"]


def test_a_tool_gets_no_terminal_and_no_input() -> None:
    result = tools.run("sh", "-c", "cat; test -t 0 || test -t 1 || echo no terminal; echo note >&2")
    assert (result.stdout, result.stderr) == ("no terminal\n", "note\n")
