"""Shared fixtures. Golden files are rewritten with ``pytest --regenerate``
(``nox -s tests -- --regenerate``); CI runs without it and fails on drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpupass import model
from gpupass.build import debsrc, version

from . import chroot

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.toml"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regenerate", action="store_true", help="rewrite golden files from the current output")


@pytest.fixture(scope="session")
def regenerate(request: pytest.FixtureRequest) -> bool:
    return request.config.getoption("--regenerate")


@pytest.fixture(scope="session")
def aurora() -> model.Model:
    return model.load(ROOT / "models" / "aurora-z.toml", "models/aurora-z.toml")


@pytest.fixture(scope="session")
def aurora_text() -> str:
    return (ROOT / "models" / "aurora-z.toml").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def aurora_version() -> str:
    """The Debian version this checkout gives aurora-z's package (from its git history)."""
    return version.of_model(ROOT / "models" / "aurora-z.toml").debian


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, aurora: model.Model) -> Path:
    """build/ as `gpupass build-deb aurora-z` leaves it (in a scratch directory)."""
    out = tmp_path_factory.mktemp("build")
    debsrc.build_deb(aurora, ROOT / "models" / "aurora-z.toml", out)
    return out


@pytest.fixture(scope="session")
def plain_chroot_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chroot.require_root_tools()
    return chroot.make_tarball(tmp_path_factory.mktemp("chroot"), include=("python3", "systemd"))


@pytest.fixture
def plain_chroot(plain_chroot_tarball: Path, tmp_path: Path) -> chroot.Chroot:
    return chroot.unpack(plain_chroot_tarball, tmp_path / "root")


# One libvirtd for the whole session, shared by the libvirt and vm-smoke tests.
from .libvirt import libvirtd_fixture  # noqa: E402, F401  (provides the "libvirtd" fixture)
