"""From a model to a Debian source package, and from that to the .deb.

1. stage a copy of the sources with only this model in it, named after the model's
   version (``version.py``), and (for a source package) pack it into the orig tarball
   (``orig.py``);
2. stdeb (``setup.py debianize``) writes debian/ (control, rules) from the Python metadata
   (``debianize.py``: once per set of inputs);
3. gpupass overlays what stdeb cannot express (``debian/`` in the source tree: rules,
   maintainer scripts, triggers, copyright), fixes stdeb's known traps in control and
   writes the changelog (``changelog.py``: this build on top of the project's history);
4. build-source: ``dpkg-source -b`` turns that into the .dsc a PPA builder takes;
5. build-deb: ``dpkg-buildpackage -b`` builds the .deb in that same tree, its dates and
   modes made what ``dpkg-source -x`` would give (``normalise``): the tree the .dsc unpacks
   to (tests/test_source.py builds the .dsc on a clean builder and requires the same files,
   modes, dates and bytes).

Everything happens in a scratch directory; ``build/`` only ever receives finished files.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import GpupassError
from ..model import Model
from . import changelog, debianize, orig, preinst, tools, version

STAGED_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")
STAGED_DIRS = ("pkg", "config-templates", "acpi")
# The build renders the model (jinja2, iasl); dh_python3 installs the Python package.
# stdeb adds python3-all and python3-setuptools of its own accord.
BUILD_DEPENDS = ("dh-python", "acpica-tools", "python3-jinja2")
# What the laptop needs to run the VM, by names that exist on Debian 12/13 and Ubuntu
# 24.04/26.04 (on 26.04 "ovmf" is a metapackage over ovmf-generic); python3-libvirt for
# `gpupass vm`; swtpm and swtpm-tools (swtpm_setup) for the domain's TPM 2.0, which Windows
# 11 setup requires. Recommends: apt installs them by default, an image builder may leave them out.
RECOMMENDS = ("libvirt-daemon-system", "qemu-system-x86", "ovmf", "python3-libvirt", "swtpm", "swtpm-tools")
# What ``gpupass vbios from-update`` runs when a BIOS update needs it: UEFIExtract for
# Tiano-compressed sections, 7z and innoextract for installer wrappers.
SUGGESTS = ("uefitool-cli", "p7zip-full", "innoextract")
# Lines of debian/ that name the package get it in place of "package".
OVERLAY_PREFIX = "package."
# A placeholder that cannot be mistaken for a real address; set DEBFULLNAME and DEBEMAIL
# (who signs the upload) when publishing.
DEFAULT_MAINTAINER = "gpupass maintainers <maintainers@gpupass.invalid>"


@dataclass(frozen=True)
class SourcePackage:
    name: str
    version: str  # Debian version, e.g. 0.1.0+42-1 (or 0.1.0+42-1~noble1 for a PPA series)
    dsc: Path
    directory: Path  # the scratch directory holding the .dsc and its files


GPU_VENDORS = {"10de": "NVIDIA", "1002": "AMD"}


def maintainer() -> str:
    name, email = os.environ.get("DEBFULLNAME"), os.environ.get("DEBEMAIL")
    return f"{name} <{email}>" if name and email else DEFAULT_MAINTAINER


def description(model: Model) -> str:
    """Synopsis line, blank line, long description (read by the setup.py shim)."""
    maker = GPU_VENDORS.get(model.gpu_function.vendor, "discrete")
    text = (
        f"Sets up a {model.name} laptop to pass its {maker} GPU ({', '.join(model.gpu.ids)}) through"
        " to a Windows guest under QEMU/KVM and libvirt: IOMMU kernel arguments through a GRUB"
        " drop-in, vfio-pci binding in the initramfs, a first-boot vBIOS extraction service,"
        " a fake-battery ACPI table against Code 43, and a ready libvirt domain."
        " Removing the package gives the GPU back to the host at the next boot."
    )
    if not model.confirmed:
        text += (
            " This model was written from a hardware layout published online and is not yet"
            " confirmed on the hardware; the package's pre-flight checks refuse to install it"
            " on a laptop that does not match."
        )
    return f"dGPU passthrough setup for the {model.name}\n\n" + textwrap.fill(text, 78, break_on_hyphens=False) + "\n"


def stdeb_cfg(model: Model) -> str:
    return "\n".join(
        [
            "[gpupass]",
            f"Source: {model.package}",
            f"Package3: {model.package}",
            f"Maintainer: {maintainer()}",
            "Section: admin",
            f"Build-Depends: {', '.join(BUILD_DEPENDS)}",
            # One laptop, one model: model packages exclude each other. Each carries the
            # command the tool package gpupass ships (same files), and replaces it.
            "Provides3: gpupass-model, gpupass",
            "Conflicts3: gpupass-model, gpupass",
            "Replaces3: gpupass-model, gpupass",
            "Suite3: unstable",
            "X-Python3-Version: >= 3.11",
            "",
        ]
    )


def copy_sources(dest: Path, dirs: tuple[str, ...] = ()) -> None:
    """STAGED_FILES, STAGED_DIRS and ``dirs`` from the source tree into the directory ``dest``,
    without Python's caches and build metadata."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in STAGED_FILES:
        shutil.copy2(paths.SOURCE_ROOT / name, dest / name)
    for name in (*STAGED_DIRS, *dirs):
        shutil.copytree(paths.SOURCE_ROOT / name, dest / name, ignore=ignore)


