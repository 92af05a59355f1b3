"""Build times against Debian's own floor: prints figures, asserts nothing.

    python benchmarks/build_time.py [MODEL] [--runs N] [--counts 1,4,16]

1. the floor: ``dpkg-buildpackage -b`` of a minimal debhelper package (built here);
2. one model's build-deb as a user runs it again and again (goal: within 1.5x the floor),
   both ways: ``nox -s build-deb MODEL=<model>`` (its venv reused, as nox does) and
   ``python -m gpupass build-deb <model>`` (PYTHONPATH=pkg). Each round builds the floor,
   then one of each, so every figure has a floor built next to it; a round's ratio is its
   own, and the figures are medians over the rounds (the machine may be busy). A first
   round (cold: nox's venv, stdeb's output) is run and not counted;
3. ``gpupass build-all`` in a scratch clone holding N generated copies of the model,
   for each N (goal: 16 models within 6x one model on 2 cores), then a rerun with
   nothing changed (goal: under 0.5 s).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.5  # build-deb within this many times the floor

MINIMAL = {
    "debian/control": """Source: minimal
Section: misc
Priority: optional
Maintainer: Bench Mark <bench@example.org>
Build-Depends: debhelper-compat (= 13)
Standards-Version: 4.6.2
Rules-Requires-Root: no

Package: minimal
Architecture: all
Depends: ${misc:Depends}
Description: minimal debhelper package
 The floor gpupass's build time is measured against.
""",
    "debian/changelog": """minimal (1.0-1) unstable; urgency=medium

  * Benchmark floor.

 -- Bench Mark <bench@example.org>  Wed, 25 Nov 2026 12:00:00 +0000
""",
    "debian/rules": "#!/usr/bin/make -f\n%:\n\tdh $@\n",
    "debian/minimal.install": "hello.txt usr/share/minimal/\n",
    "debian/source/format": "3.0 (native)\n",
    "debian/copyright": "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n",
    "hello.txt": "hello\n",
}


def timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def measured(func) -> tuple[float, float]:
    """Wall and CPU (user + system, of this process and the processes it waited for) seconds."""
    before = cpu_seconds()
    wall = timed(func)
    return wall, cpu_seconds() - before


def cpu_seconds() -> float:
    """user + system time of this process and of the processes it waited for."""
    usages = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(r.ru_utime + r.ru_stime for r in usages)


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(a) for a in argv], cwd=cwd, check=True, capture_output=True, env={**os.environ, **(env or {})})


def minimal_build() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "minimal-1.0"
        for name, text in MINIMAL.items():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / name).write_text(text)
        (tree / "debian/rules").chmod(0o755)
        return measured(lambda: run("dpkg-buildpackage", "-b", "-us", "-uc", cwd=tree))


def outside_venv() -> dict[str, str]:
    """This environment without the venv a nox session runs in, as a user's shell has it."""
    venv = os.environ.get("VIRTUAL_ENV")
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if not venv or not p.startswith(venv)]
    return {**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, "PATH": os.pathsep.join(path)}


def nox_build(model_id: str) -> tuple[float, float]:
    """`nox -s build-deb MODEL=<id>` in this checkout, exactly as a user types it (into build/)."""
    argv = ["nox", "-s", "build-deb", f"MODEL={model_id}"]
    return measured(lambda: subprocess.run(argv, cwd=ROOT, env=outside_venv(), check=True, capture_output=True))


def python_build(model_id: str, *, fresh_cache: bool = False) -> tuple[float, float]:
    """`python -m gpupass build-deb <id>` from the source tree; ``fresh_cache``: with stdeb's
    cache empty, as the first build after any change to the package's inputs has it."""
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "gpupass", "build-deb", model_id, "--out", out]
        env = {"PYTHONPATH": str(ROOT / "pkg")}
        if fresh_cache:
            env["XDG_CACHE_HOME"] = str(Path(out) / "cache")
        return measured(lambda: run(*argv, cwd=ROOT, env=env))


