"""The one place that talks to libvirt, through its Python API (Debian's python3-libvirt).

Every libvirt error becomes a GpupassError with libvirt's own message; nothing here parses
virsh output. python3-libvirt is a Recommends of the package (the laptop has libvirt
anyway), so its absence is a message with the package to install, not a traceback.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from ...errors import GpupassError

DEFAULT_URI = "qemu:///system"


class NoPythonApi(GpupassError):
    """python3-libvirt is not installed."""


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise NoPythonApi(
            "libvirt's Python API is not installed (import libvirt failed)", hint="install python3-libvirt"
        ) from None
    # libvirt prints every error to stderr itself unless a handler takes them; they reach
    # the user once, as the GpupassError raised below.
    libvirt.registerErrorHandler(lambda _ctx, _error: None, None)
    return libvirt


def _message(error: Exception) -> str:
    get = getattr(error, "get_error_message", None)
    return (get() if get else None) or str(error)


def connect(uri: str | None = None, *, read_only: bool = False) -> Any:
    """A connection; ``read_only`` needs no privileges (libvirt's read-only socket is open to all)."""
    libvirt = _libvirt()
    uri = uri or DEFAULT_URI
    try:
        return libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise GpupassError(
            f"cannot connect to libvirt at {uri}: {_message(e)}",
            hint="run as root (sudo), or as a member of the libvirt group",
        ) from None


def version(conn: Any) -> int:
    """The daemon's libvirt version as major * 1000000 + minor * 1000 + micro."""
    return conn.getLibVersion()


def host_cpus(conn: Any) -> tuple[int, ...]:
    """The host's online CPUs, as the libvirt host sees them."""
    _count, online, _online_count = conn.getCPUMap()
    return tuple(cpu for cpu, up in enumerate(online) if up)


def exists(conn: Any, name: str) -> bool:
    libvirt = _libvirt()
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError:
        return False
    return True


def lookup(conn: Any, name: str) -> Any:
    libvirt = _libvirt()
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        known = ", ".join(sorted(d.name() for d in conn.listAllDomains())) or "none"
        raise GpupassError(
            f"no domain named {name} (domains: {known})", hint="gpupass vm define creates one from the model"
        ) from None


def is_active(domain: Any) -> bool:
    return bool(domain.isActive())


def inactive_xml(domain: Any) -> str:
    """The persistent definition, secrets included (VNC passwords): redefining it must not lose them."""
    libvirt = _libvirt()
    return domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)


def define(conn: Any, xml: str) -> Any:
    """Define (or redefine) a domain; libvirt checks it against its schema first."""
    libvirt = _libvirt()
    try:
        return conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    except libvirt.libvirtError as e:
        raise GpupassError(f"libvirt refused the domain: {_message(e)}") from None


@dataclass(frozen=True)
class Survey:
    """What ``gpupass doctor`` needs from libvirt, read in one connection."""

    version: int
    host_cpus: tuple[int, ...]
    domains: tuple[str, ...]
    domain_xml: str | None  # the named domain's persistent definition; None: no such domain
    domain_active: bool


def survey(conn: Any, name: str) -> Survey:
    libvirt = _libvirt()
    try:
        domains = tuple(sorted(d.name() for d in conn.listAllDomains()))
        xml, active = None, False
        if name in domains:
            domain = conn.lookupByName(name)
            xml, active = inactive_xml(domain), is_active(domain)
        return Survey(version(conn), host_cpus(conn), domains, xml, active)
    except libvirt.libvirtError as e:
        raise GpupassError(f"libvirt: {_message(e)}") from None


# A domain's state, as gpupass power decides on it ----------------------------------------

RUNNING, PAUSED, SHUT_OFF, MISSING = "running", "paused", "shut off", "missing"
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


def state(conn: Any, name: str) -> tuple[str, str]:
    """(running | paused | shut off | missing, libvirt's reason in words) of the domain ``name``."""
    libvirt = _libvirt()
    try:
        domain = conn.lookupByName(name)
        code, reason = domain.state()
    except libvirt.libvirtError as e:
        # A transient domain (virsh create) is undefined the moment it shuts off, possibly
        # between the lookup and the question: gone is shut off for good.
        if _gone(libvirt, e):
            return MISSING, ""
        raise GpupassError(f"libvirt: {name}: {_message(e)}") from None
    if code in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
        words = {
            libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shutdown",
            libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
            libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
            libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed",
        }
        return SHUT_OFF, words.get(reason, "") if code == libvirt.VIR_DOMAIN_SHUTOFF else "crashed"
    if code in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
        return PAUSED, ""
    return RUNNING, ""  # running, blocked, or already shutting down


def _gone(libvirt: Any, error: Exception) -> bool:
    """libvirt says the domain does not exist (any more)."""
    return getattr(error, "get_error_code", lambda: None)() == libvirt.VIR_ERR_NO_DOMAIN


def has_guest_agent(conn: Any, name: str) -> bool:
    """The domain has a channel for the QEMU guest agent (it may still not be answering)."""
    root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    return any(t.get("name") == GUEST_AGENT_CHANNEL for t in root.iterfind("devices/channel/target"))


def request_shutdown(conn: Any, name: str) -> list[str]:
    """Ask the guest to shut down: the ACPI power button, then its guest agent where it has one.

    Only a request: the guest decides. gpupass never destroys (forces off) a domain; there is no
    call for it here. Returns notes on what could not be asked."""
    libvirt = _libvirt()
    try:
        domain = conn.lookupByName(name)
        agent = has_guest_agent(conn, name)
    except libvirt.libvirtError as e:
        if _gone(libvirt, e):
            return []  # a transient domain that shut off just now: nothing left to ask
        raise GpupassError(f"libvirt: {name}: {_message(e)}") from None
    notes = []
    try:
        domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    except libvirt.libvirtError as e:
        if _gone(libvirt, e):
            return []
        notes.append(f"the ACPI power button could not be pressed: {_message(e)}")
    if agent:
        try:
            domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
        except libvirt.libvirtError as e:
            if _gone(libvirt, e):  # the button was enough
                return notes
            notes.append(f"the guest agent was not asked: {_message(e)}")
    if len(notes) == 1 + agent:  # nothing was asked
        raise GpupassError(f"libvirt: {name}: " + "; ".join(notes))
    return notes


def start(conn: Any, name: str) -> None:
    libvirt = _libvirt()
    try:
        conn.lookupByName(name).create()
    except libvirt.libvirtError as e:
        raise GpupassError(f"libvirt: cannot start {name}: {_message(e)}") from None
