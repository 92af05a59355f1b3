"""The local signed apt repository, consumed by apt in a chroot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gpupass.errors import GpupassError
from gpupass.packaging import repo

from . import chroot

pytestmark = pytest.mark.install


def test_no_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GPUPASS_SIGNING_KEY", raising=False)
    with pytest.raises(GpupassError) as e:
        repo.publish([tmp_path / "x.deb"], tmp_path / "repo")
    assert e.value.lines() == [
        "no signing key for the repository",
        "hint: pass --key KEYID or set GPUPASS_SIGNING_KEY (a key in your gpg keyring; `gpg --list-secret-keys`)",
    ]


def test_apt_installs_from_the_signed_repository(
    plain_chroot: chroot.Chroot, built: Path, signing_key: str, tmp_path: Path, aurora_version: str
) -> None:
    deb = next(built.glob("gpupass-aurora-z_*_all.deb"))
    published = tmp_path / "repo"
    repo.publish([deb], published, signing_key)
    assert (published / "dists/gpupass/InRelease").exists()

    inside = plain_chroot.root / "srv/gpupass"
    shutil.copytree(published, inside)
    sources = plain_chroot.root / "etc/apt/sources.list.d/gpupass.sources"
    sources.write_text(repo.sources_entry(Path("/srv/gpupass")))
    plain_chroot.run("apt-get", "update", "-o", "Dir::Etc::SourceList=/dev/null")
    installed = plain_chroot.run("apt-get", "install", "-y", "gpupass-aurora-z")
    assert f"Setting up gpupass-aurora-z ({aurora_version})" in installed.stdout

    # A Release file changed after signing is refused.
    in_release = inside / "dists/gpupass/InRelease"
    in_release.write_text(in_release.read_text().replace("Label: gpupass", "Label: gpupasS"))
    tampered = plain_chroot.run("apt-get", "update", "-o", "Dir::Etc::SourceList=/dev/null", check=False)
    assert "The following signatures were invalid" in tampered.stdout + tampered.stderr
