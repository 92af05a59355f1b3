"""``gpupass report``: what a maintainer needs to confirm a model, as Markdown to paste into an
issue (or ``--json``). Nothing is sent anywhere: it writes a file, or stdout.

Built from an allow-list of facts, each read as one value: the model (the validated one, as
TOML), ``gpupass doctor``'s lines (doctor's own code, diagnose.examine), the kernel release, the
distribution and the versions of libvirt, QEMU, OVMF and the host NVIDIA driver (software.py),
the dGPU's IOMMU groups (the machine snapshot), what the dGPU did at the VM's last shutdown (the
libvirt hook's record), the stored vBIOS's header facts (never its bytes), and a checklist of
what only the user sees in Windows. Every string then passes identifiers.Scrubber (the machine's
own identifiers and identifier shapes replaced); the report ends with what it left out.
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from ... import __version__, paths
from ...errors import GpupassError
from ...model import Model, to_toml
from ...paths import under
from .. import files
from ..doctor.diagnose import examine
from ..doctor.finding import exit_status
from ..doctor.finding import report as doctor_report
from ..machine import Machine
from ..power.status import read_record, record_line
from ..rom.format import RomError, parse_id, validate
from ..rom.store import origin_path, recorded_origin
from . import identifiers, software

QEMU_PACKAGE, OVMF_PACKAGE = "qemu-system-x86", "ovmf"
# Neither README.md nor debian/control names the project's issue tracker yet: put its URL here then.
ISSUE_TRACKER = "the project's issue tracker"
# What only the user can see, to fill in: (what, the answers to tick).
CHECKLIST = (
    ("Windows version (winver)", ()),
    ("NVIDIA (or AMD) driver version in Windows", ()),
    ("Device Manager shows the GPU", ("working", "Code 43", "other (say which)")),
    ("`_ROM` table (guest.acpi_rom)", ("not tried", "on: working", "on: Code 43", "off: working", "off: Code 43")),
    ("NVPCF / Dynamic Boost (guest.nvpcf)", ("not tried", "on: Dynamic Boost shown", "on: not shown")),
    ("anything else you changed in the model or the VM", ()),
)


def _version(v: int) -> str:
    return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"


def check_root(root: Path) -> None:
    try:
        with os.scandir(root):
            pass
    except OSError as e:
        raise GpupassError(
            f"{root}: cannot be read: {e.strerror}", hint="--root names the laptop's file system (default: /)"
        ) from None


def iommu_groups(model: Model, snapshot: Machine) -> list[dict[str, Any]]:
    """The IOMMU groups of the model's functions, every device in each, as the snapshot has them."""
    groups: list[dict[str, Any]] = []
    for function in model.gpu.functions:
        device = snapshot.device(function.address)
        if device is None or device.iommu_group is None:
            why = "no PCI device there" if device is None else "no IOMMU group"
            groups.append({"group": None, "function": function.address, "devices": [], "why": why})
            continue
        if any(g["group"] == device.iommu_group for g in groups):
            continue  # listed with an earlier function
        devices = []
        for address in snapshot.iommu_groups.get(device.iommu_group, (function.address,)):
            d = snapshot.device(address)
            devices.append({
                "address": address,
                "id": f"{d.vendor}:{d.device}" if d else None,
                "class": d.class_code if d else None,
                "driver": d.driver if d else None,
            })  # fmt: skip
        groups.append({"group": device.iommu_group, "function": function.address, "devices": devices, "why": ""})
    return groups


