"""The install tier's chroot work, started when the session starts.

Five phases run a body in a system of each release: the install/remove/purge rows
(test_releases), the upgrade rows (test_upgrade), piuparts of a model (test_piuparts), piuparts
of the tool package (test_piuparts, Debian 13 only) and `gpupass setup` (test_setup_chroot); two
jobs run one body in the plain Debian 12 chroot: autopkgtest (test_autopkgtest) and piuparts on
a build that leaves a file behind (test_piuparts). Each spends most of its time in dpkg, the
initramfs tools and apt, and the unit and tool tiers keep one core busy at most. So the first
test of a session that selected any of them starts them all, in threads (chroot.Rows, a pool
for the jobs), each as soon as its inputs are made (the builds, the signed repositories: one
after another in the main thread, which is why the first test waits for them); their tests,
in the install tier, which runs after the unit and tool tiers (conftest's TierOrder), wait for
their own rows. What they start on the host gets chroot.HOST_ENV, and what runs inside a
chroot its own environment, so that no unit test's change to the process's (an emptied PATH,
a GNUPGHOME of its own) reaches them.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from . import chroot

# A phase is selected when one of these tests is: its module and its tests' names.
PHASES = {
    "boot": ("tests/test_releases.py", "test_install_remove_purge_boot_files"),
    "upgrade": ("tests/test_upgrade.py", "test_upgrade_refused_upgrade_and_model_switch"),
    "piuparts": ("tests/test_piuparts.py", "test_piuparts_installs_upgrades_and_purges_from_the_repository"),
    "tool": (
        "tests/test_piuparts.py",
        ("test_piuparts_installs_and_purges_the_tool", "test_piuparts_replaces_the_tool_with_a_model_and_purges_it"),
    ),
    "setup": ("tests/test_setup_chroot.py", None),  # every test of the module reads it
}
# A job likewise: one body, no release.
JOBS = {
    "autopkgtest": ("tests/test_autopkgtest.py", "test_autopkgtest_passes_in_a_chroot_testbed"),
    "leftover": ("tests/test_piuparts.py", "test_piuparts_fails_a_build_that_leaves_a_file_after_purge"),
}


def chosen(session: pytest.Session, path: str, tests: str | tuple[str, ...]) -> list[pytest.Item]:
    tests = (tests,) if isinstance(tests, str) else tests
    return [i for i in session.items if i.nodeid.startswith(f"{path}::") and getattr(i, "originalname", None) in tests]


def selected(session: pytest.Session, phase: str) -> list[chroot.Release]:
    """The releases of ``phase``'s selected rows: their ``release`` parameter, or the whole
    matrix for tests without one (each phase narrows it to its own rows) and for setup, whose
    tests read every row."""
    path, tests = PHASES[phase]
    if tests is None:
        return list(chroot.releases()) if any(i.nodeid.startswith(f"{path}::") for i in session.items) else []
    params = [getattr(i, "callspec", None) for i in chosen(session, path, tests)]
    if any(p is None or "release" not in p.params for p in params):
        return list(chroot.releases())
    names = {p.params["release"].name for p in params}
    return [r for r in chroot.releases() if r.name in names]


class Phases:
    """The inputs, made once when first asked for, and the rows and jobs ``start`` starts."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        self.rows: dict[str, chroot.Rows] = {}
        self.jobs: dict[str, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=len(JOBS), thread_name_prefix="job")

    @functools.cached_property
    def versions(self):
        from .test_upgrade import make_versions

        return make_versions(self._factory)

    @functools.cached_property
    def other_model(self) -> Path:
        from .test_upgrade import make_other_model

        return make_other_model(self._factory)

    @functools.cached_property
    def piuparts_builds(self):
        from .test_piuparts import make_builds

        return make_builds(self._factory, self._request.getfixturevalue("built_tool"))

    @functools.cached_property
    def autopkgtest_package(self):
        from .test_autopkgtest import make_package

        return make_package(self._factory.mktemp("source"), self._request.getfixturevalue("aurora"))

    def start(self) -> None:
        """Every selected phase's rows and every selected job, each as soon as its inputs are made."""
        session = self._request.session
        wanted = {phase: selected(session, phase) for phase in PHASES}
        jobs = {job for job, (path, test) in JOBS.items() if chosen(session, path, test)}
        if not any(wanted.values()) and not jobs:
            return
        value = self._request.getfixturevalue
        tarballs = value("release_tarballs") if any(wanted.values()) else {}

        def rows(phase: str, body, make=chroot.system) -> None:
            self.rows[phase] = chroot.Rows(wanted[phase], tarballs, self._factory.mktemp(phase), body, make)

        def job(name: str, body) -> None:
            plain = value("plain_chroot_tarball")
            scratch = self._factory.mktemp(name)
            self.jobs[name] = self._pool.submit(lambda: body(chroot.unpack(plain, scratch / "root"), scratch))

        if wanted["boot"]:
            from .test_releases import install_remove_purge_boot_files

            built = value("built")
            rows("boot", lambda release, root: install_remove_purge_boot_files(release, root, built))
        if "autopkgtest" in jobs:
            from .test_autopkgtest import run_autopkgtest

            package = self.autopkgtest_package
            job("autopkgtest", lambda root, scratch: (run_autopkgtest(root, package, scratch / "out"), scratch / "out"))
        if wanted["upgrade"]:
            from .test_upgrade import upgrade_refused_upgrade_and_model_switch

            versions, other, aurora = self.versions, self.other_model, value("aurora")
            rows(
                "upgrade",
                lambda release, root: upgrade_refused_upgrade_and_model_switch(release, root, versions, other, aurora),
            )
        if wanted["piuparts"] or wanted["tool"] or "leftover" in jobs:
            from .test_piuparts import PIUPARTS_RELEASES, TOOL_RELEASE, run_leftover, run_piuparts, run_tool_piuparts

            builds = self.piuparts_builds
            if wanted["piuparts"]:
                wanted["piuparts"] = [r for r in wanted["piuparts"] if r.name in PIUPARTS_RELEASES]
                rows("piuparts", lambda release, root: run_piuparts(release, root, builds), chroot.unpack_only)
            if wanted["tool"]:
                wanted["tool"] = [r for r in wanted["tool"] if r.name == TOOL_RELEASE]
                rows("tool", lambda release, root: run_tool_piuparts(release, root, builds), chroot.unpack_only)
            if "leftover" in jobs:
                job("leftover", lambda root, scratch: run_leftover(root, builds))
        if wanted["setup"]:
            from .test_setup_chroot import ROWS, make_repository, scenario

            inputs = make_repository(self._factory, value("built"), value("built_tool"))
            wanted["setup"] = [r for r in wanted["setup"] if r.name in ROWS]
            rows("setup", lambda release, root: scenario(release, root, inputs))

    def close(self) -> None:
        for rows in self.rows.values():
            rows.close()
        self._pool.shutdown(wait=True)


@pytest.fixture(scope="session")
def chroot_phases(request: pytest.FixtureRequest):
    phases = Phases(request)
    try:
        phases.start()
        yield phases
    finally:
        phases.close()


@pytest.fixture(autouse=True)
def chroot_phases_started(request: pytest.FixtureRequest) -> None:
    """At the session's first test, every selected phase and job starts. A test of another tier
    that happens to be first is not failed or skipped by them: what went wrong (no root, a build
    that failed) is raised again to the install-tier tests that ask for them."""
    if request.node.get_closest_marker("install"):
        request.getfixturevalue("chroot_phases")
        return
    try:
        request.getfixturevalue("chroot_phases")
    except (Exception, pytest.skip.Exception, pytest.fail.Exception):
        pass
