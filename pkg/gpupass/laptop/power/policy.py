"""What /etc/gpupass/power.conf asks, and ``decide``: what to do about the domain for a power
source, a pure function whose answers are ``ACTIONS`` (no forced stop among them)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from ...errors import GpupassError
from ..vm import libvirtconn, record

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


def domain_name(config: Config, root: Path) -> str | None:
    return config.domain or record.remembered_domain(root)