def vbios_facts(model: Model, root: Path) -> dict[str, Any]:
    """The stored vBIOS's header facts and where it came from; never its bytes."""
    rom_path = under(root, paths.VBIOS_ROM)
    try:
        data = rom_path.read_bytes()
    except FileNotFoundError:
        return {"stored": False, "problem": f"no vBIOS at {paths.VBIOS_ROM}"}
    except OSError as e:
        return {"stored": True, "problem": f"{paths.VBIOS_ROM}: cannot be read: {e.strerror}"}
    try:
        origin_text = under(root, origin_path(paths.VBIOS_ROM)).read_text(encoding="utf-8", errors="replace")
    except OSError:
        origin_text = None
    facts: dict[str, Any] = {
        "stored": True,
        "source": recorded_origin(data, origin_text) if origin_text is not None else None,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    try:
        rom = validate(data, *parse_id(model.gpu_function.id), source=str(paths.VBIOS_ROM))
    except RomError as e:
        return {**facts, "valid": False, "problem": e.problems[0]}
    first = rom.images[0]
    return {
        **facts,
        "valid": True,
        "vendor": f"{first.vendor:04x}",
        "device": f"{first.device:04x}",
        "images": [f"{image.code_name} ({image.id}, {image.size} bytes)" for image in rom.images],
        "problem": "",
    }


def vm_off(root: Path) -> dict[str, Any]:
    """What the dGPU did at the VM's last shutdown: the libvirt hook's record, in its own words."""
    record = read_record(root)
    if record is None:
        line = f"unknown: no record ({paths.RELEASE_RECORD}); shut the VM down once, then report"
        return {"d3cold": None, "line": line}
    try:
        line = record_line(record)
    except (KeyError, TypeError):
        return {"d3cold": None, "line": f"unknown: {paths.RELEASE_RECORD} is not a record gpupass wrote"}
    return {"d3cold": bool(record.get("d3cold")), "asleep": bool(record.get("asleep")), "line": line}


def gather(model: Model, root: Path = Path("/"), **ask: Any) -> dict[str, Any]:
    """Every fact of the report, unscrubbed: nothing but what is named here. ``ask``: doctor's
    questions (vm_name, uri; initramfs and libvirt as data), as diagnose.examine takes them."""
    check_root(root)
    snapshot, facts, findings = examine(model, root, **ask)
    lv = facts.libvirt
    packages = software.package_versions(root, (QEMU_PACKAGE, OVMF_PACKAGE))
    dmi = snapshot.dmi
    return {
        "gpupass": __version__,
        "model": {
            "id": model.id,
            "name": model.name,
            "package": model.package,
            "confirmed": model.confirmed,
            "toml": to_toml(model),
        },
        "laptop": {
            "vendor": dmi.vendor,
            "product": dmi.product,
            "version": dmi.version,
            "family": dmi.family,
            "cpu": snapshot.cpu_model,
        },
        "software": {
            "kernel": snapshot.kernel_release,
            "distribution": software.distribution(root),
            "libvirt": _version(lv.survey.version) if lv.survey else None,
            "libvirt_problem": lv.problem,
            "qemu": packages.get(QEMU_PACKAGE) if packages is not None else None,
            "ovmf": packages.get(OVMF_PACKAGE) if packages is not None else None,
            "dpkg_status": packages is not None,
            "nvidia_driver": software.nvidia_driver(root),
        },
        "doctor": {
            "lines": doctor_report(model, findings).splitlines(),
            "status": exit_status(findings),
            "findings": [asdict(f) for f in findings],
        },
        "iommu_groups": iommu_groups(model, snapshot),
        "vm_off": vm_off(root),
        "vbios": vbios_facts(model, root),
        "checklist": [{"what": what, "answers": list(answers)} for what, answers in CHECKLIST],
        "issue_tracker": ISSUE_TRACKER,
    }


# Markdown -----------------------------------------------------------------------------


def _package(facts: dict[str, Any], key: str, package: str) -> str:
    if not facts["software"]["dpkg_status"]:
        return "unknown (no dpkg status file)"
    version = facts["software"][key]
    return f"{version} ({package})" if version else f"not installed ({package})"


def _vbios_lines(v: dict[str, Any]) -> list[str]:
    if not v["stored"] or "size" not in v:
        return [f"- {v['problem']}"]
    lines = [f"- source: {v['source'] or 'unknown (no record of where it came from describes this file)'}"]
    if v["valid"]:
        lines += [f"- vendor:device: {v['vendor']}:{v['device']}", f"- images: {'; '.join(v['images'])}"]
    else:
        lines.append(f"- not a valid ROM for the model's GPU: {v['problem']}")
    return lines + [f"- size: {v['size']} bytes", f"- sha256: {v['sha256']}"]


def _group_lines(groups: list[dict[str, Any]]) -> list[str]:
    lines = []
    for g in groups:
        if g["group"] is None:
            lines.append(f"{g['function']}: {g['why']}")
            continue
        lines.append(f"IOMMU group {g['group']}:")
        for d in g["devices"]:
            lines.append(f"  {d['address']} [{d['id']}] class {d['class']}, driver {d['driver'] or 'none'}")
    return lines


def markdown(facts: dict[str, Any]) -> str:
    m, s, laptop = facts["model"], facts["software"], facts["laptop"]
    confirmed = "yes" if m["confirmed"] else "no, this report is what would confirm it"
    dmi = " / ".join(laptop[k] or "?" for k in ("vendor", "product", "version", "family"))
    libvirt = s["libvirt"] or f"unknown ({s['libvirt_problem']})"
    lines = [
        f"# gpupass report: {m['name']} ({m['package']})",
        "",
        f"Written by gpupass {facts['gpupass']} for a maintainer to confirm the model; nothing was sent anywhere.",
        "",
        "## The laptop",
        "",
        f"- model: {m['id']} (confirmed: {confirmed})",
        f"- DMI vendor / product / version / family: {dmi}",
        f"- CPU: {laptop['cpu'] or 'unknown'}",
        f"- kernel: {s['kernel'] or 'unknown'}",
        f"- distribution: {s['distribution'] or 'unknown (no os-release)'}",
        f"- libvirt: {libvirt}",
        f"- QEMU: {_package(facts, 'qemu', QEMU_PACKAGE)}",
        f"- OVMF: {_package(facts, 'ovmf', OVMF_PACKAGE)}",
        f"- host NVIDIA driver: {s['nvidia_driver'] or 'none loaded'}",
        "",
        "## gpupass doctor",
        "",
        "```",
        *facts["doctor"]["lines"],
        "```",
        "",
        "## IOMMU groups of the dGPU",
        "",
        "```",
        *_group_lines(facts["iommu_groups"]),
        "```",
        "",
        "## The dGPU with the VM off (D3cold?)",
        "",
        facts["vm_off"]["line"],
        "",
        "## vBIOS (header facts; the ROM itself is not included)",
        "",
        *_vbios_lines(facts["vbios"]),
        "",
        f"## The model file ({m['id']}.toml)",
        "",
        "```toml",
        *m["toml"].splitlines(),
        "```",
        "",
        "## In Windows (only you can see these: fill them in)",
        "",
    ]
    for item in facts["checklist"]:
        answers = "  ".join(f"[ ] {a}" for a in item["answers"])
        lines.append(f"- {item['what']}: {answers or '...'}")
    return "\n".join(lines) + "\n"


# The command --------------------------------------------------------------------------


def make(model: Model, root: Path = Path("/"), *, as_json: bool = False, **ask: Any) -> str:
    """The report as it is written: scrubbed, ending with what it left out."""
    facts = gather(model, root, **ask)
    scrubber = identifiers.Scrubber(identifiers.read(root))
    left_out = ["the vBIOS's bytes"]
    if as_json:
        data = scrubber.scrub_data(facts)
        return json.dumps({**data, "left_out": scrubber.left_out() + left_out}, indent=2) + "\n"
    text = scrubber.scrub(markdown(facts))
    return f"{text}\n---\nleft out: {', '.join(scrubber.left_out() + left_out)}\n"


def cli(
    model: Model,
    root: Path = Path("/"),
    *,
    out_file: str | None = None,
    as_json: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    **ask: Any,
) -> int:
    text = make(model, root, as_json=as_json, **ask)
    where = f"open an issue at {ISSUE_TRACKER} and paste it (nothing was sent anywhere)"
    if out_file:
        try:  # atomically: the old file or the whole report
            files.write_atomically(Path(out_file), text.encode("utf-8"))
        except OSError as e:
            raise GpupassError(f"cannot write {out_file}: {e.strerror}") from None
        print(f"wrote {out_file}: {where}", file=stderr or sys.stderr)
    else:
        (stdout or sys.stdout).write(text)
        print(f"gpupass: to share it, {where}", file=stderr or sys.stderr)
    return 0
