"""``gpupass power status`` (AC or battery, the VM, each passed function's power state) and
``record``, run by the libvirt hook when the domain is released: what became of the dGPU."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ... import paths
from ...errors import GpupassError
from ...model import Model
from ...paths import under
from .. import machine
from ..gpu.sleep import dgpu_sleep
from ..vm import libvirtconn
from .policy import domain_name, load_config

# record (the libvirt hook, on release) ------------------------------------------------


def release_record(model: Model, m: machine.Machine, domain: str, when: float) -> dict:
    """What became of the dGPU after the domain let it go: the hook's record, as JSON data."""
    gpu = m.device(model.gpu_function.address)
    record: dict = {"domain": domain, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))}
    if gpu is None:
        return {**record, "asleep": False, "d3cold": False, "devices": [],
                "why": f"no PCI device at {model.gpu_function.address}"}  # fmt: skip
    sleep = dgpu_sleep(model, m, gpu)
    devices = [{"address": d.address, "runtime_status": d.runtime_status, "power_state": d.power_state}
               for d in sleep.devices]  # fmt: skip
    why = "; ".join(c for c, _ in sleep.causes) or "nothing gpupass knows of keeps it awake"
    return {
        **record,
        "asleep": sleep.asleep,
        "d3cold": gpu.power_state == "D3cold",
        "devices": devices,
        "why": "" if sleep.asleep else why,
    }


def record_line(record: dict) -> str:
    states = ", ".join(f"{d['address']} {d['runtime_status'] or 'unknown'} ({d['power_state'] or '?'})"
                       for d in record["devices"])  # fmt: skip
    head = f"last release of {record['domain']} at {record['time']}"
    if record["asleep"]:
        cold = "D3cold" if record["d3cold"] else "runtime-suspended, not D3cold"
        return f"{head}: the dGPU slept ({cold}): {states}"
    return f"{head}: the dGPU stayed awake: {states}; {record['why']}"


def record(
    model: Model,
    domain: str,
    root: Path = Path("/"),
    *,
    delay: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.time,
) -> Path | None:
    """After ``delay`` seconds (vfio-pci suspends an idle device after a few), write the release
    record; only for the domain gpupass power applies to."""
    config = load_config(under(root, paths.POWER_CONF))
    if domain != domain_name(config, root):
        return None
    sleep(delay)
    snapshot = machine.read(root, rebar=False, processes=False)  # rebar=False: nothing wakes the device
    target = under(root, paths.RELEASE_RECORD)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_suffix(".tmp")
    scratch.write_text(json.dumps(release_record(model, snapshot, domain, now()), indent=2) + "\n", encoding="utf-8")
    scratch.chmod(0o644)
    scratch.replace(target)
    return target


# status -------------------------------------------------------------------------------


def status(model: Model, m: machine.Machine, name: str | None, vm_state: tuple[str, str], last: dict | None) -> dict:
    """``gpupass power status`` as data (``--json``); ``vm_state`` is (state, detail)."""
    supplies = m.power
    source = {True: "ac", False: "battery", None: "unknown"}[supplies.on_ac]
    functions = []
    for f in model.gpu.functions:
        d = m.device(f.address)
        functions.append(
            {
                "address": f.address,
                "role": f.role,
                "driver": d.driver if d else None,
                "runtime_status": d.runtime_status if d else None,
                "power_state": d.power_state if d else None,
            }
        )
    gpu = m.device(model.gpu_function.address)
    sleep = dgpu_sleep(model, m, gpu) if gpu else None
    port = sleep.port if sleep else None
    dgpu: dict = {"asleep": sleep.asleep if sleep else None, "why": ""}
    if sleep and not sleep.asleep:
        dgpu["why"] = "; ".join(c for c, _ in sleep.causes)
    return {
        "power": {
            "source": source,
            "batteries": [
                {
                    "name": b.name,
                    "status": b.status,
                    "draw_w": None if b.power_uw is None else round(b.power_uw / 1e6, 1),
                    "charge_percent": b.capacity_percent,
                }
                for b in supplies.batteries
            ],
        },
        "vm": {"name": name, "state": vm_state[0], "detail": vm_state[1]},
        "functions": functions,
        "root_port": None
        if port is None
        else {"address": port.address, "runtime_status": port.runtime_status, "power_state": port.power_state},
        "dgpu": dgpu,
        "last_release": last,
    }


