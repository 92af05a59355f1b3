"""gpupass setup's time, against building the same model by hand: prints figures, asserts nothing.

    sudo python3 benchmarks/setup_time.py [--tarball T.tar] [--runs N]

In a chroot of Debian 12 (mmdebstrap, or --tarball) with the tool package installed from
this checkout's build (`gpupass build-tool`), on the fixture of a published layout that no
model is for (tests/layouts.py, dell-xps-15-9570), each round times

1. ``gpupass setup --root FIXTURE --yes`` from start to installed (probe, build of
   gpupass-<id> on the laptop, apt's install of it in place of the tool);
2. the developer's way to the same place: ``nox -s build-deb MODEL=<id>`` in a copy of the
   checkout holding the same model file, plus ``apt-get install --yes ./gpupass-<id>.deb`` in the chroot;

then purges the model package and puts the tool back (not timed). Goal: setup within 1.5x
of (2). A first round fills apt's cache (the model package's Recommends) and nox's venv and
is not counted; figures are medians.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "pkg"))

from tests.layouts import LAYOUTS  # noqa: E402

GOAL = 1.5
FIXTURE = "dell-xps-15-9570"  # a published laptop's layout
MODEL_ID = "dell-inc-xps-15-9570"  # the id gpupass probe gives it, from its DMI strings
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}


def chroot(root: Path, *argv: str) -> float:
    start = time.perf_counter()
    subprocess.run(["chroot", str(root), *argv], check=True, env=ENV, capture_output=True)
    return time.perf_counter() - start


def timed(argv: list[str], **kwargs) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, **kwargs)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help="a Debian chroot tarball (default: mmdebstrap bookworm)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpupass-setup-bench-") as tmp:
        work = Path(tmp)
        tarball = args.tarball
        if tarball is None:
            tarball = work / "bookworm.tar"
            subprocess.run(["mmdebstrap", "--quiet", "--variant=apt", "--include=python3", "bookworm", str(tarball)])
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "pkg")}
        build = subprocess.run(
            [sys.executable, "-m", "gpupass", "build-tool", "--out", str(work / "tool")],
            check=True, capture_output=True, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        tool = Path(build.stdout.strip().splitlines()[-1])
        root = work / "root"
        root.mkdir()
        subprocess.run(["tar", "-C", str(root), "-xf", str(tarball)], check=True)
        shutil.copy2(tool, root / "tmp/gpupass.deb")
        LAYOUTS[FIXTURE].build(root / "srv/fixture")
        chroot(root, "apt-get", "update")
        chroot(root, "apt-get", "install", "--yes", "/tmp/gpupass.deb")
        # The checkout with the probed model as models/<id>.toml, for nox (its own venv).
        clone = work / "clone"
        shutil.copytree(ROOT, clone, symlinks=True, ignore=shutil.ignore_patterns(".nox", "build", "__pycache__"))
        rows = []
        for n in range(args.runs + 1):
            setup = chroot(root, "gpupass", "setup", "--root", "/srv/fixture", "--yes")
            shutil.copy2(root / f"var/lib/gpupass/local/{MODEL_ID}.toml", clone / f"models/{MODEL_ID}.toml")
            chroot(root, "apt-get", "purge", "--yes", f"gpupass-{MODEL_ID}")
            shutil.rmtree(clone / "build", ignore_errors=True)
            nox = timed(["nox", "-s", "build-deb", f"MODEL={MODEL_ID}"], cwd=clone)
            shutil.copy2(clone / f"build/gpupass-{MODEL_ID}.deb", root / "tmp/model.deb")
            install = chroot(root, "apt-get", "install", "--yes", "/tmp/model.deb")
            chroot(root, "apt-get", "purge", "--yes", f"gpupass-{MODEL_ID}")
            chroot(root, "apt-get", "install", "--yes", "/tmp/gpupass.deb")
            if n:
                rows.append((setup, nox, install))
            print(f"round {n}{' (not counted)' if not n else ''}: setup {setup:.2f} s;"
                  f" nox build-deb {nox:.2f} s + apt install {install:.2f} s", flush=True)  # fmt: skip
        setup, nox, install = (statistics.median(column) for column in zip(*rows, strict=True))
        ratio = setup / (nox + install)
        print(f"median: setup {setup:.2f} s; nox -s build-deb {nox:.2f} s + apt install {install:.2f} s"
              f" = {nox + install:.2f} s; setup is {ratio:.2f}x that (goal: at most {GOAL}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
