"""The install tier's chroot phases, started together.

Four phases run a body in a system of each release: the install/remove/purge rows
(test_releases), the upgrade rows (test_upgrade), piuparts (test_piuparts) and `gpupass setup`
(test_setup_chroot). Each spends most of its time in dpkg, the initramfs tools and apt, waiting
on the disk and the mirror, and one phase alone left the two cores idle a third of the time.
So the first install-tier test starts every phase the session selected, in threads
(chroot.Rows), after making their inputs (the builds, the signed repositories) one after
another in the main thread; each phase's tests then wait for their own rows. The install tier
runs after the unit and tool tiers (conftest's TierOrder): nothing in a row's thread may meet a
unit test's change to the process's environment (an emptied PATH).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from . import chroot

# A phase is selected when one of these tests is: its module and its tests' names.
PHASES = {
    "boot": ("tests/test_releases.py", "test_install_remove_purge_boot_files"),
    "upgrade": ("tests/test_upgrade.py", "test_upgrade_refused_upgrade_and_model_switch"),
    "piuparts": ("tests/test_piuparts.py", "test_piuparts_installs_upgrades_and_purges_from_the_repository"),
    "setup": ("tests/test_setup_chroot.py", None),  # every test of the module reads it
}


def selected(session: pytest.Session, phase: str) -> list[chroot.Release]:
    """The releases of ``phase``'s selected rows (their ``release`` parameter; for setup, whose
    tests read every row, the whole matrix)."""
    path, test = PHASES[phase]
    items = [i for i in session.items if i.nodeid.startswith(f"{path}::")]
    if test is None:
        return list(chroot.releases()) if items else []
    names = {i.callspec.params["release"].name for i in items if getattr(i, "originalname", None) == test}
    return [r for r in chroot.releases() if r.name in names]


class Phases:
    """The phases' inputs, made once when first asked for, and their rows, started by ``start``."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        self.rows: dict[str, chroot.Rows] = {}

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

        return make_builds(self._factory)

    def start(self) -> None:
        """Every selected phase's rows, at once (inputs first, one after another)."""
        session = self._request.session
        wanted = {phase: selected(session, phase) for phase in PHASES}
        if not any(wanted.values()):
            return
        value = self._request.getfixturevalue
        tarballs = value("release_tarballs")
        starters = {}
        if wanted["boot"]:
            from .test_releases import install_remove_purge_boot_files

            built = value("built")
            starters["boot"] = lambda release, root: install_remove_purge_boot_files(release, root, built)
        if wanted["upgrade"]:
            from .test_upgrade import upgrade_refused_upgrade_and_model_switch

            versions, other, aurora = self.versions, self.other_model, value("aurora")
            starters["upgrade"] = lambda release, root: upgrade_refused_upgrade_and_model_switch(
                release, root, versions, other, aurora
            )
        if wanted["piuparts"]:
            from .test_piuparts import PIUPARTS_RELEASES, run_piuparts

            builds = self.piuparts_builds
            wanted["piuparts"] = [r for r in wanted["piuparts"] if r.name in PIUPARTS_RELEASES]
            starters["piuparts"] = lambda release, root: run_piuparts(release, root, builds)
        if wanted["setup"]:
            from .test_setup_chroot import ROWS, make_repository, scenario

            published = make_repository(self._factory, value("built"), value("built_tool"))
            wanted["setup"] = [r for r in wanted["setup"] if r.name in ROWS]
            starters["setup"] = lambda release, root: scenario(release, root, published)
        for phase, body in starters.items():
            make = chroot.unpack_only if phase == "piuparts" else chroot.system
            self.rows[phase] = chroot.Rows(wanted[phase], tarballs, self._factory.mktemp(phase), body, make)

    def close(self) -> None:
        for rows in self.rows.values():
            rows.close()


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
    """At the first install-tier test, every selected phase starts."""
    if request.node.get_closest_marker("install"):
        request.getfixturevalue("chroot_phases")
