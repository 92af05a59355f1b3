"""The maintainer's steps, run from the source tree: models, validate, preview, render,
build-deb, build-source, build-tool, build-all, publish, ppa. The build side is imported only when one of
them runs, so the installed command (which ships without it) still parses its command line;
where the source tree or the build side's jinja2 is absent they are left out of --help.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from . import model, paths, supported
from .errors import GpupassError, ModelError
from .modelfiles import known_models, load_model


def cmd_models(args: argparse.Namespace) -> int:
    if args.ids:
        for name in known_models():
            print(name)
        return 0
    table = supported.rows(paths.MODELS_DIR)
    show = supported.json_table if args.json else supported.markdown_table if args.markdown else supported.text_table
    print(show(table), end="")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    m, _ = load_model(args.model)
    print(f"models/{m.id}.toml: ok ({m.name}, package {m.package})")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .packaging import render
    from .packaging.artifacts import modelfile

    m, _ = load_model(args.model)
    files = render.render_all(m)
    if args.file:
        if args.file not in files:
            raise GpupassError(f"{args.file}: not a file of {m.package} (files: {', '.join(files)})")
        files = {args.file: files[args.file]}
    else:
        print(f"# resolved model: models/{m.id}.toml\n{modelfile.to_toml(m)}")
    for path, text in render.iter_text(files):
        print(f"# --- /{path}")
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from .packaging import render

    m, _ = load_model(args.model)
    files = render.render_all(m)  # everything rendered before anything is written
    render.write_tree(files, Path(args.dest))
    for path in files:
        print(f"{args.dest}/{path}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """build-deb and build-source: the same steps up to the debsrc builder they name."""
    from .packaging import debsrc, render, version

    m, path = load_model(args.model)
    render.render_all(m)  # fail fast on a bad template or ASL, before any packaging
    if args.command == "build-deb":
        # --local N: gpupass setup's build on the laptop, versioned without git.
        local = None if args.local is None else version.local(args.local)
        print(debsrc.build_deb(m, path, Path(args.out), local))
    else:
        print(debsrc.build_source(m, path, Path(args.out)))
    return 0


def cmd_build_tool(args: argparse.Namespace) -> int:
    from .packaging import toolpkg

    print(toolpkg.build(Path(args.out)))
    return 0


def models_arg(arg: str) -> list[tuple[model.Model, Path]]:
    """``all`` or comma-separated model ids, each loaded and validated."""
    names = known_models() if arg == "all" else [n for n in arg.split(",") if n]
    loaded, problems = [], []
    for name in names:
        try:
            m, path = load_model(name)
            loaded.append((m, path))
        except ModelError as e:
            problems += e.problems
    if problems or not loaded:
        raise ModelError(problems or [f"no models in {arg!r}"])
    return loaded


def cmd_build_all(args: argparse.Namespace) -> int:
    from .packaging import buildall

    results = buildall.build_all(models_arg(args.models), Path(args.out), args.jobs)
    for r in results:
        print(f"{r.deb}{'' if r.built else '  (unchanged, not rebuilt)'}")
    if not any(r.built for r in results):
        print(f"nothing to do: no model's inputs changed since its last build ({len(results)} models)")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from .packaging import buildall, repo, toolpkg, version

    debs = [Path(d) for d in args.debs]
    if args.models:  # the models and, beside them, the tool package (gpupass setup's)
        debs += [r.deb for r in buildall.build_all(models_arg(args.models), Path(args.out))]
        debs.append(toolpkg.build(Path(args.out)))
    if not debs:
        raise GpupassError("nothing to publish", hint="name .deb files, or --models all")
    unpublishable = [d.name for d in debs if version.DIRTY in d.name]
    if unpublishable:
        raise GpupassError(
            [f"{name}: built from uncommitted changes, not published" for name in unpublishable],
            hint="commit the changes (git status shows them), then publish",
        )
    repository = Path(args.repo).resolve()
    keyring = repo.publish(debs, repository, args.key)
    print(f"published to {repository}; users add /etc/apt/sources.list.d/gpupass.sources:")
    print(repo.sources_entry(repository), end="")
    print(f"(keyring: {keyring})")
    return 0


def cmd_ppa(args: argparse.Namespace) -> int:
    from .packaging import ppa

    ppa.publish(models_arg(args.models), args.series, args.ppa, Path(args.out), args.upload, args.key)
    return 0


def maintainer_steps_available() -> bool:
    """The source tree (models/), the build side and its jinja2 are there: not the installed
    command, which ships without the build side."""
    try:
        build_side = all(importlib.util.find_spec(name) is not None for name in ("jinja2", "gpupass.packaging"))
    except (ImportError, ValueError):
        build_side = False
    return build_side and paths.MODELS_DIR.is_dir()


def register(sub: argparse._SubParsersAction) -> None:
    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    def hidden(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, description=help)  # no help=: argparse leaves it out of the list
        sp.set_defaults(func=func)
        return sp

    # Hidden from the installed command's help.
    add_maintainer = add if maintainer_steps_available() else hidden
    sp = add_maintainer("models", cmd_models, "the known models: id, laptop, GPU, confirmed or not, source")
    shape = sp.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="as JSON, for tools")
    shape.add_argument("--markdown", action="store_true", help="as README.md's table")
    shape.add_argument("--ids", action="store_true", help="only the ids, one a line")
    add_maintainer("validate", cmd_validate, "check a model file").add_argument(
        "model", help="model id or path to a .toml"
    )
    sp = add_maintainer("preview", cmd_preview, "print the resolved model and every rendered file, without building")
    sp.add_argument("model", help="model id or path to a .toml")
    sp.add_argument("--file", help="print only this file (path inside the package)")
    sp = add_maintainer("render", cmd_render, "render a model's files into a package root")
    sp.add_argument("model", help="model id or path to a .toml")
    sp.add_argument("--dest", required=True, help="directory to write into (e.g. debian/<package>)")
    for name, what in (
        ("build-deb", "build the model's .deb"),
        ("build-source", "build the model's source package (for a PPA upload)"),
    ):
        sp = add_maintainer(name, cmd_build, what)
        sp.add_argument("model", help="model id or path to a .toml")
        sp.add_argument("--out", default=str(paths.BUILD_DIR), help="output directory (default: build/)")
        if name == "build-deb":
            sp.add_argument(
                "--local", type=int, metavar="N", help="version <upstream>+localN-1, not git's (gpupass setup's build)"
            )
    sp = add_maintainer("build-tool", cmd_build_tool, "build the gpupass tool package (gpupass_<version>_all.deb)")
    sp.add_argument("--out", default=str(paths.BUILD_DIR), help="output directory (default: build/)")
    sp = add_maintainer("build-all", cmd_build_all, "build every model's .deb in parallel, skipping unchanged models")
    sp.add_argument("models", nargs="?", default="all", help="all (default) or comma-separated model ids")
    sp.add_argument("--out", default=str(paths.BUILD_DIR), help="output directory (default: build/)")
    sp.add_argument("--jobs", type=int, help="builds at a time (default: one per core)")
    sp = add_maintainer("publish", cmd_publish, "add .deb files to a local signed apt repository (reprepro)")
    sp.add_argument("debs", nargs="*", metavar="DEB")
    sp.add_argument(
        "--models", help="also build these models (build-all) and the tool package first: all or comma-separated ids"
    )
    sp.add_argument("--out", default=str(paths.BUILD_DIR), help="where --models are built (default: build/)")
    sp.add_argument("--repo", default=str(paths.BUILD_DIR / "repo"), help="repository directory (default: build/repo)")
    sp.add_argument("--key", help="gpg key id to sign with (default: $GPUPASS_SIGNING_KEY)")
    sp = add_maintainer(
        "ppa", cmd_ppa, "signed source uploads for a Launchpad PPA, one per model and series (dput --simulate)"
    )
    sp.add_argument("models", help="all or comma-separated model ids")
    sp.add_argument("--series", required=True, help="Ubuntu series, comma-separated (e.g. noble,resolute)")
    sp.add_argument("--ppa", required=True, help="owner/name (as in ppa:owner/name)")
    sp.add_argument("--upload", action="store_true", help="really upload (default: dput --simulate)")
    sp.add_argument("--key", help="gpg key id to sign with (default: $GPUPASS_SIGNING_KEY)")
    sp.add_argument("--out", default=str(paths.BUILD_DIR / "ppa"), help="output directory (default: build/ppa)")