def stage_sources(model: Model, model_file: Path, dest: Path) -> Path:
    """Copy what the source package needs, with this model as its only model."""
    tree = dest / "src"
    tree.mkdir()
    copy_sources(tree)
    (tree / "models").mkdir()
    shutil.copy2(model_file, tree / "models" / f"{model.id}.toml")
    (tree / "package-description.txt").write_text(description(model), encoding="utf-8")
    (tree / "stdeb.cfg").write_text(stdeb_cfg(model), encoding="utf-8")
    return tree


def normalise(tree: Path, epoch: int) -> None:
    """Every file and directory under ``tree`` as the orig tarball packs it and dpkg-source -x
    unpacks it: mtime SOURCE_DATE_EPOCH (dpkg-deb only clamps newer ones; a checkout older
    than the last input commit would leak its dates), mode 0755 or 0644."""
    for path in [tree, *orig.members(tree)]:
        os.chmod(path, orig.mode(path.lstat()))
        os.utime(path, (epoch, epoch))


def overlay_debian(model: Model, debian: Path) -> None:
    """Add gpupass's own debian/ files and fix what stdeb gets wrong."""
    functions = (paths.DEBIAN_DIR / "maintscript-functions.sh").read_text(encoding="utf-8")
    tokens = {
        "#GPUPASS_FUNCTIONS#": functions.strip(),
        "#PACKAGE#": model.package,
        "#GPU_IDS#": ", ".join(model.gpu.ids),
        "#GPU_ID#": model.gpu_function.id,
        "#MODE#": model.mode,
        "#KERNEL_ARGS#": " ".join(model.kernel_args),
        "#PREFLIGHT_PROGRAM#": preinst.program(model).rstrip("\n"),
    }
    for src in sorted(paths.DEBIAN_DIR.rglob("*")):
        rel = src.relative_to(paths.DEBIAN_DIR)
        # maintscript-functions.sh is pasted into the maintainer scripts, and shipped too
        # (paths.MAINTSCRIPT_FUNCTIONS) for gpupass mode.
        if src.is_dir():
            continue
        name = rel.name
        if name.startswith(OVERLAY_PREFIX):
            name = model.package + "." + name[len(OVERLAY_PREFIX) :]
        target = debian / rel.parent / name
        target.parent.mkdir(parents=True, exist_ok=True)
        text = src.read_text(encoding="utf-8")
        for token, value in tokens.items():
            text = text.replace(token, value)
        target.write_text(text, encoding="utf-8")
        target.chmod(src.stat().st_mode & 0o777)
    (debian / "compat").unlink(missing_ok=True)  # compat comes from Build-Depends below
    control = debian / "control"
    control.write_text(fix_control(control.read_text(encoding="utf-8")), encoding="utf-8")


