"""``gpupass power``: the laptop's power source drives the VM, and the user sees what the dGPU does.

- ``apply`` (run by gpupass-power.service, which the udev rule starts when the AC adapter
  comes or goes): reads the power source again and does what /etc/gpupass/power.conf asks.
  On battery a running VM is told about (``notify``) or asked to shut down (``shutdown``: the
  ACPI power button, and the guest agent where the domain has one), never forced off; on AC a
  shut-off VM is started only with ``on_ac = start``.
- ``record`` (run by the libvirt hook when the domain is released): a few seconds later,
  whether each passed function reached runtime suspend and the GPU D3cold, and why not.
- ``status``: AC or battery, the draw and charge, the VM, each passed function's power state,
  the last release record. Reads only world-readable files and libvirt's read-only socket.

What to do is ``decide``, a pure function of (config, AC state, domain state) whose answers
are ``ACTIONS``: there is no forced stop among them, and libvirtconn has no call for one.
Standard library only.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TextIO

from .. import paths
from ..errors import GpupassError
from ..model import Model
from . import command, libvirtconn, machine
from .doctor import dgpu_sleep

# What the config may ask for, and what gpupass may do: nothing else (no destroy, no pause).
NOTHING, NOTIFY, SHUTDOWN, START = "nothing", "notify", "shutdown", "start"
ACTIONS = (NOTHING, NOTIFY, SHUTDOWN, START)
ON_BATTERY = (NOTHING, NOTIFY, SHUTDOWN)
ON_AC = (NOTHING, START)
DOMAIN_STATES = (libvirtconn.RUNNING, libvirtconn.PAUSED, libvirtconn.SHUT_OFF, libvirtconn.MISSING)
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Config:
    on_battery: str = NOTIFY
    shutdown_timeout: int = 120  # seconds
    on_ac: str = NOTHING
    domain: str | None = None  # None: the one gpupass vm define made or vm attach last changed


def parse_config(text: str, source: str) -> Config:
    """``key = value`` lines and ``#`` comments; the first bad line is an error naming it."""
    values: dict[str, object] = {}
    choices = {"on_battery": ON_BATTERY, "on_ac": ON_AC}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{number}"
        key, eq, value = (part.strip() for part in line.partition("="))
        if not eq or not key:
            raise GpupassError(f"{where}: {line!r} is not a 'key = value' line")
        if key in choices:
            if value not in choices[key]:
                raise GpupassError(f"{where}: {key}: {value!r} is not one of {', '.join(choices[key])}")
            values[key] = value
        elif key == "shutdown_timeout":
            if not value.isdigit() or not 0 < int(value) <= 3600:
                raise GpupassError(f"{where}: shutdown_timeout: {value!r} is not a number of seconds (1 to 3600)")
            values[key] = int(value)
        elif key == "domain":
            if not value:
                raise GpupassError(f"{where}: domain: empty (expected a libvirt domain's name)")
            values[key] = value
        else:
            known = ", ".join(f.name for f in fields(Config))
            raise GpupassError(f"{where}: unknown key {key!r} (known: {known})")
    return Config(**values)  # type: ignore[arg-type]


