"""Publishing refuses what must not reach users, with a message that says what to do."""

from __future__ import annotations

import pytest

from gpupass import cli


def test_local_repository_refuses_builds_of_uncommitted_changes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["publish", "build/gpupass-aurora-z_0.1.0+7~dirty-1_all.deb"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "gpupass: gpupass-aurora-z_0.1.0+7~dirty-1_all.deb: built from uncommitted changes, not published",
        "gpupass: hint: commit the changes (git status shows them), then publish",
    ]


def test_nothing_to_publish(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["publish"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "gpupass: nothing to publish",
        "gpupass: hint: name .deb files, or --models all",
    ]


def test_unknown_model_in_a_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build-all", "aurora-z,nope"]) == 1
    assert capsys.readouterr().err.splitlines()[0].startswith("gpupass: unknown model 'nope' (known models: ")
