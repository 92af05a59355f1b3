"""gpupass power: the settings file, the decision, apply/status/record on fixture trees.

libvirt's answers come from its own test driver (``test:///FILE``, a node description with
the domain running or shut off); the real shutdown of a booted guest is in the vm tier
(tests/test_power_vm.py).
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpupass import cli, paths
from gpupass.errors import GpupassError
from gpupass.laptop import command, machine
from gpupass.laptop.power import apply as power_apply
from gpupass.laptop.power import policy as power_policy
from gpupass.laptop.power import status as power_status
from gpupass.laptop.vm import libvirtconn
from gpupass.laptop.vm import record as vm_record
from gpupass.model import load
from gpupass.packaging import render

from .sysfs import build_sysfs, changed
from .test_doctor import AURORA, SET_UP_PCI

CONF = "etc/gpupass/power.conf"
# The reference laptop's battery as its owner describes it (/work/shared/docs/passthrough-notes.md:
# 47 Wh by design, 40 Wh now, about 10 W on battery), in the ACPI battery's units (µWh, µW).
DISCHARGING = {
    "status": "Discharging",
    "energy_full_design": "47000000",
    "energy_full": "40000000",
    "power_now": "10200000",
    "capacity": "76",
}
CHARGING = {**DISCHARGING, "status": "Charging", "power_now": "24500000"}
# The other way a battery reports its draw: current_now (µA) and voltage_now (µV).
DISCHARGING_BY_CURRENT = {k: v for k, v in DISCHARGING.items() if k != "power_now"} | {
    "current_now": "885000",
    "voltage_now": "11520000",
}
AUDIO_ON_HOST = changed(
    changed(SET_UP_PCI, "0000:01:00.1", driver="snd_hda_intel", runtime_status="active", power_state="D0"),
    "0000:00:01.0",
    runtime_status="active",
    power_state="D0",
)
AUDIO_ON_HOST = changed(AUDIO_ON_HOST, "0000:01:00.0", power_state="D3hot")
RUNNING = changed(
    changed(SET_UP_PCI, "0000:01:00.0", runtime_status="active", power_state="D0"),
    "0000:01:00.1",
    runtime_status="active",
    power_state="D0",
)
RUNNING = changed(RUNNING, "0000:00:01.0", runtime_status="active", power_state="D0")


def node(tmp_path: Path, *, running: bool, name: str = "win11-gpu", agent: bool = False) -> str:
    """A libvirt test-driver URI whose one domain is running or shut off."""
    runstate = "" if running else "<test:runstate>5</test:runstate>"
    channel = (
        '<devices><channel type="unix"><target type="virtio" name="org.qemu.guest_agent.0"/></channel></devices>'
        if agent
        else ""
    )
    path = tmp_path / f"node-{name}-{running}.xml"
    path.write_text(
        f'<node><domain type="test" xmlns:test="http://libvirt.org/schemas/domain/test/1.0"><name>{name}</name>'
        f"<memory>1048576</memory><os><type>hvm</type></os>{channel}{runstate}</domain></node>"
    )
    return f"test://{path}"


def laptop(tmp_path: Path, devices=SET_UP_PCI, *, battery=DISCHARGING, ac: str | None = "0", conf: str | None = None):
    root = build_sysfs(tmp_path / "root", devices, battery=battery, ac_online=ac)
    if conf is not None:
        (root / CONF).parent.mkdir(parents=True, exist_ok=True)
        (root / CONF).write_text(conf)
    return root


# The settings file --------------------------------------------------------------------


def test_the_shipped_file_says_the_defaults() -> None:
    shipped = render.render_all(AURORA)[CONF].decode()
    assert (
        power_policy.parse_config(shipped, "/" + CONF)
        == power_policy.Config()
        == power_policy.Config("notify", 120, "nothing", None)
    )


def test_a_missing_file_means_the_defaults(tmp_path: Path) -> None:
    assert power_policy.load_config(tmp_path / "none.conf") == power_policy.Config()


def test_every_setting(tmp_path: Path) -> None:
    text = "# mine\non_battery=shutdown\n  shutdown_timeout = 30   # seconds\non_ac = start\ndomain = win11\n\n"
    assert power_policy.parse_config(text, "f") == power_policy.Config("shutdown", 30, "start", "win11")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("on_battery = hibernate\n", "power.conf:1: on_battery: 'hibernate' is not one of nothing, notify, shutdown"),
        ("# x\non_ac = shutdown\n", "power.conf:2: on_ac: 'shutdown' is not one of nothing, start"),
        (
            "on_batery = notify\n",
            "power.conf:1: unknown key 'on_batery' (known: on_battery, shutdown_timeout, on_ac, domain)",
        ),
        ("shutdown_timeout = 2m\n", "power.conf:1: shutdown_timeout: '2m' is not a number of seconds (1 to 3600)"),
        ("shutdown_timeout = 0\n", "power.conf:1: shutdown_timeout: '0' is not a number of seconds (1 to 3600)"),
        ("\n\non_battery\n", "power.conf:3: 'on_battery' is not a 'key = value' line"),
        ("domain =\n", "power.conf:1: domain: empty (expected a libvirt domain's name)"),
    ],
)
def test_a_bad_line_is_one_error_naming_it(text: str, message: str) -> None:
    with pytest.raises(GpupassError) as raised:
        power_policy.parse_config(text, "power.conf")
    assert raised.value.problems == [message]


def test_a_bad_file_does_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """on_ac = start on AC with the domain shut off would start it; the bad line stops everything first."""
    root = laptop(tmp_path, ac="1", conf="on_ac = start\non_battery = sleep\n")
    uri = node(tmp_path, running=False)
    assert cli.main(["power", "apply", "--root", str(root), "--connect", uri]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        f"gpupass: {root / CONF}:2: on_battery: 'sleep' is not one of nothing, notify, shutdown\n",
    )


# The decision -------------------------------------------------------------------------

R, P, OFF, MISSING = libvirtconn.RUNNING, libvirtconn.PAUSED, libvirtconn.SHUT_OFF, libvirtconn.MISSING
DECISIONS = [
    # on_battery, on_ac, AC online, domain state -> action
    ("notify", "nothing", False, R, "notify"),
    ("notify", "nothing", False, P, "notify"),
    ("notify", "nothing", False, OFF, "nothing"),
    ("notify", "nothing", False, MISSING, "nothing"),
    ("shutdown", "nothing", False, R, "shutdown"),
    ("shutdown", "nothing", False, P, "notify"),  # a paused guest cannot see the button; not resumed unasked
    ("shutdown", "nothing", False, OFF, "nothing"),
    ("nothing", "nothing", False, R, "nothing"),
    ("shutdown", "start", True, OFF, "start"),
    ("shutdown", "start", True, R, "nothing"),
    ("shutdown", "start", True, P, "nothing"),
    ("shutdown", "start", True, MISSING, "nothing"),
    ("shutdown", "nothing", True, OFF, "nothing"),
    ("shutdown", "start", None, OFF, "nothing"),  # no AC adapter seen: not a laptop on battery
    ("shutdown", "start", None, R, "nothing"),
]


@pytest.mark.parametrize(("on_battery", "on_ac", "online", "state", "action"), DECISIONS)
def test_the_decision(on_battery: str, on_ac: str, online: bool | None, state: str, action: str) -> None:
    assert power_policy.decide(power_policy.Config(on_battery=on_battery, on_ac=on_ac), online, state) == action


@given(
    config=st.builds(
        power_policy.Config,
        on_battery=st.sampled_from(power_policy.ON_BATTERY),
        shutdown_timeout=st.integers(1, 3600),
        on_ac=st.sampled_from(power_policy.ON_AC),
        domain=st.none() | st.text(min_size=1),
    ),
    online=st.sampled_from((True, False, None)),
    state=st.sampled_from(power_policy.DOMAIN_STATES),
)
def test_no_combination_forces_a_vm_off(config: power_policy.Config, online: bool | None, state: str) -> None:
    action = power_policy.decide(config, online, state)
    assert action in power_policy.ACTIONS
    # The strongest thing done to a running guest is asking it to shut down, and only on battery
    # when the user asked for it; a start only on AC, of a shut-off domain, when asked.
    assert action != power_policy.SHUTDOWN or (online is False and config.on_battery == "shutdown" and state == R)
    assert action != power_policy.START or (online is True and config.on_ac == "start" and state == OFF)


def test_there_is_no_forced_stop_anywhere() -> None:
    """Neither the vocabulary nor the code that talks to libvirt has destroy (or reset, or a paused
    guest's forced end): the only stop gpupass can make is the guest's own shutdown."""
    assert set(power_policy.ACTIONS) == {"nothing", "notify", "shutdown", "start"}
    for module in (libvirtconn, power_policy, power_apply, power_status):
        tree = ast.parse(Path(module.__file__).read_text())
        called = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not {a for a in called if a.lower().startswith(("destroy", "reset", "suspend"))}, module.__name__
        flags = {a for a in called if a.startswith("VIR_DOMAIN_")}
        assert not {f for f in flags if "DESTROY" in f and not f.startswith("VIR_DOMAIN_SHUTOFF_")}


# apply --------------------------------------------------------------------------------


def apply(root: Path, uri: str, conf: Path | None = None) -> tuple[int, str]:
    out = io.StringIO()
    config = power_policy.load_config(conf or root / CONF)
    status = power_apply.apply(config, root, uri, tell=power_apply.Teller(out, root))
    return status, out.getvalue()


def test_notify_on_battery_says_what_the_dgpu_costs_and_how_to_shut_down(tmp_path: Path) -> None:
    root = laptop(tmp_path, conf="domain = win11-gpu\n")
    uri = node(tmp_path, running=True)
    assert apply(root, uri) == (
        0,
        "gpupass power: on battery: BAT0 discharging, 10.2 W, 76 %; win11-gpu is running and keeps the dGPU"
        f" powered (no D3cold while it runs): shut it down: virsh --connect {uri} shutdown win11-gpu\n",
    )


def test_the_draw_from_current_and_voltage(tmp_path: Path) -> None:
    root = laptop(tmp_path, battery=DISCHARGING_BY_CURRENT, conf="domain = win11-gpu\n")
    assert apply(root, node(tmp_path, running=True))[1].startswith(
        "gpupass power: on battery: BAT0 discharging, 10.2 W, 76 %; win11-gpu is running"
    )


def test_the_domain_vm_define_or_attach_recorded(tmp_path: Path) -> None:
    root = laptop(tmp_path)
    vm_record.remember_domain("mine", root / str(paths.VM_RECORD).lstrip("/"))
    assert "; mine is running and keeps" in apply(root, node(tmp_path, running=True, name="mine"))[1]


def test_no_domain_known_says_how_to_name_one(tmp_path: Path) -> None:
    assert apply(laptop(tmp_path), node(tmp_path, running=True)) == (
        0,
        "gpupass power: on battery: BAT0 discharging, 10.2 W, 76 %; no VM to act on: set domain = NAME in"
        " /etc/gpupass/power.conf, or run gpupass vm define or gpupass vm attach\n",
    )


def test_on_ac_a_shut_off_domain_starts_only_when_asked(tmp_path: Path) -> None:
    root = laptop(tmp_path, battery=CHARGING, ac="1", conf="domain = win11-gpu\non_ac = start\n")
    assert apply(root, node(tmp_path, running=False)) == (
        0,
        "gpupass power: on AC: BAT0 charging, 24.5 W, 76 %; started win11-gpu (on_ac = start)\n",
    )
    (root / CONF).write_text("domain = win11-gpu\n")
    assert apply(root, node(tmp_path, running=False)) == (
        0,
        "gpupass power: on AC: BAT0 charging, 24.5 W, 76 %; win11-gpu is shut off: nothing to do\n",
    )


def test_shutdown_is_a_request_the_test_driver_cannot_take(tmp_path: Path) -> None:
    """libvirt's test driver has no ACPI power button (it refuses the flag): the refusal is
    reported, and nothing else is tried. A real guest's shutdown is in the vm tier."""
    root = laptop(tmp_path, conf="domain = win11-gpu\non_battery = shutdown\n")
    with pytest.raises(GpupassError) as raised:
        apply(root, node(tmp_path, running=True))
    assert raised.value.problems[0].startswith(
        "libvirt: win11-gpu: the ACPI power button could not be pressed: unsupported flags (0x1)"
    )


class Vanishing:
    """A connection on which the transient domain shuts off between the lookup and the question
    about its state: libvirt forgets a transient domain once it is off, as it does when Windows
    shuts down after ``virsh create``. The timing is forced; the domain and the error are libvirt's."""

    def __init__(self, conn: object) -> None:
        self.conn = conn

    def lookupByName(self, name: str) -> object:  # noqa: N802 (libvirt's name)
        domain = self.conn.lookupByName(name)
        domain.destroy()  # the test driver's way to end it at once; gpupass itself never does
        return domain


def test_a_transient_domain_gone_after_its_shutdown_is_missing_not_an_error() -> None:
    libvirt = pytest.importorskip("libvirt")
    conn = libvirt.open("test:///default")
    try:
        conn.createXML(
            "<domain type='test'><name>transient</name><memory>65536</memory><os><type>hvm</type></os></domain>"
        )
        assert libvirtconn.state(conn, "transient") == (libvirtconn.RUNNING, "")
        assert libvirtconn.state(Vanishing(conn), "transient") == (libvirtconn.MISSING, "")
        assert "transient" not in [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()


def test_desktop_notifications_go_to_each_session_bus(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "run/user/65534").mkdir(parents=True)
    (root / "run/user/65534/bus").write_text("")  # nobody's session bus, as a fixture
    (root / "run/user/4242").mkdir(parents=True)  # a runtime dir without a bus: no session
    ran: list[list[str]] = []
    told = power_apply.notify_sessions("summary", "body", root, lambda argv, package: ran.append(argv) or "")
    assert told == ["nobody"]
    assert ran == [
        ["runuser", "-u", "nobody", "--", "env", "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/65534/bus",
         "notify-send", "--app-name=gpupass", "--urgency=normal", "summary", "body"]
    ]  # fmt: skip


def test_without_notify_send_the_journal_still_has_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    (root / "run/user/65534").mkdir(parents=True)
    (root / "run/user/65534/bus").write_text("")
    # Neither runuser nor notify-send is installed: the real command.run says so. (command.find, not the
    # process's PATH, which the install tier's threads share.)
    monkeypatch.setattr(command, "find", lambda program: None)
    assert power_apply.notify_sessions("summary", "body", root) == []


# record and status --------------------------------------------------------------------

WHEN = 1796148000.0  # 2026-12-01T18:00:00Z


def recorded(root: Path, domain: str = "win11-gpu") -> Path | None:
    return power_status.record(AURORA, domain, root, delay=5, sleep=lambda s: None, now=lambda: WHEN)


def status(root: Path, uri: str, *extra: str) -> str:
    out = io.StringIO()
    name = power_policy.domain_name(power_policy.load_config(root / CONF), root)
    snapshot = machine.read(root, rebar=False, processes=False)
    s = power_status.status(AURORA, snapshot, name, power_status.vm_state(name, uri), power_status.read_record(root))
    out.write(json.dumps(s, indent=2) + "\n" if "--json" in extra else power_status.status_text(AURORA, s))
    return out.getvalue()


def test_status_vm_off_gpu_in_d3cold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = laptop(tmp_path, battery=CHARGING, ac="1", conf="domain = win11-gpu\n")
    assert recorded(root, "another-vm") is None  # the hook records only the domain gpupass power applies to
    assert recorded(root) == root / "var/lib/gpupass/power-release.json"
    uri = node(tmp_path, running=False)
    assert cli.main(["power", "status", "--model", "aurora-z", "--root", str(root), "--connect", uri]) == 0
    assert capsys.readouterr().out == (
        "gpupass power: MECHREVO Aurora Z (gpupass-aurora-z)\n"
        "power: on AC\n"
        "battery BAT0: charging, drawing 24.5 W, 76 % charged\n"
        "VM win11-gpu: shut off\n"
        "0000:01:00.0 (gpu, vfio-pci): suspended, D3cold\n"
        "0000:01:00.1 (audio, vfio-pci): suspended, D3cold\n"
        "0000:00:01.0 (root port): suspended, D3cold\n"
        "dGPU: asleep, powered off (D3cold)\n"
        "last release of win11-gpu at 2026-12-01T18:00:00Z: the dGPU slept (D3cold): 0000:01:00.0 suspended"
        " (D3cold), 0000:01:00.1 suspended (D3cold), 0000:00:01.0 suspended (D3cold)\n"
    )


def test_status_vm_off_audio_on_snd_hda_intel_keeps_the_slot_awake(tmp_path: Path) -> None:
    root = laptop(tmp_path, AUDIO_ON_HOST, battery=CHARGING, ac="1", conf="domain = win11-gpu\n")
    recorded(root)
    assert status(root, node(tmp_path, running=False)) == (
        "gpupass power: MECHREVO Aurora Z (gpupass-aurora-z)\n"
        "power: on AC\n"
        "battery BAT0: charging, drawing 24.5 W, 76 % charged\n"
        "VM win11-gpu: shut off\n"
        "0000:01:00.0 (gpu, vfio-pci): suspended, D3hot\n"
        "0000:01:00.1 (audio, snd_hda_intel): active, D0\n"
        "0000:00:01.0 (root port): active, D0\n"
        "dGPU: awake, costing battery: 0000:01:00.1 is on the host driver snd_hda_intel\n"
        "last release of win11-gpu at 2026-12-01T18:00:00Z: the dGPU stayed awake: 0000:01:00.0 suspended"
        " (D3hot), 0000:01:00.1 active (D0), 0000:00:01.0 active (D0); 0000:01:00.1 is on the host driver"
        " snd_hda_intel\n"
    )


def test_status_on_battery_with_the_vm_running(tmp_path: Path) -> None:
    root = laptop(tmp_path, RUNNING, battery=DISCHARGING_BY_CURRENT, conf="domain = win11-gpu\n")
    assert status(root, node(tmp_path, running=True)) == (
        "gpupass power: MECHREVO Aurora Z (gpupass-aurora-z)\n"
        "power: on battery\n"
        "battery BAT0: discharging, drawing 10.2 W, 76 % charged\n"
        "VM win11-gpu: running\n"
        "0000:01:00.0 (gpu, vfio-pci): active, D0\n"
        "0000:01:00.1 (audio, vfio-pci): active, D0\n"
        "0000:00:01.0 (root port): active, D0\n"
        "dGPU: win11-gpu's while it is running\n"
        "last release: none recorded\n"
    )
    data = json.loads(status(root, node(tmp_path, running=True), "--json"))
    assert data["power"] == {
        "source": "battery",
        "batteries": [{"name": "BAT0", "status": "Discharging", "draw_w": 10.2, "charge_percent": 76}],
    }
    assert data["vm"] == {"name": "win11-gpu", "state": "running", "detail": ""}
    assert data["last_release"] is None


def test_status_reads_only_what_anyone_may_read(tmp_path: Path) -> None:
    """Not root-only: run as nobody on a world-readable copy, libvirt unreachable, it still answers."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody")
    shared = Path(tempfile.mkdtemp())  # a readable copy: tmp_path's parents are root's alone
    try:
        _status_as_nobody(tmp_path, shared)
    finally:
        shutil.rmtree(shared)


def _status_as_nobody(tmp_path: Path, shared: Path) -> None:
    shared.chmod(0o755)
    root = shutil.copytree(laptop(tmp_path, battery=DISCHARGING, conf="domain = win11-gpu\n"), shared / "root",
                           symlinks=True)  # fmt: skip
    for directory, _dirs, files in os.walk(shared):
        os.chmod(directory, 0o755)
        for f in files:
            os.chmod(Path(directory) / f, 0o644)
    pid = os.fork()
    if pid == 0:  # the child drops to nobody and reports through its exit status
        try:
            os.setgid(65534)
            os.setuid(65534)
            text = status(root, "qemu+unix:///system?socket=/nonexistent")
            os._exit(
                0 if "VM win11-gpu: unknown (cannot connect to libvirt" in text and "power: on battery" in text else 3
            )
        except BaseException:
            os._exit(4)
    assert os.waitpid(pid, 0)[1] >> 8 == 0


def test_power_conf_is_the_same_in_every_models_package() -> None:
    """Installing another model's package over one whose power.conf the admin edited keeps the
    admin's file silently only if the two packages ship the same bytes (else dpkg prompts, and
    apt without a terminal fails: seen in test_upgrade's model switch)."""
    shipped = {
        render.render_all(load(path))[str(paths.POWER_CONF).lstrip("/")]
        for path in sorted((paths.MODELS_DIR).glob("*.toml"))
    }
    assert len(shipped) == 1, shipped