def load_config(path: Path) -> Config:
    """The settings in ``path``; without the file, the defaults."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except OSError as e:
        raise GpupassError(f"{path}: cannot be read: {e.strerror}") from None
    return parse_config(text, str(path))


def decide(config: Config, on_ac: bool | None, domain_state: str) -> str:
    """What to do about the domain, in ``ACTIONS``. Unknown AC (no adapter seen): nothing.

    A paused guest cannot act on the power button, and resuming it is not what the user asked:
    it is only told about."""
    if on_ac is None:
        return NOTHING
    if on_ac:
        return START if config.on_ac == START and domain_state == libvirtconn.SHUT_OFF else NOTHING
    if config.on_battery == NOTHING or domain_state not in (libvirtconn.RUNNING, libvirtconn.PAUSED):
        return NOTHING
    if config.on_battery == SHUTDOWN and domain_state == libvirtconn.RUNNING:
        return SHUTDOWN
    return NOTIFY


# The domain it applies to -------------------------------------------------------------


def under(root: Path, path: Path) -> Path:
    return root / str(path).lstrip("/")


def remember_domain(name: str, record: Path = paths.VM_RECORD) -> None:
    """Called by gpupass vm define and attach: the domain gpupass power acts on by default."""
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(name + "\n", encoding="utf-8")
    except OSError as e:
        raise GpupassError(f"cannot record the domain in {record}: {e.strerror}") from None


def domain_name(config: Config, root: Path) -> str | None:
    if config.domain:
        return config.domain
    try:
        return under(root, paths.VM_RECORD).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


# What the user is told ----------------------------------------------------------------


def battery_words(supplies: machine.PowerSupplies) -> str:
    """'on battery: BAT0 discharging, 12.3 W, 76 %' (what sysfs tells of each battery)."""
    source = {True: "on AC", False: "on battery", None: "no AC adapter seen"}[supplies.on_ac]
    parts = []
    for b in supplies.batteries:
        facts = [b.status.lower()] if b.status else []
        if b.power_uw is not None:
            facts.append(f"{b.power_uw / 1e6:.1f} W")
        if b.capacity_percent is not None:
            facts.append(f"{b.capacity_percent} %")
        parts.append(f"{b.name} {', '.join(facts)}" if facts else b.name)
    return f"{source}: {'; '.join(parts)}" if parts else source


def notify_sessions(
    summary: str, body: str, root: Path = Path("/"), run: Callable = command.run, *, urgent: bool = False
) -> list[str]:
    """A desktop notification in each user session (a session bus under /run/user) where
    notify-send is installed; best effort: the journal has the message anyway. Returns the users told."""
    told = []
    try:
        uids = sorted(int(n) for n in os.listdir(under(root, Path("/run/user"))) if n.isdigit())
    except OSError:
        uids = []
    for uid in uids:
        bus = f"/run/user/{uid}/bus"
        if not os.path.exists(under(root, Path(bus))):
            continue
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            continue
        argv = ["notify-send", "--app-name=gpupass", f"--urgency={'critical' if urgent else 'normal'}", summary, body]
        if os.geteuid() != uid:
            argv = ["runuser", "-u", user, "--", "env", f"DBUS_SESSION_BUS_ADDRESS=unix:path={bus}", *argv]
        try:
            run(argv, "libnotify-bin")
        except GpupassError:
            continue  # no notify-send, no notification daemon: the journal still has it
        told.append(user)
    return told


@dataclass
class Teller:
    """Every message goes to stdout (the journal, under systemd) and, when ``desktop``, to the sessions."""

    out: TextIO
    root: Path = Path("/")
    desktop: bool = True
    run: Callable = command.run

    def __call__(self, message: str, *, urgent: bool = False, desktop: bool = True) -> None:
        """``desktop=False``: the journal only (what gpupass did not need to tell the user)."""
        self.out.write(f"gpupass power: {message}\n")
        self.out.flush()
        if self.desktop and desktop:
            notify_sessions("gpupass: the VM and the battery", message, self.root, self.run, urgent=urgent)


# apply --------------------------------------------------------------------------------


def apply(
    config: Config,
    root: Path = Path("/"),
    uri: str | None = None,
    *,
    tell: Teller,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Do what ``config`` asks for the present power source: 0 done, 1 the VM did not stop in time."""
    name = domain_name(config, root)
    supplies = machine.power_supplies(root)
    if name is None:
        if (config.on_battery, config.on_ac) != (NOTHING, NOTHING):
            tell(
                f"{battery_words(supplies)}; no VM to act on: set domain = NAME in {paths.POWER_CONF},"
                " or run gpupass vm define or gpupass vm attach"
            )
        return 0
    conn = libvirtconn.connect(uri)
    try:
        state, _reason = libvirtconn.state(conn, name)
        action = decide(config, supplies.on_ac, state)
        where = battery_words(supplies)
        shutdown_command = f"virsh{f' --connect {uri}' if uri else ''} shutdown {name}"
        if action == NOTHING:
            tell(f"{where}; {name} is {state}: nothing to do", desktop=False)
            return 0
        if action == START:
            libvirtconn.start(conn, name)
            tell(f"{where}; started {name} (on_ac = start)")
            return 0
        if action == NOTIFY:
            why = "it is paused: resume it to shut it down" if state == libvirtconn.PAUSED else "shut it down"
            tell(
                f"{where}; {name} is {state} and keeps the dGPU powered (no D3cold while it runs):"
                f" {why}: {shutdown_command}"
            )
            return 0
        return _shut_down(conn, name, config, root, tell, sleep, clock, where)
    finally:
        conn.close()


def _shut_down(
    conn: object,
    name: str,
    config: Config,
    root: Path,
    tell: Teller,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    where: str,
) -> int:
    notes = libvirtconn.request_shutdown(conn, name)
    extra = f" ({'; '.join(notes)})" if notes else ""
    tell(f"{where}; asked {name} to shut down{extra}, waiting up to {config.shutdown_timeout} s", desktop=False)
    deadline = clock() + config.shutdown_timeout
    while True:
        state, reason = libvirtconn.state(conn, name)
        if state in (libvirtconn.SHUT_OFF, libvirtconn.MISSING):  # a transient domain is gone once off
            tell(f"{name} is {state}{f' ({reason})' if reason else ''}: the dGPU can power off")
            return 0
        if machine.power_supplies(root).on_ac:
            tell(f"the AC adapter is back: stopped waiting for {name} to shut down (the guest was already asked)")
            return 0
        if clock() >= deadline:
            tell(
                f"{name} is still running {config.shutdown_timeout} s after it was asked to shut down;"
                f" gpupass never forces a VM off: shut Windows down yourself, and the dGPU can power off",
                urgent=True,
            )
            return 1
        sleep(POLL_SECONDS)


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


# Command line -------------------------------------------------------------------------


def cli_apply(root: Path, config_path: Path | None, uri: str | None, out: TextIO | None = None) -> int:
    config = load_config(config_path or under(root, paths.POWER_CONF))  # a bad file: an error, nothing done
    return apply(config, root, uri, tell=Teller(out or sys.stdout, root))


def cli_status(model: Model, root: Path, uri: str | None, as_json: bool, out: TextIO | None = None) -> int:
    config = load_config(under(root, paths.POWER_CONF))
    name = domain_name(config, root)
    snapshot = machine.read(root, rebar=False, processes=False)
    s = status(model, snapshot, name, vm_state(name, uri), read_record(root))
    (out or sys.stdout).write(json.dumps(s, indent=2) + "\n" if as_json else status_text(model, s))
    return 0
