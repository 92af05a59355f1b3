"""Build times against Debian's own floor: prints figures, asserts nothing.

    python benchmarks/build_time.py [MODEL] [--runs N] [--counts 1,4,16]

1. the floor: ``dpkg-buildpackage -b`` of a minimal debhelper package (built here);
2. one model's ``gpupass build-deb`` (goal: within 2x the floor);
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
sys.path.insert(0, str(ROOT / "pkg"))

from gpupass import model, paths  # noqa: E402
from gpupass.packaging import debsrc  # noqa: E402

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


def cpu_seconds() -> float:
    """user + system time of this process and of the processes it waited for."""
    usages = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(r.ru_utime + r.ru_stime for r in usages)


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(a) for a in argv], cwd=cwd, check=True, capture_output=True, env={**os.environ, **(env or {})})


def minimal_build(scratch: Path) -> float:
    tree = scratch / "minimal-1.0"
    for name, text in MINIMAL.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    (tree / "debian/rules").chmod(0o755)
    return timed(lambda: run("dpkg-buildpackage", "-b", "-us", "-uc", cwd=tree))


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
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--counts", default="1,4,16", help="models in each build-all run")
    args = parser.parse_args()
    model_file = paths.MODELS_DIR / f"{args.model}.toml"
    m = model.load(model_file)

    floor, one, cpu = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as scratch:
            floor.append(minimal_build(Path(scratch)))
        with tempfile.TemporaryDirectory() as out:
            before = cpu_seconds()
            one.append(timed(lambda out=out: debsrc.build_deb(m, model_file, Path(out))))
            cpu.append(cpu_seconds() - before)
    f, o, c = statistics.median(floor), statistics.median(one), statistics.median(cpu)
    cores = os.cpu_count() or 1
    print(f"cores                                {cores}")
    print(f"minimal debhelper dpkg-buildpackage  {f:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in floor)})")
    print(f"gpupass build-deb {args.model:<18} {o:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in one)})")
    print(f"  ratio to the floor                 {o / f:7.2f} x   (goal: 2)")
    print(f"  CPU time (user + system)           {c:7.2f} s   (one core busy for {c / o:.0%} of it)")
    for count in (int(c) for c in args.counts.split(",")):
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
