"""``gpupass setup``: this laptop's model package, installed with apt.

It reads the laptop as ``probe`` does (and refuses where probe refuses, before anything is
changed), then either installs the published model package that matches the laptop (DMI
vendor and product, and every dGPU function's address, id and subsystem id) from the
configured repositories, or writes the probed model (``confirmed = false``) under
/var/lib/gpupass/local/, builds ``gpupass-<id>`` there and installs that .deb with apt: the
package's pre-flight checks run, and ``apt remove`` undoes it.

The build runs as another process, ``python3 -m gpupass build-deb MODEL --local N``, from
the build side's source tree: /usr/share/gpupass/source (the gpupass tool package), else the
source checkout this module lives in. This module never imports the build side.

A local package's version is ``<upstream>+local<N>-1``: N is one more than the installed
local package's, so a laptop that changed (another GPU id after a BIOS update) gets an
upgrade of the same package, never a second one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from ... import model, paths
from ...errors import GpupassError
from .. import files, machine
from . import probe

LOCAL_DIR = paths.STATE_DIR / "local"
TOOL_SOURCE = paths.SHARE / "source"
LOCAL_VERSION = re.compile(r"\+local(\d+)-")
NEXT_STEPS = (
    "reboot: the kernel arguments and the initramfs take effect at the next boot",
    "sudo gpupass doctor: what is ready and what is not",
    "sudo gpupass vm define: the Windows VM",
    "gpupass report: once Windows runs on the GPU, the facts to confirm this model for the next person",
)


@dataclass(frozen=True)
class Plan:
    probed: probe.Probed
    laptop: model.Model  # the model setup installs (the published one, or the probed one)
    published: bool  # a published model matches: install it from the repositories
    installed: str | None  # the version of that package installed now, if any
    up_to_date: bool  # nothing to do
    local_number: int  # N of the local build (0 for a published model)

    @property
    def package(self) -> str:
        return self.laptop.package


def source_root() -> Path:
    """The build side's source tree: the tool package's, else this checkout."""
    return TOOL_SOURCE if TOOL_SOURCE.is_dir() else paths.SOURCE_ROOT


def local_model(probed: probe.Probed, when: datetime) -> probe.Probed:
    """The probed model as setup keeps it: not confirmed, saying where and when it was probed."""
    top, *rest = probed.tables
    source = f"probed on this laptop by gpupass setup on {when:%Y-%m-%d %H:%M} UTC; not yet confirmed"
    fields = tuple(probe.Field("confirmed", False, source) if f.key == "confirmed" else f for f in top.fields)
    return replace(probed, tables=(replace(top, fields=fields), *rest))


def functions(m: model.Model) -> set[tuple[str, str, str]]:
    return {(f.address, f.id, f.subsystem_id) for f in m.gpu.functions}


def matching_published(probed_model: model.Model, models_dir: Path) -> model.Model | None:
    """The published model for this laptop: same DMI vendor and product, same dGPU functions."""
    for path in sorted(models_dir.glob("*.toml")):
        published = model.load(path)
        if (published.smbios.manufacturer, published.smbios.product) == (
            probed_model.smbios.manufacturer,
            probed_model.smbios.product,
        ) and functions(published) == functions(probed_model):
            return published
    return None


def installed_version(package: str) -> str | None:
    result = subprocess.run(
        ["dpkg-query", "--show", "--showformat=${Version} ${db:Status-Status}", package],
        capture_output=True,
        text=True,
    )
    version, _, status = result.stdout.partition(" ")
    return version if result.returncode == 0 and status == "installed" else None


def stored_model(model_id: str) -> dict | None:
    try:
        return tomllib.loads((LOCAL_DIR / f"{model_id}.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None


def plan(snapshot: machine.Machine, now: datetime, installed_version=installed_version) -> Plan:
    probed = local_model(probe.probe(snapshot), now)  # refused: nothing changes
    mine = model.parse(probed.toml(), probed.model_id, "the probed model")
    published = matching_published(mine, source_root() / "models")
    laptop = published or mine
    installed = installed_version(laptop.package)
    if published:
        return Plan(probed, laptop, True, installed, installed is not None, 0)
    found = LOCAL_VERSION.search(installed or "")
    number = int(found.group(1)) if found else 0
    same = installed is not None and stored_model(mine.id) == probed.data()
    return Plan(probed, laptop, False, installed, same, number if same else number + 1)


def summary(plan: Plan, snapshot: machine.Machine) -> list[str]:
    m = plan.laptop
    lines = [f"laptop: {m.name} (model {m.id}, package {plan.package})"]
    for f in m.gpu.functions:
        group = next((g for g, members in snapshot.iommu_groups.items() if f.address in members), "unknown")
        subsystem = f" subsystem {f.subsystem_id}" if f.subsystem_id else ""
        lines.append(f"dGPU {f.role}: {f.address} [{f.id}]{subsystem}, IOMMU group {group}")
    lines.append(f"CPU pinning: {', '.join(map(str, m.cpu.performance_cpus))} ({m.vm.vcpus} vCPUs for the VM)")
    lines.append(f"kernel arguments (GRUB drop-in): {' '.join(m.kernel_args)}")
    lines.append(f"initramfs: rebuilt once, vfio-pci binds {', '.join(m.gpu.ids)} at boot")
    lines.append(f"gpupass vm define will make the VM {m.vm.name!r} ({m.vm.memory_mib} MiB, {m.vm.vcpus} vCPUs)")
    if plan.published:
        lines.append(f"a published model matches: {plan.package} from the configured apt repositories")
    else:
        lines.append(f"no published model matches: {plan.package} is built here from the probed model")
    return lines


def build_local(plan: Plan) -> Path:
    """Write the probed model under LOCAL_DIR and build its package there (another process)."""
    model_file = LOCAL_DIR / f"{plan.laptop.id}.toml"
    files.write_atomically(model_file, plan.probed.toml().encode("utf-8"))
    source = source_root()
    argv = [sys.executable, "-m", "gpupass", "build-deb", str(model_file), "--local", str(plan.local_number)]
    result = subprocess.run(
        [*argv, "--out", str(LOCAL_DIR)],
        env={**os.environ, "PYTHONPATH": str(source / "pkg"), "GPUPASS_SOURCE": str(source)},
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise GpupassError(
            [f"building {plan.package} failed ({result.returncode}):", *result.stderr.strip().splitlines()[-15:]],
            hint=f"the model is in {model_file}; nothing was installed",
        )
    return Path(result.stdout.strip().splitlines()[-1])


def apt_install(target: str) -> None:
    """apt-get install, its output shown as it goes (the package's pre-flight checks, GRUB, the
    initramfs)."""
    sys.stdout.flush()
    result = subprocess.run(
        ["apt-get", "install", "--yes", target], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    )
    if result.returncode:
        raise GpupassError(f"apt-get install {target} failed ({result.returncode}): its output is above")


def require_build_side(plan: Plan) -> None:
    """A local build needs the build side: the gpupass tool package, or a source checkout."""
    if not (source_root() / "pkg" / "gpupass" / "packaging").is_dir():
        raise GpupassError(
            f"building {plan.package} needs gpupass's build side, which is not installed",
            hint=f"sudo apt install gpupass (it replaces {plan.installed and plan.package or 'the model package'}),"
            " then sudo gpupass setup again",
        )


def run(root: Path, yes: bool, dry_run: bool, ask=input) -> int:
    snapshot = machine.read(root, processes=False)
    chosen = plan(snapshot, datetime.now(UTC))
    for line in summary(chosen, snapshot):
        print(line)
    for warning in chosen.probed.warnings:
        print(f"warning: {warning}")
    if chosen.up_to_date:
        print(f"nothing to change: {chosen.package} {chosen.installed} is installed for this laptop")
        return 0
    if dry_run:
        print("--dry-run: nothing was changed")
        return 0
    if not chosen.published:
        require_build_side(chosen)
    if not yes and ask("Set this laptop up? [y/N] ").strip().lower() not in ("y", "yes"):
        print("nothing was changed")
        return 1
    if chosen.published:
        apt_install(chosen.package)
        print(f"installed {chosen.package} from the configured repositories (a published model)")
    else:
        deb = build_local(chosen)
        apt_install(str(deb))
        print(f"built and installed {chosen.package} ({deb.name}) from the probed model")
    print("next:")
    for n, step in enumerate(NEXT_STEPS, 1):
        print(f"  {n}. {step}")
    return 0
