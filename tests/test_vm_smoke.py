"""Each model's own domain, started by libvirtd and booted: the guest sees the package's
battery (full, on AC power) and the laptop's SMBIOS strings; a device standing at the GPU's
guest address has the ACPI node gpupass targets, the _ROM SSDT (NVIDIA models) is loaded, and
the kernel logs no ACPI error.

Each guest boots once and every test about it asserts on that one boot (the ``guests``
fixture), as many guests at a time as the machine has cores. Besides one per model: aurora-z
with guest.nvpcf (the NPCF device must be there, where the shipped models must not have it),
and ``gpupass vm define``'s domain, which also carries a _ROM table aimed at a slot QEMU left
empty (the ACPI error that proves the no-error check can fail; the other guests must log none).
OVMF's boot order and the power button (tests/test_power_vm.py) need guests of their own:
firmware without a kernel to boot, and an /init that answers the button.

A Debian kernel boots straight from OVMF (fw_cfg), with a busybox initramfs whose /init
loads the ACPI ac and battery drivers and prints what sysfs says; see vm_smoke.py for what
the test machine forces to change in the domain and why.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpupass import cli, guest, model, paths
from gpupass.laptop.rom import acpi_table
from gpupass.laptop.vm import define as vm_define
from gpupass.laptop.vm.looking_glass import LookingGlass
from gpupass.packaging import render

from . import vm_smoke
from .conftest import MODELS, ROOT
from .libvirt import Daemon
from .test_vbios import rom_image

pytestmark = pytest.mark.vm

DOMAIN = "usr/share/gpupass/domain.xml"
AML = "usr/share/gpupass/ssdt-battery.aml"
GUEST_ROM = rom_image(0x10DE, 0x25A2, 0, units=21, seed=19)
BOOT_TIMEOUT = 240  # seconds; a boot takes about 10 s under TCG on a 2-core machine


@pytest.fixture(scope="session")
def guest_kernel() -> vm_smoke.Kernel:
    return vm_smoke.debian_kernel()


class Boot:
    """One start of a domain, with what to show when it goes wrong."""

    def __init__(self, libvirtd: Daemon, name: str, serial_log: Path) -> None:
        self.libvirtd, self.name, self.serial_log = libvirtd, name, serial_log

    def serial(self) -> str:
        return self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""

    def logs(self) -> str:
        qemu_log = self.libvirtd.path(f"/var/log/libvirt/qemu/{self.name}.log")
        qemu = qemu_log.read_text(errors="replace") if qemu_log.exists() else "(none)"
        return f"--- serial console\n{self.serial() or '(empty)'}\n--- QEMU log\n{qemu}"

    def run(self, timeout: float) -> float:
        """Start the domain, wait until the guest has powered it off; the seconds it took."""
        started = time.monotonic()
        self.libvirtd.virsh("start", self.name)
        while self.libvirtd.virsh("domstate", self.name).stdout.strip() != "shut off":
            elapsed = time.monotonic() - started
            if "Kernel panic" in self.serial():
                pytest.fail(f"the guest kernel panicked after {elapsed:.0f} s\n{self.logs()}")
            if elapsed > timeout:
                pytest.fail(f"the guest did not power off within {timeout} s\n{self.logs()}")
            time.sleep(0.5)
        return time.monotonic() - started


def smoke_domain(
    model_file: Path,
    guest_kernel: vm_smoke.Kernel,
    tmp_path: Path,
    name: str | None = None,
    *,
    init: str = vm_smoke.INIT,
    mark: str = vm_smoke.MARK,
    looking_glass: LookingGlass | None = None,
) -> tuple[model.Model, Path, Path]:
    """The model's own domain with the TCG changes (vm_smoke.smoke_domain), written to
    tmp_path; returns the model, the domain file and the guest's serial log. ``name``: the
    domain's, where guests of the same vm.name are defined at once. With ``looking_glass``:
    as ``gpupass vm define --looking-glass`` makes it, booting ``init``."""
    loaded = model.load(model_file, f"models/{model_file.name}")
    files = render.render_all(loaded)
    if looking_glass is not None:
        files[DOMAIN] = vm_define.define_xml(
            files[DOMAIN].decode(),
            loaded,
            name=loaded.vm.name,
            disk=Path("/nowhere.qcow2"),
            looking_glass=looking_glass,
        ).encode()
    aml = tmp_path / "ssdt-battery.aml"
    aml.write_bytes(files[AML])
    tables = {f"/{AML}": aml}
    if loaded.acpi_rom:
        # What gpupass vbios writes beside a stored vBIOS, here for a ROM built from the PCI
        # Firmware layout (vendors' images are not shipped).
        rom_aml = tmp_path / acpi_table.NAME
        rom_aml.write_bytes(acpi_table.ssdt(GUEST_ROM))
        tables[str(paths.ROM_AML)] = rom_aml
    if loaded.nvpcf:
        nvpcf_aml = tmp_path / paths.NVPCF_AML.name
        nvpcf_aml.write_bytes(files[str(paths.NVPCF_AML).lstrip("/")])
        tables[str(paths.NVPCF_AML)] = nvpcf_aml
    initrd = tmp_path / "initramfs.cpio"
    initrd.write_bytes(vm_smoke.initramfs(guest_kernel, init, mark))
    serial_log = tmp_path / "serial.log"
    domain = tmp_path / "domain.xml"
    domain.write_bytes(
        vm_smoke.smoke_domain(
            files[DOMAIN],
            kernel=guest_kernel.vmlinuz,
            initrd=initrd,
            tables=tables,
            serial_log=serial_log,
            memory_mib=vm_smoke.guest_memory_mib(loaded.vm.memory_mib),
        )
    )
    if name is not None:
        root = ET.parse(domain).getroot()
        root.find("name").text = name
        domain.write_bytes(ET.tostring(root))
    return loaded, domain, serial_log


def boot_and_report(libvirtd: Daemon, name: str, serial_log: Path) -> tuple[Boot, vm_smoke.GuestReport, str]:
    """Start the defined domain, wait until the guest powers off, undefine it; what it printed,
    and a summary for the test to print (guests boot in threads, beside each other)."""
    boot = Boot(libvirtd, name, serial_log)
    try:
        seconds = boot.run(BOOT_TIMEOUT)
    finally:
        libvirtd.virsh("destroy", name, check=False)  # only if the guest hung
        libvirtd.virsh("undefine", "--nvram", name, check=False)
    report = vm_smoke.parse_report(boot.serial())
    assert f"{vm_smoke.MARK} done" in report.lines, f"the guest's /init did not finish\n{boot.logs()}"
    return boot, report, "\n".join([f"\n{name}: booted and powered off in {seconds:.1f} s", *report.lines])


@dataclass(frozen=True)
class Defined:
    """What ``gpupass vm define`` did: its exit status and output, libvirt's definition after it."""

    status: int
    out: str
    err: str
    dumpxml: str
    images: Path  # --images, where the ISO is too