def fix_control(text: str) -> str:
    """stdeb 0.11's traps: ``Homepage: None``, no dh-python in Build-Depends (added via
    stdeb.cfg), an old debhelper compat; and a trailing empty line in Description."""
    text = re.sub(r"^Homepage: None\n", "", text, flags=re.M)
    # Nothing in the build needs root: dpkg-buildpackage runs without fakeroot, and
    # dpkg-deb records root:root for every file itself.
    text = re.sub(r"\A(Source: .*\n)", r"\1Rules-Requires-Root: no\n", text)
    text = re.sub(r"debhelper \(>= \d+\)", "debhelper-compat (= 13)", text)
    # The preinst runs the pre-flight checks with python3 before anything is unpacked.
    text = re.sub(r"^(Depends: .*\n)", r"Pre-Depends: python3:any\n\1", text, flags=re.M)
    text = re.sub(
        r"^(Depends: .*\n)",
        rf"\1Recommends: {', '.join(RECOMMENDS)}\nSuggests: {', '.join(SUGGESTS)}\n",
        text,
        flags=re.M,
    )
    text = re.sub(r"\n \.\n*\Z", "\n", text)
    return text


def prepare(model: Model, model_file: Path, scratch: Path, ver: version.Version, orig_tarball: bool = True) -> Path:
    """The source tree with its debian/ in ``scratch/dist``, next to its orig tarball (which
    only a source package needs)."""
    staged = stage_sources(model, model_file, scratch)
    dist = scratch / "dist"
    dist.mkdir()
    tree = dist / f"{model.package}-{ver.upstream}"
    staged.rename(tree)
    if orig_tarball:
        orig.write(tree, dist / f"{model.package}_{ver.upstream}.orig.tar.gz", ver.epoch)
    debianize.debianize(tree, ver.epoch)
    overlay_debian(model, tree / "debian")
    return tree


def write_changelog(
    model: Model, tree: Path, ver: version.Version, distribution: str = "unstable", debian_version: str | None = None
) -> None:
    (tree / "debian" / "changelog").write_text(
        changelog.render(model.package, debian_version or ver.debian, distribution, maintainer(), ver),
        encoding="utf-8",
    )


def source_package(
    model: Model, tree: Path, ver: version.Version, distribution: str = "unstable", debian_version: str | None = None
) -> SourcePackage:
    """Write the changelog for ``distribution`` and build the .dsc from ``tree`` (again for
    each PPA series: the orig tarball next to the tree is reused as it is)."""
    debian_version = debian_version or ver.debian
    write_changelog(model, tree, ver, distribution, debian_version)
    return dpkg_source(tree, model.package, debian_version, ver.epoch)


def dpkg_source(tree: Path, package: str, debian_version: str, epoch: int) -> SourcePackage:
    """``dpkg-source -b`` of ``tree`` (its changelog written, its orig tarball beside it)."""
    tools.run(
        "dpkg-source",
        "-b",
        tree.name,
        cwd=tree.parent,
        env={"SOURCE_DATE_EPOCH": str(epoch)},
        what="building the source package",
    )
    dsc = tree.parent / f"{package}_{debian_version}.dsc"
    return SourcePackage(package, debian_version, dsc, tree.parent)


def make_source(model: Model, model_file: Path, scratch: Path, ver: version.Version | None = None) -> SourcePackage:
    """Generate the source package (.dsc, orig tarball, debian tarball) in ``scratch``."""
    ver = ver or version.of_model(model_file)
    tree = prepare(model, model_file, scratch, ver)
    source = source_package(model, tree, ver)
    shutil.rmtree(tree)
    return source


def unpack(source: SourcePackage, name: str) -> Path:
    """The source package unpacked afresh from its .dsc, as a builder sees it."""
    tree = source.directory / name
    tools.run("dpkg-source", "-x", source.dsc, tree, cwd=source.directory, what="unpacking the source package")
    return tree


