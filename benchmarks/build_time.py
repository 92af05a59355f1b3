"""Wall time of `gpupass build-deb` next to a bare `dpkg-buildpackage -b` of the same
generated source: how much gpupass adds on top of Debian's own build.

    python benchmarks/build_time.py [MODEL] [--runs N]

Prints figures; asserts nothing about them (speed goals live here, not in tests).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pkg"))

from gpupass import model, paths  # noqa: E402
from gpupass.build import debsrc, tools  # noqa: E402


def timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="aurora-z")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    model_file = paths.MODELS_DIR / f"{args.model}.toml"
    m = model.load(model_file)

    full, bare = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as out:
            full.append(timed(lambda: debsrc.build_deb(m, model_file, Path(out))))
        with tempfile.TemporaryDirectory() as scratch:
            source = debsrc.make_source(m, model_file, Path(scratch))
            tree = debsrc.unpack(source, "tree")
            bare.append(timed(lambda tree=tree: tools.run("dpkg-buildpackage", "-b", "-us", "-uc", cwd=tree)))

    f, b = statistics.median(full), statistics.median(bare)
    print(f"model                         {args.model} ({args.runs} runs, median)")
    print(f"gpupass build-deb             {f:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in full)})")
    print(f"bare dpkg-buildpackage -b     {b:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in bare)})")
    print(f"ratio                         {f / b:7.2f} x")


if __name__ == "__main__":
    main()
