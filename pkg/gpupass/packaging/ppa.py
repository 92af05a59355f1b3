"""Signed source uploads for a Launchpad PPA: one per model and Ubuntu series, and the tool
package ``gpupass`` (``apt install gpupass``, then ``gpupass setup``) beside them.

A PPA builds each source package for the one series its changelog names, so a model
goes up once per series, as ``<version>~<series>1`` (a later series sorts higher, and
all of them below the plain version of a local build). Every series of a version shares
one orig tarball, byte for byte: the first upload carries it (``-sa``), the others refer
to it (``-sd``); Launchpad refuses a second, different orig under the same name.

Debian's dput has no ``ppa:owner/name`` shorthand, so gpupass writes a dput
configuration for the PPA. Nothing leaves the machine without ``--upload``: otherwise
``dput --simulate`` checks the upload (signatures, checksums) and says what would go
where. dput leaves a ``.upload`` log next to each .changes it uploaded; a version with
such a log is refused before dput runs.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import GpupassError
from ..model import Model
from . import debsrc, repo, toolpkg, tools, version

HOST = "ppa.launchpad.net"
SERIES_NAME = re.compile(r"[a-z]+")
PPA_NAME = re.compile(r"([a-z0-9][a-z0-9+.-]*)/([a-z0-9][a-z0-9+.-]*)")


@dataclass(frozen=True)
class Target:
    owner: str
    name: str

    @classmethod
    def parse(cls, text: str) -> Target:
        match = PPA_NAME.fullmatch(text.removeprefix("ppa:"))
        if not match:
            raise GpupassError(f"{text!r} is not a PPA (expected owner/name, as in ppa:owner/name)")
        return cls(*match.groups())

    @property
    def section(self) -> str:
        """The dput host of this PPA in the generated configuration."""
        return f"ppa-{self.owner}-{self.name}"

    @property
    def incoming(self) -> str:
        return f"~{self.owner}/ubuntu/{self.name}/"

    def __str__(self) -> str:
        return f"ppa:{self.owner}/{self.name}"


def dput_config(target: Target, series: list[str]) -> str:
    return "\n".join(
        [
            f"[{target.section}]",
            f"fqdn = {HOST}",
            "method = ftp",
            f"incoming = {target.incoming}",
            "login = anonymous",
            "allow_unsigned_uploads = 0",
            f"allowed_distributions = ^({'|'.join(series)})$",
            "",
        ]
    )


def parse_series(text: str) -> list[str]:
    series = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in series if not SERIES_NAME.fullmatch(s)]
    if not series or bad:
        raise GpupassError(f"SERIES={text!r}: expected Ubuntu series names, e.g. noble,resolute")
    return list(dict.fromkeys(series))


def uploader() -> str:
    """Maintainer and Changed-By of an upload: the person who signs it (debsrc.maintainer,
    which falls back to the .invalid placeholder when either variable is unset)."""
    who = debsrc.maintainer()
    if who.endswith(".invalid>"):
        raise GpupassError("set DEBFULLNAME and DEBEMAIL to the uploader (as on the Launchpad key), not a placeholder")
    return who


def upload_log(changes: Path, target: Target) -> Path:
    """Where dput records that it uploaded ``changes`` to ``target``."""
    return changes.with_name(f"{changes.stem}.{target.section}.upload")


@dataclass(frozen=True)
class Upload:
    package: str
    version: str
    series: str
    changes: Path


def changes_name(package: str, debian_version: str) -> str:
    return f"{package}_{debian_version}_source.changes"


@dataclass(frozen=True)
class Source:
    """One source package to upload: its name and version, how its tree is made (with the orig
    tarball beside it) and how its changelog is written for a series."""

    package: str
    ver: version.Version
    prepare: Callable[[Path], Path]  # scratch directory -> the tree
    changelog: Callable[[Path, str, str], None]  # tree, series, Debian version


def model_source(model: Model, model_file: Path) -> Source:
    ver = version.of_model(model_file)
    return Source(
        model.package,
        ver,
        lambda scratch: debsrc.prepare(model, model_file, scratch, ver),
        lambda tree, series, v: debsrc.write_changelog(model, tree, ver, series, v),
    )


def tool_source() -> Source:
    """The tool package gpupass, which ``apt install gpupass`` and gpupass setup start from."""
    ver = version.of_inputs(toolpkg.INPUTS)
    return Source(
        toolpkg.PACKAGE,
        ver,
        lambda scratch: toolpkg.prepare(scratch, ver),
        lambda tree, series, v: toolpkg.write_changelog(tree, ver, series, v),
    )


def plan(
    source: Source, series: list[str], out_dir: Path, target: Target, skip_uploaded: bool = False
) -> list[tuple[str, str]]:
    """The (series, version) uploads of ``source``. It must be committed, and a series whose
    version is already uploaded is refused, or with ``skip_uploaded`` (the tool package, which
    rides along with whichever models are published) left out and said so."""
    version.require_clean(source.ver, source.package)
    planned = []
    for s in series:
        v = source.ver.for_series(s)
        log = upload_log(out_dir / changes_name(source.package, v), target)
        if not log.exists():
            planned.append((s, v))
        elif skip_uploaded:
            print(f"left out {source.package} {v} for {s}: already uploaded to {target} ({log})")
        else:
            raise GpupassError(
                f"{source.package} {v} ({s}) is already uploaded to {target} ({log})",
                hint=f"a PPA takes a version once: leave {s} out of SERIES, or commit a change for a new version",
            )
    return planned


def build(source: Source, planned: list[tuple[str, str]], key: str, out_dir: Path) -> list[Upload]:
    """Signed uploads of ``source`` for the planned series, delivered into ``out_dir``: the first
    carries the orig tarball, the others refer to it."""
    if not planned:
        return []
    ver = source.ver
    orig_name = f"{source.package}_{ver.upstream}.orig.tar.gz"
    with tempfile.TemporaryDirectory(prefix="gpupass-ppa-") as tmp:
        tree = source.prepare(Path(tmp))
        uploads = []
        for i, (s, v) in enumerate(planned):
            source.changelog(tree, s, v)
            debsrc.dpkg_source(tree, source.package, v, ver.epoch)
            changes = tree.parent / changes_name(source.package, v)
            tools.run(
                "dpkg-genchanges",
                "-S",
                "-sa" if i == 0 else "-sd",
                f"-O{changes}",
                cwd=tree,
                env={"SOURCE_DATE_EPOCH": str(ver.epoch)},
                what=f"writing the {s} upload's .changes",
            )
            tools.run("debsign", "--no-conf", f"-k{key}", changes, what=f"signing the {s} upload")
            uploads.append(Upload(source.package, v, s, out_dir / changes.name))
        orig = tree.parent / orig_name
        previous = out_dir / orig_name
        if previous.exists() and previous.read_bytes() != orig.read_bytes():
            raise GpupassError(
                f"{previous}: differs from the orig tarball just made for the same version",
                hint="Launchpad refuses a changed orig tarball; was the tree changed without a commit?",
            )
        shutil.rmtree(tree)
        debsrc.deliver([p for p in tree.parent.iterdir() if p.is_file()], out_dir)
    return uploads


def dput(uploads: list[Upload], config: Path, target: Target, upload: bool) -> None:
    for u in uploads:
        log = upload_log(u.changes, target)
        if log.exists():  # checked before building too; dput must never see it
            raise GpupassError(f"{u.package} {u.version} ({u.series}) is already uploaded to {target} ({log})")
    for u in uploads:
        args = ["-c", config, *([] if upload else ["--simulate"]), target.section, u.changes]
        result = tools.run("dput", *args, what=f"{'uploading' if upload else 'checking'} {u.changes.name}")
        verb = "uploaded" if upload else "would upload"
        print(f"{verb} {u.package} {u.version} for {u.series} to {target} (ftp://{HOST}/{target.incoming})")
        for line in result.stdout.splitlines():
            if line.startswith("Uploading"):
                print(f"  {line}")


def publish(
    models: list[tuple[Model, Path]],
    series_text: str,
    ppa_text: str,
    out_dir: Path,
    upload: bool = False,
    key: str | None = None,
) -> list[Upload]:
    """Build, sign and (simulate the) upload of every model, and of the tool package, for
    every series."""
    target, series = Target.parse(ppa_text), parse_series(series_text)
    uploader()  # Maintainer and Changed-By come from the same variables (debsrc.maintainer)
    key = repo.signing_key(key)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = out_dir / f"dput-{target.section}.cf"
    config.write_text(dput_config(target, series), encoding="utf-8")
    # Every source is checked (committed, not uploaded) before anything is built.
    sources = [model_source(m, f) for m, f in models]
    plans = [(source, plan(source, series, out_dir, target)) for source in sources]
    tool = tool_source()
    plans.append((tool, plan(tool, series, out_dir, target, skip_uploaded=True)))
    uploads = []
    for source, planned in plans:
        uploads += build(source, planned, key, out_dir)
    dput(uploads, config, target, upload)
    print(f"dput configuration: {config}")
    return uploads
