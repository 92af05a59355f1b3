"""The command lines the README gives for nox, run for real on a session that builds nothing."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.tool
NOX = shutil.which("nox") or "nox"  # Debian's nox (tools/install-deps build)


def nox(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("MODEL", "NOXSESSION")}
    return subprocess.run(
        [NOX, *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, env",
    [
        (["-s", "model", "MODEL=aurora-z"], None),  # the mission's own form
        (["-s", "model", "--", "MODEL=aurora-z"], None),  # nox's session arguments
        (["-s", "model"], {"MODEL": "aurora-z"}),  # the environment
        (["-s", "model", "MODEL=nope", "--", "MODEL=aurora-z"], None),  # after `--` wins
    ],
    ids=["after-session", "after-dashes", "environment", "both"],
)
def test_every_form_chooses_the_model(args: list[str], env: dict[str, str] | None) -> None:
    result = nox(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "MODEL=aurora-z"


def test_unknown_model_is_a_usage_error() -> None:
    result = nox("-s", "model", "MODEL=nope")
    assert result.returncode != 0
    assert "Session model aborted: unknown model 'nope'. Usage: nox -s model MODEL=<id>" in result.stderr


def test_no_model_is_a_usage_error() -> None:
    result = nox("-s", "model")
    assert result.returncode != 0
    assert "Session model aborted: no model given. Usage: nox -s model MODEL=<id>" in result.stderr
