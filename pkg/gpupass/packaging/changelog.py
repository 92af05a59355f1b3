"""A model package's debian/changelog: one entry for this build on top of the project's
history, which is kept in the repository as ``debian/changelog`` (edit it with ``dch``).

The entry carries what Launchpad and apt read from a changelog: the package's version,
the distribution (the Ubuntu series for a PPA upload), and who made it (Changed-By).
Its date is the version's SOURCE_DATE_EPOCH, so the same commit gives the same bytes.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

from .. import paths
from .version import LOCAL_COMMIT, Version

HISTORY = paths.DEBIAN_DIR / "changelog"


def date(epoch: int) -> str:
    """RFC 5322 date, as dch writes it (English names whatever the locale)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def entry(package: str, debian_version: str, distribution: str, maintainer: str, version: Version) -> str:
    change = f"Build of the package's inputs at commit {version.commit}: {version.subject}"
    if version.commit == LOCAL_COMMIT:
        change = "Built on this laptop by gpupass setup from the model it probed there."
    if version.dirty:
        change = f"Local build with uncommitted changes on top of commit {version.commit}."
    bullet = textwrap.fill(change, 78, initial_indent="  * ", subsequent_indent="    ", break_on_hyphens=False)
    return (
        f"{package} ({debian_version}) {distribution}; urgency=medium\n\n"
        f"{bullet}\n\n"
        f" -- {maintainer}  {date(version.epoch)}\n"
    )


def render(package: str, debian_version: str, distribution: str, maintainer: str, version: Version) -> str:
    """This build's entry followed by the project's history."""
    history = HISTORY.read_text(encoding="utf-8")
    return entry(package, debian_version, distribution, maintainer, version) + "\n" + history
