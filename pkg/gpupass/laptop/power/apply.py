"""``gpupass power apply``: do what power.conf asks for the power source now; tell the user
(the journal, and a desktop notification where a session has notify-send). Never forces a VM off."""

from __future__ import annotations

import os
import pwd
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ... import paths
from ...errors import GpupassError
from ...paths import under
from .. import command, machine
from ..vm import libvirtconn
from .policy import NOTHING, NOTIFY, POLL_SECONDS, START, Config, decide, domain_name, load_config

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
        if state == libvirtconn.MISSING:  # a transient domain (virsh create) is gone once it is off
            tell(f"{name} has shut down and is gone (a transient domain): the dGPU can power off")
            return 0
        if state == libvirtconn.SHUT_OFF:
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


def cli_apply(root: Path, config_path: Path | None, uri: str | None, out: TextIO | None = None) -> int:
    config = load_config(config_path or under(root, paths.POWER_CONF))  # a bad file: an error, nothing done
    return apply(config, root, uri, tell=Teller(out or sys.stdout, root))