def build_binary(source: SourcePackage) -> Path:
    """Build the .deb from the .dsc, unpacked afresh as a clean builder would."""
    return buildpackage(unpack(source, "build-tree"), source.name)


def buildpackage(tree: Path, package: str, check_builddeps: bool = True) -> Path:
    """``dpkg-buildpackage -b`` in a fresh ``tree``; the .deb it leaves next to the tree.
    ``check_builddeps=False`` for gpupass setup's build on the laptop: dpkg-checkbuilddeps
    requires build-essential (a C toolchain) that this Architecture: all package never calls;
    the gpupass tool package's Depends are what the build does call."""
    tools.run(
        "dpkg-buildpackage",
        "-b",
        "-us",
        "-uc",
        *([] if check_builddeps else ["--no-check-builddeps"]),
        # Fresh: nothing to clean (`debian/rules clean` costs a setup.py run).
        "--no-pre-clean",
        cwd=tree,
        # gzip, not dpkg-deb's default xz: xz -6 took 0.2-0.3 s of every build for this 0.5 MB
        # tree, gzip -9 0.05 s for 15 KB more (123 KB against 107 KB). The builder's choice,
        # not the source package's: a PPA's builder keeps its archive's default (lintian warns
        # of custom compression in debian/rules).
        env={"DEB_BUILD_OPTIONS": "nocheck", "DPKG_DEB_COMPRESSOR_TYPE": "gzip"},
        what="building the binary package",
    )
    debs = sorted(tree.parent.glob(f"{package}_*_all.deb"))
    if len(debs) != 1:
        raise GpupassError(f"dpkg-buildpackage left {len(debs)} .deb files for {package} (expected 1)")
    return debs[0]


def deliver(files: list[Path], out_dir: Path) -> None:
    """Move finished files into ``out_dir`` (each appears whole or not at all)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        part = out_dir / f".{f.name}.part"
        shutil.copy2(f, part)
        os.replace(part, out_dir / f.name)


def build_deb(
    model: Model, model_file: Path, out_dir: Path = paths.BUILD_DIR, ver: version.Version | None = None
) -> Path:
    """Build ``gpupass-<model>_<version>_all.deb`` into ``out_dir``, plus the
    version-less ``gpupass-<model>.deb`` alias; return the alias's path."""
    ver = ver or version.of_model(model_file)
    with tempfile.TemporaryDirectory(prefix="gpupass-build-") as tmp:
        # The tree the .dsc would unpack to, built where it stands: packing it into a .dsc
        # and unpacking that again gave the same files at 0.4 s a build. build-source makes
        # the .dsc; tests/test_source.py requires a clean builder's .deb from it to hold the
        # same files and bytes as this one.
        tree = prepare(model, model_file, Path(tmp), ver, orig_tarball=False)
        write_changelog(model, tree, ver)
        normalise(tree, ver.epoch)
        deb = buildpackage(tree, model.package, check_builddeps=ver.commit != version.LOCAL_COMMIT)
        alias = deb.with_name(f"{model.package}.deb")
        shutil.copy2(deb, alias)
        deliver([deb, alias], out_dir)
    return out_dir / alias.name


def build_source(model: Model, model_file: Path, out_dir: Path = paths.BUILD_DIR) -> Path:
    """Build the source package (for a PPA upload) into ``out_dir``; return the .dsc."""
    with tempfile.TemporaryDirectory(prefix="gpupass-source-") as tmp:
        source = make_source(model, model_file, Path(tmp))
        # The upload's .changes (unsigned: debsign signs it with the maintainer's key).
        tree = unpack(source, "changes-tree")
        changes = source.directory / f"{source.name}_{source.version}_source.changes"
        tools.run("dpkg-genchanges", "-S", "-sa", f"-O{changes}", cwd=tree, what="writing the upload's .changes")
        files = [p for p in source.directory.iterdir() if p.is_file()]
        deliver(files, out_dir)
    return out_dir / source.dsc.name