def status_text(model: Model, s: dict) -> str:
    words = {"ac": "on AC", "battery": "on battery", "unknown": "no AC adapter seen"}
    lines = [f"gpupass power: {model.name} ({model.package})", f"power: {words[s['power']['source']]}"]
    for b in s["power"]["batteries"]:
        facts = [b["status"].lower()] if b["status"] else []
        if b["draw_w"] is not None:
            facts.append(f"drawing {b['draw_w']:.1f} W")
        if b["charge_percent"] is not None:
            facts.append(f"{b['charge_percent']} % charged")
        lines.append(f"battery {b['name']}: {', '.join(facts) or 'no readings'}")
    vm = s["vm"]
    if vm["name"] is None:
        lines.append(f"VM: none known (set domain = NAME in {paths.POWER_CONF}, or run gpupass vm define or attach)")
    else:
        detail = f" ({vm['detail']})" if vm["detail"] else ""
        lines.append(f"VM {vm['name']}: {vm['state']}{detail}")
    for f in s["functions"]:
        lines.append(
            f"{f['address']} ({f['role']}, {f['driver'] or 'no driver'}):"
            f" {f['runtime_status'] or 'unknown'}, {f['power_state'] or '?'}"
        )
    if s["root_port"]:
        p = s["root_port"]
        lines.append(f"{p['address']} (root port): {p['runtime_status'] or 'unknown'}, {p['power_state'] or '?'}")
    if vm["state"] in (libvirtconn.RUNNING, libvirtconn.PAUSED):
        lines.append(f"dGPU: {vm['name']}'s while it is {vm['state']}")
    elif s["dgpu"]["asleep"] is None:
        lines.append(f"dGPU: no PCI device at {model.gpu_function.address}")
    elif s["dgpu"]["asleep"]:
        gpu = next(f for f in s["functions"] if f["address"] == model.gpu_function.address)
        cold = gpu["power_state"] == "D3cold"
        lines.append(
            "dGPU: asleep, powered off (D3cold)"
            if cold
            else f"dGPU: asleep ({gpu['power_state'] or '?'}), not powered off"
        )
    else:
        lines.append(f"dGPU: awake, costing battery: {s['dgpu']['why'] or 'nothing gpupass knows of keeps it so'}")
    last = s["last_release"]
    lines.append(record_line(last) if last else "last release: none recorded")
    return "\n".join(lines) + "\n"


def read_record(root: Path) -> dict | None:
    try:
        return json.loads(under(root, paths.RELEASE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def vm_state(name: str | None, uri: str | None) -> tuple[str, str]:
    """The domain's state through libvirt's read-only socket, or 'unknown' with the reason."""
    if name is None:
        return "unknown", ""
    try:
        conn = libvirtconn.connect(uri, read_only=True)
    except GpupassError as e:
        return "unknown", e.problems[0]
    try:
        return libvirtconn.state(conn, name)
    except GpupassError as e:
        return "unknown", e.problems[0]
    finally:
        conn.close()


def cli_status(model: Model, root: Path, uri: str | None, as_json: bool, out: TextIO | None = None) -> int:
    config = load_config(under(root, paths.POWER_CONF))
    name = domain_name(config, root)
    snapshot = machine.read(root, rebar=False, processes=False)
    s = status(model, snapshot, name, vm_state(name, uri), read_record(root))
    (out or sys.stdout).write(json.dumps(s, indent=2) + "\n" if as_json else status_text(model, s))
    return 0
