"""PPA uploads as Launchpad receives them: signed, one per package and series, one orig tarball
per package, checked by gpg, dscverify and dput (simulated, with the generated configuration).
Every upload set carries the tool package gpupass beside the models."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from gpupass.errors import GpupassError
from gpupass.packaging import ppa

from .conftest import gpupass, scratch_clone

UPLOADER = {"DEBFULLNAME": "Test Uploader", "DEBEMAIL": "uploader@example.org"}
PACKAGES = ("gpupass-aurora-z", "gpupass")


def field(text: str, name: str) -> str:
    return re.search(rf"^{name}: (.*)$", text, flags=re.M).group(1)


def compare(a: str, op: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0


def run_ppa(clone: Path, series: str, out: Path, key: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`gpupass ppa aurora-z --series SERIES --ppa owner/name` (simulated) from ``clone``."""
    env = {**UPLOADER, "GPUPASS_SIGNING_KEY": key, **env}
    return gpupass(clone, "ppa", "aurora-z", "--series", series, "--ppa", "owner/name", "--out", str(out), env=env)


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    return scratch_clone(tmp_path / "clone")


@pytest.fixture
def uploads(clone: Path, signing_key: str, tmp_path: Path) -> tuple[Path, str]:
    """`gpupass ppa aurora-z --series noble,resolute` (simulated); returns (output dir, its stdout)."""
    out = tmp_path / "ppa"
    result = run_ppa(clone, "noble,resolute", out, signing_key)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


@pytest.mark.tool
def test_uploads_are_signed_and_accepted(uploads: tuple[Path, str], tmp_path: Path) -> None:
    out, stdout = uploads
    keyring = tmp_path / "keyring.gpg"
    subprocess.run(["gpg", "--batch", "--output", str(keyring), "--export"], check=True)
    signed = sorted(out.glob("*.dsc")) + sorted(out.glob("*_source.changes"))
    assert sorted(f.name.split("_")[0] for f in signed) == sorted(PACKAGES * 4)
    for f in signed:
        verify = subprocess.run(["gpg", "--batch", "--verify", str(f)], capture_output=True, text=True)
        assert verify.returncode == 0 and "Good signature" in verify.stderr, f.name
    dscverify = subprocess.run(
        ["dscverify", "--no-default-keyrings", "--keyring", str(keyring), *map(str, signed)],
        capture_output=True,
        text=True,
    )
    assert dscverify.returncode == 0, dscverify.stdout + dscverify.stderr
    assert "All files validated successfully." in dscverify.stdout

    # dput --simulate with the generated configuration accepted all four (it checks signatures
    # and checksums), and nothing went anywhere.
    config = (out / "dput-ppa-owner-name.cf").read_text()
    assert "fqdn = ppa.launchpad.net\n" in config and "incoming = ~owner/ubuntu/name/\n" in config
    for package in PACKAGES:
        for series in ("noble", "resolute"):
            assert re.search(rf"^would upload {package} \S+~{series}1 for {series} to ppa:owner/name ", stdout, re.M)
    assert stdout.count("to ppa:owner/name") == 4
    assert "Uploading with ftp:" in stdout and not list(out.glob("*.upload"))


@pytest.mark.tool
@pytest.mark.parametrize("package", PACKAGES)
def test_one_upload_per_series_sharing_one_orig(uploads: tuple[Path, str], package: str) -> None:
    out, _ = uploads
    origs = list(out.glob(f"{package}_*.orig.tar.gz"))
    assert len(origs) == 1
    noble = next(out.glob(f"{package}_*~noble1_source.changes")).read_text()
    resolute = next(out.glob(f"{package}_*~resolute1_source.changes")).read_text()
    assert field(noble, "Source") == package
    assert field(noble, "Distribution") == "noble" and field(resolute, "Distribution") == "resolute"
    for changes in (noble, resolute):
        assert field(changes, "Changed-By") == "Test Uploader <uploader@example.org>"
        assert field(changes, "Maintainer") == "Test Uploader <uploader@example.org>"
    v_noble, v_resolute = field(noble, "Version"), field(resolute, "Version")
    assert v_noble.endswith("~noble1") and v_resolute.endswith("~resolute1")
    assert compare(v_noble, "lt", v_resolute)
    assert compare(v_resolute, "lt", v_resolute.rsplit("~", 1)[0])  # a local build sorts above both
    # The first upload carries the orig tarball (-sa), the second only refers to it (-sd);
    # both .dsc files name the same bytes.
    assert origs[0].name in noble and origs[0].name not in resolute
    sha = hashlib.sha256(origs[0].read_bytes()).hexdigest()
    for dsc in out.glob(f"{package}_*.dsc"):
        assert f"{sha} {origs[0].stat().st_size} {origs[0].name}" in dsc.read_text()