@dataclass
class Booted:
    """One guest's boot, for every test that asserts on it; a boot that failed fails each of them."""

    loaded: model.Model
    outcome: tuple[Boot, vm_smoke.GuestReport] | None = None
    printed: str = ""
    error: BaseException | None = None
    defined: Defined | None = None  # the guest of vm define's domain

    def boot(self) -> tuple[Boot, vm_smoke.GuestReport]:
        if self.error is not None:
            raise self.error
        assert self.outcome is not None, f"not booted: gpupass vm define failed\n{self.defined}"
        print(self.printed)
        return self.outcome


def boot_all(libvirtd: Daemon, guests: dict[str, tuple[Booted, str, Path]]) -> None:
    """Boot the defined domains, as many at a time as this machine has cores (one vCPU each
    under TCG, the rest of the time the tests only wait), into their Booted."""

    def boot(entry: tuple[Booted, str, Path]) -> None:
        booted, name, serial_log = entry
        try:
            boot, report, booted.printed = boot_and_report(libvirtd, name, serial_log)
            booted.outcome = boot, report
        except BaseException as error:  # pytest.fail's too: the test that asks re-raises it
            booted.error = error

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(boot, guests.values()))


AURORA = ROOT / "models" / "aurora-z.toml"
NVPCF = "aurora-z+nvpcf"
DEFINED = "win11-defined"


def nvpcf_model(tmp_path: Path) -> Path:
    """aurora-z with guest.nvpcf on (on in no shipped model)."""
    text = AURORA.read_text(encoding="utf-8")
    model_file = tmp_path / "aurora-z.toml"
    model_file.write_text(text + "\n[guest]\nnvpcf = true\nnvpcf_tpp_offset_w = 80\nnvpcf_max_tgp_offset_w = 35\n")
    return model_file


