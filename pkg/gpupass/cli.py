"""The ``gpupass`` command (also ``python -m gpupass``).

Laptop steps, run from the installed package: check, probe, doctor, vbios, vm. Maintainer
steps, run from the source tree: models, validate, preview, render, build-deb, build-source,
build-all, publish, ppa (left out of --help where the source tree or the build side's jinja2
is absent).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

from . import __version__, model, paths
from .errors import GpupassError, ModelError


def known_models() -> list[str]:
    return sorted(p.stem for p in paths.MODELS_DIR.glob("*.toml"))


def model_file(arg: str) -> tuple[Path, str]:
    """A model id (looked up in models/) or a path to a .toml; returns (path, display name)."""
    if arg.endswith(".toml") or "/" in arg:
        return Path(arg), arg
    path = paths.MODELS_DIR / f"{arg}.toml"
    if not path.exists():
        known = ", ".join(known_models()) or "none"
        raise ModelError(f"unknown model {arg!r} (known models: {known})")
    return path, f"models/{arg}.toml"


def load_model(arg: str) -> tuple[model.Model, Path]:
    path, shown = model_file(arg)
    return model.load(path, shown), path


def installed_model() -> model.Model:
    """The model of the installed gpupass-<model> package (model packages conflict: one at most)."""
    found = sorted(paths.INSTALLED_MODELS.glob("*.toml"))
    if len(found) != 1:
        raise GpupassError(
            f"{paths.INSTALLED_MODELS}: {len(found)} model files (expected the installed package's one)",
            hint="install a gpupass-<model> package, or pass --model",
        )
    return model.load(found[0])


def cmd_models(args: argparse.Namespace) -> int:
    for name in known_models():
        print(name)
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
    from .packaging import debsrc, render

    m, path = load_model(args.model)
    render.render_all(m)  # fail fast on a bad template or ASL, before any packaging
    builder = {"build-deb": debsrc.build_deb, "build-source": debsrc.build_source}[args.command]
    print(builder(m, path, Path(args.out)))
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
    from .packaging import buildall, repo, version

    debs = [Path(d) for d in args.debs]
    if args.models:
        debs += [r.deb for r in buildall.build_all(models_arg(args.models), Path(args.out))]
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


def cmd_check(args: argparse.Namespace) -> int:
    from .laptop import preflight

    m = load_model(args.model)[0] if args.model else installed_model()
    return preflight.cli(m, Path(args.root))


def cmd_probe(args: argparse.Namespace) -> int:
    from .laptop import machine, probe

    probed = probe.probe(machine.read(Path(args.root), processes=False))  # refused: nothing is written
    text = probed.json() if args.json else probed.toml()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output} (proposed model id: {probed.model_id})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    for warning in probed.warnings:
        print(f"gpupass: warning: {warning}", file=sys.stderr)
    return 0


def cmd_vbios(args: argparse.Namespace) -> int:
    from .laptop import vbios

    m = load_model(args.model)[0] if args.model else installed_model()
    return vbios.cli(args.vbios_args, m)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .laptop import doctor

    m = load_model(args.model)[0] if args.model else installed_model()
    return doctor.cli(m, Path(args.root), vm_name=args.vm, uri=args.connect, as_json=args.json)


def cmd_vm(args: argparse.Namespace) -> int:
    from .laptop import vm

    m = load_model(args.model)[0] if args.model else installed_model()
    return vm.cli(args, m)


def cmd_power(args: argparse.Namespace) -> int:
    from .laptop import power

    root = Path(args.root)
    if args.power_command == "apply":
        return power.cli_apply(root, Path(args.config) if args.config else None, args.connect)
    m = load_model(args.model)[0] if args.model else installed_model()
    if args.power_command == "status":
        return power.cli_status(m, root, args.connect, args.json)
    power.record(m, args.domain, root, delay=args.delay)
    return 0


def maintainer_steps_available() -> bool:
    """The source tree (models/), the build side and its jinja2 are there: not the installed
    command, which ships without the build side."""
    try:
        build_side = all(importlib.util.find_spec(name) is not None for name in ("jinja2", "gpupass.packaging"))
    except (ImportError, ValueError):
        build_side = False
    return build_side and paths.MODELS_DIR.is_dir()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpupass", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"gpupass {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log every external command")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    def hidden(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, description=help)  # no help=: argparse leaves it out of the list
        sp.set_defaults(func=func)
        return sp

    sp = add("check", cmd_check, "pre-flight checks: is this the laptop the model is for?")
    sp.add_argument("--model", help="model id or .toml (default: the installed package's model)")
    sp.add_argument("--root", default="/", help=argparse.SUPPRESS)
    sp = add("probe", cmd_probe, "read this laptop and print a model for it (TOML, each value with its source)")
    sp.add_argument("-o", "--output", metavar="FILE", help="write the model to FILE instead of stdout")
    sp.add_argument("--json", action="store_true", help="JSON for tools: the model, each value's source, warnings")
    sp.add_argument("--root", default="/", help=argparse.SUPPRESS)
    sp = add("doctor", cmd_doctor, "is passthrough set up, and does the dGPU sleep while the VM is off? (ok/warn/fail)")
    sp.add_argument("--model", help="model id or .toml (default: the installed package's model)")
    sp.add_argument("--vm", metavar="NAME", help="the libvirt domain to check (default: the model's vm.name)")
    sp.add_argument("--connect", metavar="URI", help="libvirt URI (default: qemu:///system)")
    sp.add_argument("--json", action="store_true", help="the findings as JSON, for scripts")
    sp.add_argument("--root", default="/", help=argparse.SUPPRESS)
    sp = add("vbios", cmd_vbios, "the GPU's vBIOS for the guest: extract | check | import | from-update | ssdt")
    sp.add_argument("--model", help="model id or .toml (default: the installed package's model)")
    sp.add_argument("vbios_args", nargs=argparse.REMAINDER, metavar="extract | check | import | from-update | ssdt ...")
    sp = add("vm", cmd_vm, "put the passthrough pieces into a libvirt domain: define | attach | detach")
    sp.add_argument("--model", help="model id or .toml (default: the installed package's model)")
    sp.add_argument("--connect", metavar="URI", help="libvirt URI (default: qemu:///system)")
    sp.add_argument("--record", default=str(paths.VM_RECORD), help=argparse.SUPPRESS)  # for gpupass power
    vm_commands = sp.add_subparsers(dest="vm_command", required=True, metavar="define | attach | detach")
    vp = vm_commands.add_parser("define", help="define the model's domain with your disk and installer ISO")
    vp.add_argument("name", nargs="?", help="domain name (default: the model's vm.name)")
    disk = vp.add_mutually_exclusive_group()
    disk.add_argument("--disk", metavar="PATH", help="an existing disk image")
    disk.add_argument("--disk-size", metavar="GiB", type=int, help="create a qcow2 disk of this size")
    vp.add_argument("--iso", metavar="FILE", help="the Windows installer ISO, as a CD-ROM")
    vp.add_argument(
        "--virtio-win",
        metavar="ISO",
        help="the virtio-win drivers ISO: disk and NIC become virtio, the ISO a second CD-ROM",
    )
    vp.add_argument("--domain-xml", default=str(paths.INSTALLED_DOMAIN), help=argparse.SUPPRESS)
    vp.add_argument("--images", default="/var/lib/libvirt/images", help=argparse.SUPPRESS)
    for name, what in (
        ("attach", "add exactly what passthrough needs to an existing domain (shut off)"),
        ("detach", "remove exactly what attach added"),
    ):
        vp = vm_commands.add_parser(name, help=what, description=what)
        vp.add_argument("name", help="the libvirt domain")
        vp.add_argument("--dry-run", action="store_true", help="print the change as a unified diff, change nothing")
    sp = add("power", cmd_power, "the VM follows the power source; what the dGPU and the battery do: apply | status")
    power_commands = sp.add_subparsers(dest="power_command", required=True, metavar="apply | status")
    pp = power_commands.add_parser("apply", help=f"do what {paths.POWER_CONF} asks for the power source now")
    pp.add_argument("--config", metavar="FILE", help=f"settings (default: {paths.POWER_CONF})")
    pp.add_argument("--root", default="/", help="read sysfs and gpupass's files under DIR (a fixture tree)")
    pp = power_commands.add_parser("status", help="AC or battery, the draw, the VM, the dGPU's power states")
    pp.add_argument("--json", action="store_true", help="as JSON, for scripts")
    pp.add_argument("--root", default="/", help="read sysfs and gpupass's files under DIR (a fixture tree)")
    pp = power_commands.add_parser("record")  # run by the libvirt hook on release; not in --help
    pp.add_argument("domain")
    pp.add_argument("--delay", type=float, default=5.0, help=argparse.SUPPRESS)
    pp.add_argument("--root", default="/", help=argparse.SUPPRESS)
    for name, pp in power_commands.choices.items():
        pp.add_argument("--connect", metavar="URI", help="libvirt URI (default: qemu:///system)")
        if name != "apply":
            pp.add_argument("--model", help="model id or .toml (default: the installed package's model)")
    # The maintainer's steps, after the laptop's; hidden from the installed command's help.
    add_maintainer = add if maintainer_steps_available() else hidden
    add_maintainer("models", cmd_models, "list the known models")
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
    sp = add_maintainer("build-all", cmd_build_all, "build every model's .deb in parallel, skipping unchanged models")
    sp.add_argument("models", nargs="?", default="all", help="all (default) or comma-separated model ids")
    sp.add_argument("--out", default=str(paths.BUILD_DIR), help="output directory (default: build/)")
    sp.add_argument("--jobs", type=int, help="builds at a time (default: one per core)")
    sp = add_maintainer("publish", cmd_publish, "add .deb files to a local signed apt repository (reprepro)")
    sp.add_argument("debs", nargs="*", metavar="DEB")
    sp.add_argument("--models", help="also build these models first (build-all): all or comma-separated ids")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except GpupassError as e:
        if args.debug:
            raise
        for line in e.lines():
            print(f"gpupass: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gpupass: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
