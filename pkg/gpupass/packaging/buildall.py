"""Every model at once: built in parallel across cores, unchanged models skipped.

A model is rebuilt only when its content key changes: a hash of the bytes of every input
(its model file and the shared inputs, see version.py), its version (which the git
history decides) and the versions of the tools that build it. The key is kept as
``build/gpupass-<id>.key`` next to the .deb it describes, so timestamps never matter and
a rerun with nothing changed only hashes files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import GpupassError
from ..model import Model
from . import debsrc, orig, tools, version

# The Debian packages whose versions shape the built .deb (Build-Depends and their tools);
# stdeb and the setuptools it drives come from the build's own Python environment.
BUILD_TOOLS = ("dpkg-dev", "debhelper", "dh-python", "python3-jinja2", "acpica-tools")
PYTHON_TOOLS = ("stdeb", "setuptools")
SKIPPED = ("__pycache__", ".pyc", ".egg-info")


@dataclass(frozen=True)
class Result:
    model: str
    deb: Path
    built: bool  # False: its inputs did not change since the last build


def input_files(root: Path) -> list[Path]:
    """The shared inputs' files, in a fixed order."""
    found = []
    for name in version.SHARED_INPUTS:
        top = root / name
        if top.is_file():
            found.append(top)
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.endswith(SKIPPED))
            found += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith(SKIPPED)]
    return found


def tool_versions() -> str:
    listing = tools.run(
        "dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *BUILD_TOOLS, what="reading the build tools' versions"
    ).stdout
    python = "".join(f"{name} {importlib.metadata.version(name)}\n" for name in PYTHON_TOOLS)
    return f"{listing}python {sys.version}\n{python}"


def content_key(shared: hashlib._Hash, model_file: Path, ver: version.Version, toolset: str) -> str:
    h = shared.copy()
    h.update(model_file.read_bytes())
    h.update(f"\0{ver.debian}\0{ver.epoch}\0{toolset}".encode())
    return h.hexdigest()


def key_file(out_dir: Path, model: Model) -> Path:
    return out_dir / f"{model.package}.key"


def up_to_date(out_dir: Path, model: Model, key: str) -> Path | None:
    """The .deb of the last build if it was built from exactly these inputs."""
    try:
        stored_key, deb_name = key_file(out_dir, model).read_text(encoding="utf-8").split()
    except (FileNotFoundError, ValueError):
        return None
    deb = out_dir / deb_name
    alias = out_dir / f"{model.package}.deb"
    return deb if stored_key == key and deb.is_file() and alias.is_file() else None


def build_one(model: Model, model_file: Path, ver: version.Version, key: str, out_dir: Path) -> Result:
    debsrc.build_deb(model, model_file, out_dir, ver)
    deb = out_dir / f"{model.package}_{ver.debian}_all.deb"
    part = key_file(out_dir, model).with_suffix(".key.part")
    part.write_text(f"{key} {deb.name}\n", encoding="utf-8")
    part.replace(key_file(out_dir, model))
    return Result(model.id, deb, True)


def versions(models: list[tuple[Model, Path]], root: Path, out_dir: Path) -> list[version.Version]:
    """Every model's version. A model's version depends only on the commit and on whether
    its inputs are dirty, so clean models' versions are kept per commit in
    ``build/versions.json``: a rerun asks git two questions, not three per model."""
    cache_file = out_dir / "versions.json"
    head = version.git(root, "rev-parse", "HEAD").strip()
    specs = {m.id: version.model_spec(f, root) for m, f in models}
    pathspecs = [*version.SHARED_INPUTS, *filter(None, specs.values())]
    status = version.git(root, "status", "--porcelain", "--untracked-files=all", "--", *pathspecs)
    changed = {line[3:].split(" -> ")[-1] for line in status.splitlines()}
    shared_dirty = bool(changed - set(specs.values()))
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        cache = {}
    known = cache.get("versions", {}) if cache.get("head") == head and "SOURCE_DATE_EPOCH" not in os.environ else {}

    def one(item: tuple[Model, Path]) -> version.Version:
        model, model_file = item
        clean = specs[model.id] is not None and not shared_dirty and specs[model.id] not in changed
        if clean and model.id in known:
            return version.Version(**known[model.id])
        return version.of_model(model_file, root)

    with ThreadPoolExecutor(max_workers=4) as pool:  # git only: cheap, I/O bound
        found = list(pool.map(one, models))
    clean = {m.id: dataclasses.asdict(v) for (m, _), v in zip(models, found, strict=True) if not v.dirty}
    if clean != known:
        part = cache_file.with_suffix(".json.part")
        part.write_text(json.dumps({"head": head, "versions": clean}, indent=1, sort_keys=True), encoding="utf-8")
        part.replace(cache_file)
    return found


def build_all(
    models: list[tuple[Model, Path]], out_dir: Path = paths.BUILD_DIR, jobs: int | None = None
) -> list[Result]:
    """Build every model whose content key changed, ``jobs`` at a time (default: one per core)."""
    root = paths.SOURCE_ROOT
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    shared = orig.digest(input_files(root), root)
    toolset = tool_versions()
    results: dict[str, Result] = {}
    todo = []
    for (model, model_file), ver in zip(models, versions(models, root, out_dir), strict=True):
        key = content_key(shared, model_file, ver, toolset)
        deb = up_to_date(out_dir, model, key)
        if deb:
            results[model.id] = Result(model.id, deb, False)
        else:
            todo.append((model, model_file, ver, key))
    failures = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # the work is in dpkg-buildpackage processes
        futures = {pool.submit(build_one, *job, out_dir): job[0].id for job in todo}
        for future, model_id in futures.items():
            try:
                results[model_id] = future.result()
            except GpupassError as e:
                failures += [f"{model_id}: {line}" for line in e.lines()]
    if failures:
        raise GpupassError(failures)
    return [results[m.id] for m, _ in models]