def define(libvirtd: Daemon, guest_kernel: vm_smoke.Kernel, tmp_path: Path) -> tuple[Booted, Path]:
    """``gpupass vm define`` (disk created, installer ISO as a CD-ROM) of aurora-z's domain with
    the TCG changes; the _ROM table it loads is aimed at a slot QEMU left empty (00:03.0, so
    no node S18)."""
    loaded, template, serial_log = smoke_domain(AURORA, guest_kernel, tmp_path)
    (tmp_path / acpi_table.NAME).write_bytes(acpi_table.ssdt(GUEST_ROM, r"\_SB.PCI0.S18.S00"))
    iso = tmp_path / "Win11.iso"
    iso.write_bytes(b"\0" * 2048)
    argv = ["vm", "--model", str(AURORA), "--connect", libvirtd.uri, "define", DEFINED]
    argv += ["--disk-size", "1", "--iso", str(iso), "--domain-xml", str(template), "--images", str(tmp_path)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    dumped = libvirtd.virsh("dumpxml", "--inactive", DEFINED, check=False).stdout
    return Booted(loaded, defined=Defined(status, out.getvalue(), err.getvalue(), dumped, tmp_path)), serial_log


# The guests other than a model's own that a test asserts on (the model tests: their model_file).
GUEST_OF = {
    "test_an_ssdt_for_a_node_qemu_did_not_make_is_an_acpi_error_in_the_guest": DEFINED,
    "test_vm_define_boots_with_the_users_disk_and_iso": DEFINED,
    "test_the_experimental_nvpcf_table_loads_without_acpi_errors": NVPCF,
}


def wanted_guests(items: list[pytest.Item]) -> set[str]:
    """The guests the selected tests of this module assert on (``-k aurora-z`` boots one)."""
    wanted = set()
    for item in items:
        if item.path == Path(__file__):
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "model_file" in callspec.params:
                wanted.add(callspec.params["model_file"].stem)
            elif item.originalname in GUEST_OF:
                wanted.add(GUEST_OF[item.originalname])
    return wanted


@pytest.fixture(scope="module")
def guests(
    request: pytest.FixtureRequest,
    libvirtd: Daemon,
    guest_kernel: vm_smoke.Kernel,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Booted]:
    """The guests the selected tests assert on, each booted once: by model id, NVPCF and DEFINED."""
    wanted = wanted_guests(request.session.items)
    entries: dict[str, tuple[Booted, str, Path]] = {}
    files = {model_file.stem: model_file for model_file in MODELS if model_file.stem in wanted}
    if NVPCF in wanted:
        files[NVPCF] = nvpcf_model(tmp_path_factory.mktemp("nvpcf-model"))
    for key, model_file in files.items():
        name = f"smoke-{key}".replace("+", "-")
        loaded, domain, serial_log = smoke_domain(model_file, guest_kernel, tmp_path_factory.mktemp(key), name)
        libvirtd.virsh("define", str(domain))
        entries[key] = (Booted(loaded), name, serial_log)
    if DEFINED in wanted:
        defined, serial_log = define(libvirtd, guest_kernel, tmp_path_factory.mktemp("define"))
        entries[DEFINED] = (defined, DEFINED, serial_log)
    ready = {key: entry for key, entry in entries.items() if key != DEFINED or entry[0].defined.status == 0}
    boot_all(libvirtd, ready)
    return {key: booted for key, (booted, _, _) in entries.items()}


def assert_full_battery_and_laptop_smbios(report: vm_smoke.GuestReport, loaded: model.Model) -> None:
    printed = "\n".join(report.lines)
    battery = report.supply_of_type("Battery")
    assert (battery.get("present"), battery.get("status"), battery.get("capacity")) == ("1", "Full", "100"), printed
    assert report.dmi == {"sys_vendor": loaded.smbios.manufacturer, "product_name": loaded.smbios.product}, printed


def assert_windows_11_platform(report: vm_smoke.GuestReport) -> None:
    """What Windows 11's hardware check looks at, as the guest's kernel sees it: UEFI, a TPM of
    major version 2 (swtpm, through libvirt) with its ACPI TPM2 table, and Secure Boot
    capable but off: Debian's OVMF_CODE_4M.fd with OVMF_VARS_4M.fd has the Secure Boot
    variables, SecureBoot 0 and SetupMode 1 (no keys enrolled)."""
    platform = {key: value for key, value in report.platform.items() if key != "acpi NVDA0820"}
    assert platform == {
        "firmware": "uefi",
        "tpm tpm_version_major": "2",
        "acpi TPM2": "present",
        "efivar SecureBoot": "0",
        "efivar SetupMode": "1",
    }, "\n".join(report.lines)


@pytest.mark.parametrize("model_file", MODELS, ids=lambda p: p.stem)
def test_guest_boots_once_with_every_check(guests: dict[str, Booted], model_file: Path) -> None:
    """The model's guest, from its one boot: the battery SSDT and (NVIDIA models) the _ROM SSDT
    loaded, a full battery on AC power, the laptop's SMBIOS, Windows 11's platform, the GPU
    slot's ACPI node, no ACPI error, and no NPCF device."""
    loaded = guests[model_file.stem].loaded
    boot, report = guests[model_file.stem].boot()
    acpi = loaded.acpi
    ssdt = rf"ACPI: SSDT 0x[0-9A-F]+ [0-9A-F]+ \(v02 {acpi.oem_id} +{acpi.oem_table_id} "
    assert re.search(ssdt, boot.serial()), f"no SSDT {acpi.oem_id} {acpi.oem_table_id} in the guest\n{boot.logs()}"
    rom_ssdt = rf"ACPI: SSDT 0x[0-9A-F]+ [0-9A-F]+ \(v02 {acpi_table.OEM_ID} +{acpi_table.OEM_TABLE_ID} "
    assert bool(re.search(rom_ssdt, boot.serial())) == loaded.acpi_rom, f"_ROM SSDT loaded?\n{boot.logs()}"
    assert_full_battery_and_laptop_smbios(report, loaded)
    assert report.supply_of_type("Mains").get("online") == "1", "\n".join(report.lines)
    assert_windows_11_platform(report)
    assert_gpu_slot_has_the_known_acpi_node(report)
    assert report.platform["acpi NVDA0820"] == "absent", "\n".join(report.lines)  # guest.nvpcf is off


def linux_acpi_path(path: str) -> str:
    """An ACPI path as Linux prints firmware_node/path: each name segment padded to 4 with '_'."""
    return "\\" + ".".join(segment.ljust(4, "_") for segment in path.lstrip("\\").split("."))


def assert_gpu_slot_has_the_known_acpi_node(report: vm_smoke.GuestReport) -> None:
    """The emulated device standing at the GPU's guest address (virtio-rng) has the ACPI node
    gpupass targets, and the kernel logged no ACPI error."""
    printed = "\n".join(report.lines)
    at_gpu_slot = [path for ids, path in report.pci.values() if ids == vm_smoke.STAND_IN_IDS]
    assert at_gpu_slot == [linux_acpi_path(guest.gpu_acpi_path())], printed
    assert report.acpi_errors == (), printed


def test_an_ssdt_for_a_node_qemu_did_not_make_is_an_acpi_error_in_the_guest(guests: dict[str, Booted]) -> None:
    """The check above can fail: the same _ROM table aimed at a slot QEMU left empty (00:03.0,
    so no node S18; vm define's guest carries it) does not load, and the guest's kernel logs it."""
    _, report = guests[DEFINED].boot()
    assert any("AE_NOT_FOUND" in line for line in report.acpi_errors), "\n".join(report.lines)


def test_vm_define_boots_with_the_users_disk_and_iso(guests: dict[str, Booted]) -> None:
    """``gpupass vm define`` (disk created, installer ISO as a CD-ROM), then ``virsh start``.

    The package's domain goes through the same TCG changes as above before gpupass sees it;
    vm define puts back the disk they strip, with the ISO, and the guest still finds the
    battery and the laptop's SMBIOS strings.
    """
    booted = guests[DEFINED]
    defined = booted.defined
    assert defined.status == 0, defined.err
    assert f"\n{DEFINED}: defined (start it with: virsh start {DEFINED})\n" in defined.out
    dumped = ET.fromstring(defined.dumpxml)
    sources = {d.get("device"): d.find("source").get("file") for d in dumped.iterfind("devices/disk")}
    assert sources == {"disk": str(defined.images / f"{DEFINED}.qcow2"), "cdrom": str(defined.images / "Win11.iso")}

    _, report = booted.boot()
    assert_full_battery_and_laptop_smbios(report, booted.loaded)
    assert_windows_11_platform(report)


BDS_LINE = re.compile(r'BdsDxe: (failed to load|loading|starting) Boot[0-9A-F]{4} "([^"]*?) *"')


def test_ovmf_tries_the_new_disk_then_the_installer(
    libvirtd: Daemon, guest_kernel: vm_smoke.Kernel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The boot order Windows setup's reboots rely on (DESIGN.md): ``gpupass vm define``'s
    domain booted by its firmware (no direct kernel boot). OVMF tries the new, empty disk
    first, finds nothing to load, and goes on to the installer CD; once setup has put its
    boot loader on the disk, the disk's turn comes first. Its console (the serial port)
    names each boot option as it tries it. The ISO here is blank, so OVMF fails on it too."""
    model_file = ROOT / "models" / "aurora-z.toml"
    _, template, serial_log = smoke_domain(model_file, guest_kernel, tmp_path)
    root = ET.parse(template).getroot()
    os_ = root.find("os")
    for tag in ("kernel", "initrd", "cmdline"):
        os_.remove(os_.find(tag))
    template.write_bytes(ET.tostring(root))
    iso = tmp_path / "Win11.iso"
    iso.write_bytes(b"\0" * 2048)
    name = "win11-boot-order"
    argv = ["vm", "--model", str(model_file), "--connect", libvirtd.uri, "define", name]
    argv += ["--disk-size", "1", "--iso", str(iso), "--domain-xml", str(template), "--images", str(tmp_path)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    boot = Boot(libvirtd, name, serial_log)
    tried: list[tuple[str, str]] = []
    try:
        started = time.monotonic()
        libvirtd.virsh("start", name)
        # The EFI shell comes after both and waits: stop once the CD-ROM has had its turn.
        while not any("DVD-ROM" in option for _, option in tried):
            if time.monotonic() - started > BOOT_TIMEOUT:
                pytest.fail(f"OVMF did not reach the CD-ROM within {BOOT_TIMEOUT} s\n{boot.logs()}")
            time.sleep(0.5)
            tried = BDS_LINE.findall(boot.serial())
    finally:
        libvirtd.virsh("destroy", name, check=False)
        libvirtd.virsh("undefine", "--nvram", name, check=False)
    print("\n".join(f"{what}: {option}" for what, option in tried))
    assert [(what, option.split(" QM")[0]) for what, option in tried[:2]] == [
        ("failed to load", "UEFI QEMU HARDDISK"),
        ("failed to load", "UEFI QEMU DVD-ROM"),
    ], boot.logs()


MEMINFO = "MemTotal: {ram} kB\nSwapTotal: 0 kB\nCommitLimit: {ram} kB\nCommitted_AS: 1048576 kB\n"


@pytest.mark.parametrize(
    "ram_gib,overcommit,expected",
    [(32, "0", 16384), (8, "0", 1024), (8, "1", 16384), (32, "2", 16384), (16, "2", 1024)],
)
def test_guest_keeps_model_memory_unless_host_cannot_map_it(ram_gib: int, overcommit: str, expected: int) -> None:
    meminfo = MEMINFO.format(ram=ram_gib * 1024 * 1024)
    assert vm_smoke.guest_memory_mib(16384, meminfo, overcommit) == expected


def test_the_experimental_nvpcf_table_loads_without_acpi_errors(guests: dict[str, Booted]) -> None:
    """guest.nvpcf (on in no shipped model): the guest's kernel loads the NPCF SSDT next to the
    others, and logs no ACPI error."""
    loaded = guests[NVPCF].loaded
    boot, report = guests[NVPCF].boot()
    nvpcf_ssdt = rf"ACPI: SSDT 0x[0-9A-F]+ [0-9A-F]+ \(v02 {loaded.acpi.oem_id} +NVPCF "
    assert re.search(nvpcf_ssdt, boot.serial()), f"no NVPCF SSDT in the guest\n{boot.logs()}"
    assert report.platform["acpi NVDA0820"] == "present", "\n".join(report.lines)
    assert_gpu_slot_has_the_known_acpi_node(report)