def figure(name: str, runs: list[tuple[float, float]], floors: list[tuple[float, float]]) -> str:
    """The median wall time, and the median of each round's ratio to the floor built next to it
    (wall time, and CPU time, which a busy machine disturbs less)."""
    wall = statistics.median(r[0] / f[0] for r, f in zip(runs, floors, strict=True))
    cpu = statistics.median(r[1] / f[1] for r, f in zip(runs, floors, strict=True))
    verdict = "within" if wall <= GOAL else "over"
    rounds = ", ".join(f"{r[0]:.2f}/{f[0]:.2f}" for r, f in zip(runs, floors, strict=True))
    return (
        f"{name:<40}{statistics.median(r[0] for r in runs):6.2f} s   {wall:.2f}x the floor ({verdict} the goal,"
        f" {GOAL}x); CPU time {cpu:.2f}x   (rounds, s/floor s: {rounds})"
    )


def clone_with_copies(dest: Path, model_id: str, count: int) -> Path:
    """A clone of this checkout (uncommitted changes included) whose models/ holds
    ``count`` copies of ``model_id``, committed."""
    subprocess.run(["git", "clone", "-q", "--no-local", str(ROOT), str(dest)], check=True)
    for name in subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"], check=True, capture_output=True, text=True
    ).stdout.split():
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    for old in (dest / "models").glob("*.toml"):
        old.unlink()
    for i in range(count):
        shutil.copy2(ROOT / "models" / f"{model_id}.toml", dest / "models" / f"{model_id}-{i:02d}.toml")
    who = ["-c", "user.name=bench", "-c", "user.email=bench@example.org"]
    subprocess.run(["git", "-C", str(dest), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(dest), *who, "commit", "-q", "-m", f"{count} models"], check=True)
    return dest


def build_all(clone: Path, out: Path) -> float:
    env = {"PYTHONPATH": str(clone / "pkg")}
    env_all = {k: v for k, v in os.environ.items() if k not in ("GPUPASS_SOURCE", "SOURCE_DATE_EPOCH")}
    return timed(
        lambda: subprocess.run(
            [sys.executable, "-m", "gpupass", "build-all", "--out", str(out)],
            cwd=clone,
            env={**env_all, **env},
            check=True,
            capture_output=True,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="aurora-z")
    parser.add_argument("--runs", type=int, default=5, help="rounds of floor, nox and python -m builds")
    parser.add_argument("--counts", default="1,4,16", help="models in each build-all run (empty: none)")
    args = parser.parse_args()

    # The first round may install nox's venv and run stdeb: a repeated build does neither.
    (cold_nox, _), (cold_python, _) = nox_build(args.model), python_build(args.model)
    floor_nox, floor_python, floor_changed, nox, python, changed = [], [], [], [], [], []
    for _ in range(args.runs):
        floor_nox.append(minimal_build())
        nox.append(nox_build(args.model))
        floor_python.append(minimal_build())
        python.append(python_build(args.model))
        floor_changed.append(minimal_build())
        changed.append(python_build(args.model, fresh_cache=True))
    floors = floor_nox + floor_python + floor_changed
    floor = statistics.median(f[0] for f in floors)
    o, c = statistics.median(p[0] for p in python), statistics.median(p[1] for p in python)
    cores = os.cpu_count() or 1
    print(f"cores                                   {cores}")
    print(f"minimal debhelper dpkg-buildpackage {floor:10.2f} s   (runs: {', '.join(f'{f[0]:.2f}' for f in floors)})")
    print(figure(f"nox -s build-deb MODEL={args.model}", nox, floor_nox))
    print(figure(f"python -m gpupass build-deb {args.model}", python, floor_python))
    print(figure("  the same, stdeb's cache empty", changed, floor_changed))
    print(f"  first round (not counted)              nox {cold_nox:.2f} s, python -m {cold_python:.2f} s")
    print(f"  CPU time of python -m (user + sys) {c:11.2f} s   (one core busy for {c / o:.0%} of it)")
    for count in (int(c) for c in args.counts.split(",") if c):
        with tempfile.TemporaryDirectory() as scratch:
            clone = clone_with_copies(Path(scratch) / "clone", args.model, count)
            out = Path(scratch) / "out"
            cold, warm = build_all(clone, out), build_all(clone, out)
        # N builds of one model's CPU time each cannot finish sooner than N * c / cores.
        builds = f"{count} separate build{'s' if count != 1 else ''} on {cores} cores"
        print(
            f"gpupass build-all, N = {count:<2}           {cold:7.2f} s   ({cold / o:.2f}x one model;"
            f" {builds}: at least {count * c / cores / o:.2f}x); unchanged rerun {warm:.2f} s"
        )


if __name__ == "__main__":
    main()
