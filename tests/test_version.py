"""Package versions: they move exactly when what a model's package installs changes."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gpupass import __version__
from gpupass.packaging import changelog, debsrc, version

from .conftest import git, gpupass, scratch_clone

pytestmark = pytest.mark.tool


def newer(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0


@pytest.fixture
def two_models(tmp_path: Path) -> Path:
    """A scratch clone with aurora-z and a second model only, committed."""
    clone = scratch_clone(tmp_path / "clone")
    others = [f"models/{p.name}" for p in (clone / "models").glob("*.toml") if p.stem != "aurora-z"]
    if others:
        git(clone, "rm", "--quiet", *others)
    shutil.copy2(clone / "models" / "aurora-z.toml", clone / "models" / "other-z.toml")
    git(clone, "add", "models/other-z.toml")
    git(clone, "commit", "--quiet", "-m", "aurora-z and a second model")
    return clone


def versions(clone: Path) -> dict[str, version.Version]:
    return {m: version.of_model(clone / "models" / f"{m}.toml", clone) for m in ("aurora-z", "other-z")}


def test_changing_one_model_moves_only_its_version(two_models: Path) -> None:
    before = versions(two_models)
    with open(two_models / "models" / "aurora-z.toml", "a") as f:
        f.write("# a fix for this model only\n")

    dirty = versions(two_models)
    assert dirty["aurora-z"].dirty and dirty["aurora-z"].debian.endswith("~dirty-1")
    assert newer(dirty["aurora-z"].debian, before["aurora-z"].debian)
    assert dirty["other-z"] == before["other-z"]

    git(two_models, "commit", "--quiet", "-am", "fix aurora-z")
    after = versions(two_models)
    assert not after["aurora-z"].dirty
    assert newer(after["aurora-z"].debian, before["aurora-z"].debian)
    assert newer(after["aurora-z"].debian, dirty["aurora-z"].debian)  # the commit supersedes the local build
    assert after["other-z"] == before["other-z"]

    # Shared code moves every model; a change outside the inputs (tests) moves none.
    with open(two_models / "tests" / "conftest.py", "a") as f:
        f.write("# only tests\n")
    git(two_models, "commit", "--quiet", "-am", "tests only")
    assert versions(two_models) == after
    with open(two_models / "pkg" / "gpupass" / "paths.py", "a") as f:
        f.write("# shared code\n")
    git(two_models, "commit", "--quiet", "-am", "shared code")
    for name, v in versions(two_models).items():
        assert newer(v.debian, after[name].debian), name


def test_version_is_deterministic_from_the_commit(two_models: Path, tmp_path: Path) -> None:
    other = tmp_path / "second-clone"
    git(two_models, "clone", "--quiet", "--no-local", str(two_models), str(other))
    assert versions(other) == versions(two_models)


def test_build_all_rebuilds_only_what_changed(two_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = gpupass(two_models, "build-all", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "unchanged" not in first.stdout and len(first.stdout.splitlines()) == 2

    # Clean models' versions are kept per commit: the rerun does not ask git for each model.
    kept = json.loads((out / "versions.json").read_text())
    assert kept["head"] == git(two_models, "rev-parse", "HEAD").strip()
    assert kept["versions"] == {name: dataclasses.asdict(v) for name, v in versions(two_models).items()}
    again = gpupass(two_models, "build-all", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == "nothing to do: no model's inputs changed since its last build (2 models)"

    with open(two_models / "models" / "aurora-z.toml", "a") as f:
        f.write("# a fix for this model only\n")
    git(two_models, "commit", "--quiet", "-am", "fix aurora-z")
    third = gpupass(two_models, "build-all", "--out", str(out))
    assert third.returncode == 0, third.stderr
    lines = third.stdout.splitlines()
    assert lines[0].startswith(str(out / "gpupass-aurora-z_")) and "unchanged" not in lines[0]
    assert lines[1].startswith(str(out / "gpupass-other-z_")) and lines[1].endswith("(unchanged, not rebuilt)")


def test_changelog_parses_as_dch_writes_it(aurora_version: str, tmp_path: Path) -> None:
    ver = version.of_model(debsrc.paths.MODELS_DIR / "aurora-z.toml")
    text = changelog.render("gpupass-aurora-z", ver.for_series("noble"), "noble", "A B <a@example.org>", ver)
    (tmp_path / "changelog").write_text(text)
    parsed = subprocess.run(
        ["dpkg-parsechangelog", "-l", str(tmp_path / "changelog")], check=True, capture_output=True, text=True
    ).stdout
    assert f"Version: {aurora_version}~noble1\n" in parsed
    assert "Distribution: noble\n" in parsed and "Maintainer: A B <a@example.org>\n" in parsed
    newest = ["dpkg-parsechangelog", "-l", str(changelog.HISTORY), "-S", "Version"]
    history = subprocess.run(newest, check=True, capture_output=True, text=True).stdout.strip()
    assert history == __version__, "release with dch: the history's newest entry is the upstream version"
    assert newer(ver.debian, history)


def test_inputs_are_what_the_source_package_is_made_of() -> None:
    assert set(version.SHARED_INPUTS) == {*debsrc.STAGED_FILES, *debsrc.STAGED_DIRS, "debian"}
