"""stdeb's output is reused only for the very inputs it was made from."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpupass.packaging import debianize


def tree(at: Path) -> Path:
    (at / "pkg" / "gpupass").mkdir(parents=True)
    (at / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    (at / "stdeb.cfg").write_text("[gpupass]\nSource: gpupass-aurora-z\n")
    (at / "pkg" / "gpupass" / "__init__.py").write_text("")
    return at


@pytest.fixture
def stdeb_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """Where stdeb ran; it writes debian/ from stdeb.cfg (and the egg-info setuptools leaves)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runs = []

    def fake_run(*argv: object, cwd: Path, **_: object) -> None:
        assert argv[1:] == ("setup.py", "--command-packages=stdeb.command", "debianize")
        runs.append(cwd)
        (cwd / "debian" / "source").mkdir(parents=True)
        (cwd / "debian" / "control").write_text((cwd / "stdeb.cfg").read_text())
        (cwd / "debian" / "source" / "format").write_text("3.0 (quilt)\n")
        (cwd / "pkg" / "gpupass.egg-info").mkdir()

    monkeypatch.setattr(debianize.tools, "run", fake_run)
    return runs


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_the_key_is_the_inputs_not_the_place(tmp_path: Path) -> None:
    first, second = tree(tmp_path / "a"), tree(tmp_path / "somewhere" / "else")
    assert debianize.key(first, 1) == debianize.key(second, 1)
    assert debianize.key(first, 1) != debianize.key(first, 2)  # SOURCE_DATE_EPOCH dates stdeb's changelog
    (second / "stdeb.cfg").write_text("[gpupass]\nSource: gpupass-other\n")
    assert debianize.key(first, 1) != debianize.key(second, 1)
    third = tree(tmp_path / "third")
    (third / "setup.py").chmod(0o755)
    assert debianize.key(first, 1) != debianize.key(third, 1)
    (third / "setup.py").chmod(0o644)
    (third / "pkg" / "gpupass" / "new.py").write_text("")
    assert debianize.key(first, 1) != debianize.key(third, 1)


def test_the_key_names_stdeb_setuptools_and_python() -> None:
    versions = debianize.tool_versions()
    assert versions.startswith("python 3.")
    assert "\nstdeb " in versions and "\nsetuptools " in versions


def test_stdeb_runs_once_for_the_same_inputs(tmp_path: Path, stdeb_runs: list[Path]) -> None:
    first, second = tree(tmp_path / "first"), tree(tmp_path / "second")
    debianize.debianize(first, 1)
    debianize.debianize(second, 1)
    assert stdeb_runs == [first]
    assert (
        files(second / "debian")
        == files(first / "debian")
        == {
            "control": b"[gpupass]\nSource: gpupass-aurora-z\n",
            "source/format": b"3.0 (quilt)\n",
        }
    )
    assert not (first / "pkg" / "gpupass.egg-info").exists()  # not a source file


def test_other_inputs_run_stdeb_again(tmp_path: Path, stdeb_runs: list[Path]) -> None:
    first, second = tree(tmp_path / "first"), tree(tmp_path / "second")
    (second / "stdeb.cfg").write_text("[gpupass]\nSource: gpupass-other\n")
    debianize.debianize(first, 1)
    debianize.debianize(second, 1)
    debianize.debianize(tree(tmp_path / "later"), 2)
    assert stdeb_runs == [first, second, tmp_path / "later"]
    assert (second / "debian" / "control").read_text() == "[gpupass]\nSource: gpupass-other\n"


def test_an_unwritable_cache_only_costs_a_stdeb_run(tmp_path: Path, stdeb_runs: list[Path]) -> None:
    (tmp_path / "cache").write_text("not a directory")
    first, second = tree(tmp_path / "first"), tree(tmp_path / "second")
    debianize.debianize(first, 1)
    debianize.debianize(second, 1)
    assert stdeb_runs == [first, second]
    assert files(second / "debian") == files(first / "debian")
