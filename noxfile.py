"""gpupass sessions. Every step is also `python -m gpupass ...`; these only orchestrate.

nox -s build-deb MODEL=aurora-z        build build/gpupass-aurora-z.deb
nox -s build-tool                      build build/gpupass_<version>_all.deb (the tool package)
nox -s build-all                       every model, in parallel, skipping unchanged ones
nox -s ppa -- MODEL=all SERIES=noble PPA=owner/name [--upload]
nox -s piuparts MODEL=aurora-z         piuparts' install-upgrade-purge test of one model (root)
nox -s tests                           every test tier (what CI runs)

Settings are NAME=VALUE words: right after the session names (`nox -s build-deb
MODEL=aurora-z`), after `--` (nox's session arguments), or in the environment.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
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
SETTING = re.compile(r"[A-Z][A-Z0-9_]*=")


def _move_settings_after_dashes(argv: list[str]) -> list[str] | None:
    """`nox -s build-deb MODEL=aurora-z` as `nox -s build-deb -- MODEL=aurora-z`.

    nox reads every word after `-s` as a session name and has no hook to take some of
    them back: by the time this file runs, the command line is parsed. What it does
    document is that the noxfile is a plain module run by nox's own interpreter, so
    when NAME=VALUE words stand before `--`, nox is started again with them moved
    after it, where they are session arguments (`session.posargs`). None: no change.
    """
    dashes = argv.index("--") if "--" in argv else len(argv)
    settings = [a for a in argv[:dashes] if SETTING.match(a)]
    if not settings:
        return None
    options = [a for a in argv[:dashes] if not SETTING.match(a)]
    # nox has changed into this file's directory: name the noxfile absolutely.
    return [*options, "--noxfile", os.path.abspath(__file__), "--", *settings, *argv[dashes + 1 :]]


if __name__ == "user_nox_module" and (_argv := _move_settings_after_dashes(sys.argv[1:])) is not None:
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "nox", *_argv])


def setting(session: nox.Session, name: str) -> str | None:
    """NAME=value from the session arguments (the last wins), else $NAME."""
    given = [a.split("=", 1)[1] for a in session.posargs if a.startswith(f"{name}=")]
    return given[-1] if given else os.environ.get(name) or None


def known_models() -> list[str]:
    return sorted(f[:-5] for f in os.listdir("models") if f.endswith(".toml"))


def model_arg(session: nox.Session, allow_all: bool = False) -> str:
    """MODEL=<id> (or MODEL=all where allowed) from the session arguments or the environment."""
    models = known_models()
    chosen = setting(session, "MODEL")
    if not chosen or (chosen not in models and not (allow_all and chosen == "all")):
        problem = f"unknown model {chosen!r}" if chosen else "no model given"
        session.error(
            f"{problem}. Usage: nox -s {session.name} MODEL=<id>{'|all' if allow_all else ''}"
            f"   (known models: {', '.join(models)})"
        )
    return chosen


COMPILE_VENV = "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_path('purelib'), quiet=2, workers=0)"
# What decides what `pip install -e .[extra]` puts into a venv (the code itself is linked, not copied).
INSTALL_INPUTS = ("pyproject.toml", "setup.py")


def install_project(session: nox.Session, extra: str) -> None:
    """pip install -e .[extra], then the venv's modules compiled to bytecode; once per venv
    and install inputs.

    virtualenv seeds setuptools without bytecode when PYTHONDONTWRITEBYTECODE is set (as on
    this project's CI machine), and Python then compiles setuptools afresh in every process
    that imports it: a quarter of a second in each model's stdeb run. compileall writes the
    bytecode pip would have written.

    nox reuses the venv, but pip took 2.5 s of every `nox -s build-deb` to find that nothing
    was to be done: a stamp in the venv holds a hash of the install inputs and the extra, and
    a reused venv whose stamp matches is left as it is. A new venv has no stamp; a changed
    pyproject.toml or setup.py (new dependencies) changes the hash.
    """
    digest = hashlib.sha256(extra.encode())
    for name in INSTALL_INPUTS:
        digest.update(b"\0" + Path(name).read_bytes())
    stamp = Path(session.virtualenv.location) / f"gpupass-installed-{extra}"
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == digest.hexdigest():
        return
    session.install("-e", f".[{extra}]")
    # run_always: skipped, like install, by `nox -R` (no stamp then: nothing was installed).
    if session.run_always("python", "-c", COMPILE_VENV, silent=True) is not None:
        stamp.write_text(digest.hexdigest(), encoding="utf-8")


@nox.session(name="model", python=False)
def chosen_model(session: nox.Session) -> None:
    """Print the model the settings choose (MODEL=<id>), without building anything."""
    print(f"MODEL={model_arg(session)}")


@nox.session(name="build-deb")
def build_deb(session: nox.Session) -> None:
    """Build build/gpupass-<model>.deb: nox -s build-deb MODEL=aurora-z"""
    model = model_arg(session)
    install_project(session, "build")
    session.run("python", "-m", "gpupass", "build-deb", model)


@nox.session(name="build-source")
def build_source(session: nox.Session) -> None:
    """Build the source package (local, unsigned) into build/: nox -s build-source MODEL=aurora-z"""
    model = model_arg(session)
    install_project(session, "build")
    session.run("python", "-m", "gpupass", "build-source", model)


@nox.session(name="build-tool")
def build_tool(session: nox.Session) -> None:
    """Build build/gpupass_<version>_all.deb, the tool package without a model"""
    install_project(session, "build")
    session.run("python", "-m", "gpupass", "build-tool")


@nox.session(name="build-all")
def build_all(session: nox.Session) -> None:
    """Build every model's .deb into build/ in parallel; models whose inputs did not change are skipped."""
    install_project(session, "build")
    session.run("python", "-m", "gpupass", "build-all")


@nox.session
def ppa(session: nox.Session) -> None:
    """Signed uploads to a Launchpad PPA per model and series (dput --simulate unless --upload).

    nox -s ppa -- MODEL=<id>|all SERIES=noble,resolute PPA=owner/name [--upload]
    (DEBFULLNAME, DEBEMAIL: the uploader; GPUPASS_SIGNING_KEY: the key debsign signs with)"""
    model = model_arg(session, allow_all=True)
    series, target = setting(session, "SERIES"), setting(session, "PPA")
    if not series or not target:
        session.error("Usage: nox -s ppa -- MODEL=<id>|all SERIES=noble,resolute PPA=owner/name [--upload]")
    upload = ["--upload"] if "--upload" in session.posargs else []
    install_project(session, "build")
    session.run("python", "-m", "gpupass", "ppa", model, "--series", series, "--ppa", target, *upload)


@nox.session
def publish(session: nox.Session) -> None:
    """Build every model (or MODEL=<id>) into the local signed apt repository build/repo ($GPUPASS_SIGNING_KEY)."""
    model = model_arg(session, allow_all=True) if setting(session, "MODEL") else "all"
    install_project(session, "build")
    session.run("python", "-m", "gpupass", "publish", "--models", model)


@nox.session
def preview(session: nox.Session) -> None:
    """Print the resolved model and every rendered file: nox -s preview MODEL=aurora-z"""
    model = model_arg(session)
    install_project(session, "build")
    session.run("python", "-m", "gpupass", "preview", model)


# The laptop side talks to libvirt through Debian's python3-libvirt, as the installed
# package does. PyPI's libvirt-python would have to be compiled against libvirt-dev (gcc,
# pkg-config) and could differ from the daemon under test; so the sessions that run the
# libvirt tests see the system's site-packages. What pip installs into the session still
# comes first on sys.path, so only libvirt (which nothing pip-installs) is taken from Debian.
SYSTEM_LIBVIRT = ["--system-site-packages"]


def pytest(session: nox.Session, *args: str) -> None:
    install_project(session, "test")
    extra = [a for a in session.posargs if not SETTING.match(a)]
    session.run("python", "-m", "pytest", *args, *extra)


@nox.session(venv_params=SYSTEM_LIBVIRT)
def tests(session: nox.Session) -> None:
    """Unit and property tests, real tools (iasl, lintian, libvirtd), install in a chroot (root)."""
    pytest(session, "-m", "not vm")


@nox.session(venv_params=SYSTEM_LIBVIRT)  # gpupass power's tests use libvirt's test driver
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
def piuparts(session: nox.Session) -> None:
    """Debian's piuparts on one model, Debian 12 and 13 (root): nox -s piuparts MODEL=aurora-z

    the model's previous version installed through apt, upgraded to the new .deb, purged
    (tests/test_piuparts.py)."""
    model = model_arg(session)
    session.env["GPUPASS_PIUPARTS_MODEL"] = model
    session.env["GPUPASS_RELEASES"] = "debian12,debian13"  # one row per Debian release
    pytest(session, "-m", PYTEST_TIERS["install"], "tests/test_piuparts.py")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff's checks and its formatting over the package, the tests, the benchmarks and this file."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", "pkg", "tests", "noxfile.py", "benchmarks")
    session.run("ruff", "format", "--check", "pkg", "tests", "noxfile.py", "benchmarks")


@nox.session
def benchmark(session: nox.Session) -> None:
    """Print build times: one model against a minimal debhelper package, build-all for N = 1, 4, 16 models."""
    install_project(session, "build")
    session.run("python", "benchmarks/build_time.py", *session.posargs)
