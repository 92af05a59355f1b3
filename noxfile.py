"""gpupass sessions. Every step is also `python -m gpupass ...`; these only orchestrate.

nox -s build-deb -- MODEL=aurora-z     build build/gpupass-aurora-z.deb
nox -s tests                           every test tier (what CI runs)
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "vm-smoke"]
nox.options.reuse_existing_virtualenvs = True

PYTEST_TIERS = {
    "unit": "not tool and not install and not vm",
    "tool": "tool",
    "install": "install",
    "vm": "vm",
}


def model_arg(session: nox.Session) -> str:
    """MODEL=<id> from the session arguments or the environment."""
    models = sorted(f[:-5] for f in os.listdir("models") if f.endswith(".toml"))
    args = [a.split("=", 1)[1] for a in session.posargs if a.startswith("MODEL=")]
    chosen = args[-1] if args else os.environ.get("MODEL")
    if not chosen or chosen not in models:
        problem = f"unknown model {chosen!r}" if chosen else "no model given"
        session.error(f"{problem}. Usage: nox -s build-deb -- MODEL=<id>   (known models: {', '.join(models)})")
    return chosen


@nox.session(name="build-deb")
def build_deb(session: nox.Session) -> None:
    """Build build/gpupass-<model>.deb: nox -s build-deb -- MODEL=aurora-z"""
    model = model_arg(session)
    session.install("-e", ".[build]")
    session.run("python", "-m", "gpupass", "build-deb", model)


@nox.session(name="build-source")
def build_source(session: nox.Session) -> None:
    """Build the source package for a PPA upload into build/: nox -s build-source -- MODEL=aurora-z"""
    model = model_arg(session)
    session.install("-e", ".[build]")
    session.run("python", "-m", "gpupass", "build-source", model)


@nox.session
def publish(session: nox.Session) -> None:
    """Build the model's .deb and add it to the local signed apt repository build/repo:
    nox -s publish -- MODEL=aurora-z (signing key: $GPUPASS_SIGNING_KEY)"""
    model = model_arg(session)
    session.install("-e", ".[build]")
    session.run("python", "-m", "gpupass", "build-deb", model)
    debs = sorted(str(p) for p in Path("build").glob(f"gpupass-{model}_*_all.deb"))
    session.run("python", "-m", "gpupass", "publish", *debs)


@nox.session
def preview(session: nox.Session) -> None:
    """Print the resolved model and every rendered file: nox -s preview -- MODEL=aurora-z"""
    model = model_arg(session)
    session.install("-e", ".[build]")
    session.run("python", "-m", "gpupass", "preview", model)


# The laptop side talks to libvirt through Debian's python3-libvirt, as the installed
# package does. PyPI's libvirt-python would have to be compiled against libvirt-dev (gcc,
# pkg-config) and could differ from the daemon under test; so the sessions that run the
# libvirt tests see the system's site-packages. What pip installs into the session still
# comes first on sys.path, so only libvirt (which nothing pip-installs) is taken from Debian.
SYSTEM_LIBVIRT = ["--system-site-packages"]


def pytest(session: nox.Session, *args: str) -> None:
    session.install("-e", ".[test]")
    extra = [a for a in session.posargs if not a.startswith("MODEL=")]
    session.run("python", "-m", "pytest", *args, *extra)


@nox.session(venv_params=SYSTEM_LIBVIRT)
def tests(session: nox.Session) -> None:
    """Unit and property tests, real tools (iasl, lintian, libvirtd), install in a chroot (root)."""
    pytest(session, "-m", "not vm")


@nox.session
def unit(session: nox.Session) -> None:
    """Fast tier: model validation, golden files, properties. Pass --regenerate to rewrite golden files."""
    pytest(session, "-m", PYTEST_TIERS["unit"])


@nox.session(venv_params=SYSTEM_LIBVIRT)
def tool(session: nox.Session) -> None:
    """Tests against the real tools: iasl, dpkg-buildpackage, lintian, libvirtd, virt-install."""
    pytest(session, "-m", PYTEST_TIERS["tool"])


@nox.session
def install(session: nox.Session) -> None:
    """apt install / purge of the built package in an mmdebstrap chroot (needs root)."""
    pytest(session, "-m", PYTEST_TIERS["install"])


@nox.session(name="vm-smoke", venv_params=SYSTEM_LIBVIRT)
def vm_smoke(session: nox.Session) -> None:
    """Boot each model's own domain under libvirt (TCG), as is and through `gpupass vm define`:
    battery, AC adapter and SMBIOS seen by the guest."""
    pytest(session, "-m", PYTEST_TIERS["vm"])


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, the tests and this file."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", "pkg", "tests", "noxfile.py", "benchmarks")


@nox.session
def benchmark(session: nox.Session) -> None:
    """Print the wall time of a gpupass build next to a bare dpkg-buildpackage of its source."""
    session.install("-e", ".[build]")
    session.run("python", "benchmarks/build_time.py", *session.posargs)