@pytest.mark.tool
def test_rebuilt_orig_is_the_same_bytes(
    uploads: tuple[Path, str], clone: Path, signing_key: str, tmp_path: Path
) -> None:
    """A later run (another series, another day) makes the same orig: Launchpad takes it."""
    out, _ = uploads
    again = tmp_path / "again"
    result = run_ppa(clone, "plucky", again, signing_key)
    assert result.returncode == 0, result.stderr
    origs = sorted(out.glob("*.orig.tar.gz"))
    assert sorted(o.name.split("_")[0] for o in origs) == sorted(PACKAGES)
    for first in origs:
        assert (again / first.name).read_bytes() == first.read_bytes()


@pytest.mark.tool
def test_uploaded_version_is_refused_before_dput_runs(
    uploads: tuple[Path, str], clone: Path, signing_key: str, tmp_path: Path
) -> None:
    out, _ = uploads
    (changes,) = out.glob("gpupass-aurora-z_*~noble1_source.changes")
    changes.with_name(f"{changes.stem}.ppa-owner-name.upload").write_text("uploaded\n")  # as dput leaves it
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dput").write_text(f"#!/bin/sh\ntouch {tmp_path}/dput-ran\n")
    (fake / "dput").chmod(0o755)
    result = run_ppa(clone, "noble,resolute", out, signing_key, PATH=f"{fake}:/usr/bin:/bin")
    assert result.returncode == 1
    version = changes.name.split("_")[1]
    assert result.stderr.splitlines()[0] == (
        f"gpupass: gpupass-aurora-z {version} (noble) is already uploaded to ppa:owner/name"
        f" ({changes.with_name(changes.stem + '.ppa-owner-name.upload')})"
    )
    assert not (tmp_path / "dput-ran").exists()


@pytest.mark.tool
def test_the_tool_already_uploaded_is_left_out_and_the_models_still_go(
    uploads: tuple[Path, str], clone: Path, signing_key: str, tmp_path: Path
) -> None:
    """The tool rides along with whichever models are published: models uploaded one run at a
    time from the same commit carry the tool once; the later runs leave it out and say so."""
    out, _ = uploads
    (tool,) = out.glob("gpupass_*~noble1_source.changes")
    log = tool.with_name(f"{tool.stem}.ppa-owner-name.upload")
    log.write_text("uploaded\n")  # as dput leaves it
    env = {**UPLOADER, "GPUPASS_SIGNING_KEY": signing_key}
    result = gpupass(
        clone, "ppa", "hp-victus-16-rtx4060", "--series", "noble", "--ppa", "owner/name", "--out", str(out), env=env
    )
    assert result.returncode == 0, result.stderr
    version = tool.name.split("_")[1]
    assert f"left out gpupass {version} for noble: already uploaded to ppa:owner/name ({log})\n" in result.stdout
    uploaded = re.findall(r"^would upload (\S+) \S+ for (\S+) ", result.stdout, re.M)
    assert uploaded == [("gpupass-hp-victus-16-rtx4060", "noble")], result.stdout


@pytest.mark.tool
def test_uncommitted_changes_are_not_uploaded(clone: Path, signing_key: str, tmp_path: Path) -> None:
    with open(clone / "models" / "aurora-z.toml", "a") as f:
        f.write("# not committed\n")
    result = run_ppa(clone, "noble", tmp_path / "o", signing_key)
    assert result.returncode == 1
    assert re.fullmatch(
        r"gpupass: gpupass-aurora-z 0\.1\.0\+\d+~dirty-1: built from uncommitted changes, not published\n"
        r"gpupass: hint: commit the changes \(git status shows them\), then publish\n",
        result.stderr,
    ), result.stderr


@pytest.mark.parametrize(
    "env",
    [{}, {"DEBFULLNAME": "gpupass maintainers", "DEBEMAIL": "maintainers@gpupass.invalid"}],
    ids=["unset", "placeholder"],
)
def test_placeholder_uploader_is_refused(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DEBFULLNAME", raising=False)
    monkeypatch.delenv("DEBEMAIL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(GpupassError) as e:
        ppa.publish([], "noble", "owner/name", tmp_path)
    assert e.value.lines() == [
        "set DEBFULLNAME and DEBEMAIL to the uploader (as on the Launchpad key), not a placeholder"
    ]


@pytest.mark.parametrize(
    "series, target, message",
    [
        ("noble", "owner", "'owner' is not a PPA (expected owner/name, as in ppa:owner/name)"),
        ("Noble 24.04", "owner/name", "SERIES='Noble 24.04': expected Ubuntu series names, e.g. noble,resolute"),
    ],
)
def test_bad_settings_name_what_is_expected(series: str, target: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(GpupassError) as e:
        ppa.publish([], series, target, tmp_path)
    assert e.value.lines() == [message]


def test_ppa_shorthand_is_accepted() -> None:
    target = ppa.Target.parse("ppa:owner/name")
    assert (target.section, target.incoming, str(target)) == ("ppa-owner-name", "~owner/ubuntu/name/", "ppa:owner/name")
