"""Properties of the rendered artifacts, over models generated from the model schema.

The golden files pin what each shipped model renders to; these properties say what every
model the loader accepts must render to, checked against the real consumers where they
can be run: libvirt's own RelaxNG schema for the domain, ``sh`` for the GRUB drop-in (as
grub-mkconfig sources it), kmod's ``modprobe -c`` for the modprobe configuration, iasl
for the SSDT. Each artifact has one plain check function (``check_domain``,
``check_grub``, ``check_modprobe``) that the property tests call, and the mutation tests
show each can fail: they break a scratch copy of the templates and let hypothesis find a
model the checks reject.

Example counts: GPUPASS_HYPOTHESIS_EXAMPLES (default 300) for each property,
GPUPASS_HYPOTHESIS_AML_EXAMPLES (default 40) for those that run iasl.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import Phase, find, given, settings
from lxml import etree

from gpupass import model, paths
from gpupass.model import Model
from gpupass.packaging import aml, render, tools
from gpupass.packaging.artifacts import domain, grub, modelfile, modprobe, ssdt, systemd

from .strategies import batteries, derived, models

EXAMPLES = int(os.environ.get("GPUPASS_HYPOTHESIS_EXAMPLES", "300"))
AML_EXAMPLES = int(os.environ.get("GPUPASS_HYPOTHESIS_AML_EXAMPLES", "40"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None)

TEMPLATES = render.Templates()
DOMAIN_RNG = Path("/usr/share/libvirt/schemas/domain.rng")
# libvirt's namespace for QEMU pass-through elements (docs: "QEMU command-line passthrough").
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
# What Debian/Ubuntu call their Secure Boot OVMF builds, and varstores with Microsoft's keys.
SECURE_BOOT_FIRMWARE = re.compile(r"secboot|\.ms\.|snakeoil", re.IGNORECASE)
IOMMU_ARG = {"intel": "intel_iommu=on", "amd": "amd_iommu=on"}


def expect(condition: object, message: str) -> None:
    """``assert`` without pytest's expression dump, so messages read as the check wrote them."""
    if not condition:
        raise AssertionError(message)


def only(values: dict[str, bytes]) -> bytes:
    (data,) = values.values()
    return data


def vfio_ids(m: Model) -> str:
    """The distinct vendor:device ids of the passed-through functions, in model order."""
    return ",".join(dict.fromkeys(f.id for f in m.gpu.functions))


def grub_args(m: Model) -> str:
    """What the drop-in must append to the kernel command line: vfio-pci's ids in boot mode only."""
    iommu = f"{IOMMU_ARG[m.cpu.vendor]} iommu=pt"
    return iommu if m.mode == "on-demand" else f"{iommu} vfio-pci.ids={vfio_ids(m)}"


# The domain ---------------------------------------------------------------------------


@functools.cache
def libvirt_schema() -> etree.RelaxNG:
    if not DOMAIN_RNG.is_file():
        pytest.fail(f"{DOMAIN_RNG}: libvirt's domain schema is missing (install libvirt-daemon-system)")
    return etree.RelaxNG(file=str(DOMAIN_RNG))  # includes its siblings from the same directory


def valid_for_libvirt(tree: etree._Element, m: Model) -> None:
    rng = libvirt_schema()
    if not rng.validate(tree):
        errors = [f"line {e.line}: {e.message}" for e in rng.error_log][:3]
        raise AssertionError(f"libvirt's {DOMAIN_RNG.name} rejects the domain: " + "; ".join(errors))


def pci_address(element: etree._Element) -> tuple[int, int, int, int]:
    return tuple(int(element.get(part), 16) for part in ("domain", "bus", "slot", "function"))


def one_guest_slot(tree: etree._Element, m: Model) -> None:
    """GPU and its functions as one multifunction device behind one root port, as on the laptop."""
    hostdevs = tree.findall("devices/hostdev")
    guest = [pci_address(hd.find("address")) for hd in hostdevs]
    slots = sorted({"{:04x}:{:02x}:{:02x}".format(*a[:3]) for a in guest})
    expect(len(slots) == 1, f"the passed-through functions are on guest slots {slots} (expected one)")
    functions = [a[3] for a in guest]
    expect(
        functions == list(range(len(m.gpu.functions))),
        f"guest functions {functions} (expected 0 to {len(m.gpu.functions) - 1} in model order)",
    )
    multifunction = [
        a[3] for a, hd in zip(guest, hostdevs, strict=True) if hd.find("address").get("multifunction") == "on"
    ]
    expect(multifunction == [0], f"multifunction='on' on guest functions {multifunction} (expected on 0 only)")
    domain_nr, bus, slot = guest[0][:3]
    ports = [int(c.get("index")) for c in tree.findall("devices/controller[@type='pci'][@model='pcie-root-port']")]
    expect(bus in ports, f"guest bus {bus} is not a pcie-root-port's (root ports: {ports})")
    expect((domain_nr, slot) == (0, 0), f"guest slot {slots[0]} (a root port has one slot: 0000:{bus:02x}:00)")


def host_functions(tree: etree._Element, m: Model) -> None:
    hostdevs = tree.findall("devices/hostdev")
    found = ["{:04x}:{:02x}:{:02x}.{:x}".format(*pci_address(hd.find("source/address"))) for hd in hostdevs]
    expect(
        found == [f.address for f in m.gpu.functions],
        f"host functions {found} (expected {[f.address for f in m.gpu.functions]})",
    )
    for hd, f in zip(hostdevs, m.gpu.functions, strict=True):
        _, _, slot, function = pci_address(hd.find("source/address"))
        expect(slot <= 0x1F and function <= 7, f"{f.address} is not a PCI address (device 00-1f, function 0-7)")
        expect(
            (hd.get("mode"), hd.get("type"), hd.get("managed")) == ("subsystem", "pci", "yes"),
            f"{f.address} is not a managed PCI hostdev",
        )
        roms = [rom.get("file") for rom in hd.findall("rom")]
        want = [str(paths.VBIOS_ROM)] if f.role == "gpu" else []
        expect(roms == want, f"{f.address} ({f.role}) has ROM files {roms} (expected {want})")


def qemu_commandline(tree: etree._Element, m: Model) -> None:
    """QEMU arguments reach QEMU only in libvirt's namespace, declared on the root."""
    for element in tree.iter(etree.Element):
        namespace = etree.QName(element).namespace
        expect(namespace in (None, QEMU_NS), f"<{element.prefix}:{etree.QName(element).localname}> is in {namespace}")
    lines = tree.findall(f"{{{QEMU_NS}}}commandline")
    expect(len(lines) == 1, f"{len(lines)} <qemu:commandline> elements (expected 1)")
    expect(tree.nsmap.get("qemu") == QEMU_NS, f"xmlns:qemu is {tree.nsmap.get('qemu')!r} (expected {QEMU_NS!r})")
    args = [a.get("value") for a in lines[0].findall(f"{{{QEMU_NS}}}arg")]
    want = [
        "-fw_cfg",
        f"opt/ovmf/X-PciMmio64Mb,string={m.gpu.mmio64_mb}",
        "-acpitable",
        f"file={paths.INSTALLED_AML}",
    ]
    expect(args == want, f"QEMU arguments {args} (expected {want})")


def no_secure_boot(tree: etree._Element, m: Model) -> None:
    loader, nvram = tree.find("os/loader"), tree.find("os/nvram")
    expect(loader.text == m.vm.ovmf_code, f"loader {loader.text!r} (expected the model's {m.vm.ovmf_code!r})")
    expect(nvram.get("template") == m.vm.ovmf_vars, f"nvram template {nvram.get('template')!r} (expected the model's)")
    for what, path in (("loader", loader.text), ("nvram template", nvram.get("template"))):
        expect(not SECURE_BOOT_FIRMWARE.search(path), f"{what} {path!r} is a Secure Boot build")
    expect(loader.get("secure") != "yes", "loader has secure='yes'")


def cpuset(spec: str) -> set[int]:
    """libvirt's cpuset syntax: 0-3,^2,6."""
    cpus: set[int] = set()
    excluded: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.lstrip("^").partition("-")
        (excluded if part.startswith("^") else cpus).update(range(int(first), int(last or first) + 1))
    return cpus - excluded


def vcpu_pinning(tree: etree._Element, m: Model) -> None:
    """Every vCPU pinned once, to its own performance CPU; whole cores in the guest topology."""
    expect(int(tree.findtext("vcpu")) == m.vm.vcpus, f"<vcpu> is {tree.findtext('vcpu')} (expected {m.vm.vcpus})")
    pins = [(int(p.get("vcpu")), cpuset(p.get("cpuset"))) for p in tree.findall("cputune/vcpupin")]
    vcpus = sorted(vcpu for vcpu, _ in pins)
    expect(vcpus == list(range(m.vm.vcpus)), f"vCPUs pinned: {vcpus} (expected each of 0 to {m.vm.vcpus - 1} once)")
    for vcpu, cpus in pins:
        outside = sorted(cpus - set(m.cpu.performance_cpus))
        expect(len(cpus) == 1, f"vCPU {vcpu} is pinned to {sorted(cpus)} (expected one CPU)")
        expect(not outside, f"vCPU {vcpu} is pinned to {outside}, not a performance CPU {list(m.cpu.performance_cpus)}")
    host = [cpu for _, cpus in pins for cpu in cpus]
    expect(len(host) == len(set(host)), f"vCPUs share host CPUs: {host}")
    topology = tree.find("cpu/topology")
    cores, threads = int(topology.get("cores")), int(topology.get("threads"))
    expect(
        (cores * threads, threads) == (m.vm.vcpus, m.cpu.threads_per_core),
        f"topology {cores} cores x {threads} threads for {m.vm.vcpus} vCPUs",
    )


def smbios_round_trip(tree: etree._Element, m: Model) -> None:
    """The laptop's SMBIOS strings reach the guest exactly, whatever characters they hold."""
    entries = {e.get("name"): e.text for e in tree.findall("sysinfo[@type='smbios']/system/entry")}
    want = {name: getattr(m.smbios, name) for name in ("manufacturer", "product", "version", "family")}
    expect(entries == want, f"SMBIOS system entries {entries} (expected {want})")
    mode = tree.find("os/smbios")
    expect(mode is not None and mode.get("mode") == "sysinfo", "<os><smbios mode='sysinfo'/> is missing")
    expect(tree.findtext("name") == m.vm.name, f"<name> is {tree.findtext('name')!r} (expected {m.vm.name!r})")
    title = tree.findtext("title")
    expect(m.name in title, f"<title> is {title!r} (expected the name {m.name!r} in it)")


def subsystem_ids(tree: etree._Element, m: Model) -> None:
    """Each function with a known subsystem id shows it to the guest: a <qemu:override> of its
    hostdev's user alias sets QEMU's x-pci-sub-vendor-id / x-pci-sub-device-id; no other does."""
    aliases = [hd.find("alias").get("name") for hd in tree.findall("devices/hostdev")]
    expect(len(set(aliases)) == len(aliases), f"hostdev aliases {aliases} are not unique")
    expect(all(a.startswith("ua-") for a in aliases), f"hostdev aliases {aliases} (libvirt user aliases start ua-)")
    found = {}
    for device in tree.iterfind(f"{{{QEMU_NS}}}override/{{{QEMU_NS}}}device"):
        props = {p.get("name"): (p.get("type"), p.get("value")) for p in device.iterfind(f".//{{{QEMU_NS}}}property")}
        found[device.get("alias")] = props
    want = {
        alias: {
            "x-pci-sub-vendor-id": ("unsigned", str(int(f.subsystem_id[:4], 16))),
            "x-pci-sub-device-id": ("unsigned", str(int(f.subsystem_id[5:], 16))),
        }
        for alias, f in zip(aliases, m.gpu.functions, strict=True)
        if f.subsystem_id
    }
    expect(found == want, f"QEMU device overrides {found} (expected {want})")


DOMAIN_CHECKS = (
    valid_for_libvirt,
    one_guest_slot,
    host_functions,
    subsystem_ids,
    qemu_commandline,
    no_secure_boot,
    vcpu_pinning,
    smbios_round_trip,
)


def check_domain(xml: bytes, m: Model) -> None:
    """Every domain property; raises AssertionError naming each check that fails."""
    try:
        tree = etree.fromstring(xml)
    except etree.XMLSyntaxError as e:
        raise AssertionError(f"well_formed: {e}") from None
    failures = []
    for check in DOMAIN_CHECKS:
        try:
            check(tree, m)
        except AssertionError as e:
            failures.append(f"{check.__name__}: {e}")
        except (AttributeError, TypeError, ValueError) as e:  # an element or attribute it needs is missing
            failures.append(f"{check.__name__}: cannot read the domain: {e!r}")
    if failures:
        raise AssertionError("\n".join(failures))


# GRUB and modprobe, read by their real consumers --------------------------------------

# grub-mkconfig sources /etc/default/grub and then each drop-in, with /bin/sh and set -e:
# once before the package's model file exists, then after, then from an empty command line.
GRUB_SCRIPT = """set -e
GRUB_CMDLINE_LINUX_DEFAULT=quiet; . "$1"; printf '%s\\n' "$GRUB_CMDLINE_LINUX_DEFAULT"
: > "$2"
GRUB_CMDLINE_LINUX_DEFAULT=quiet; . "$1"; printf '%s\\n' "$GRUB_CMDLINE_LINUX_DEFAULT"
GRUB_CMDLINE_LINUX_DEFAULT=; . "$1"; printf '%s\\n' "$GRUB_CMDLINE_LINUX_DEFAULT"
"""


def check_grub(text: str, m: Model) -> None:
    """Sourced by sh: inert without the package's model file, else exactly our arguments."""
    args = grub_args(m)
    marker = str(paths.installed_model(m.id))
    expect(text.count(marker) == 1, f"the drop-in names {marker} {text.count(marker)} times (expected once)")
    with tempfile.TemporaryDirectory(prefix="gpupass-grub-") as tmp:
        dropin, model_file = Path(tmp) / "dropin.cfg", Path(tmp) / "model.toml"
        dropin.write_text(text.replace(marker, str(model_file)), encoding="utf-8")
        sh = subprocess.run(
            ["/bin/sh", "-c", GRUB_SCRIPT, "sh", str(dropin), str(model_file)],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        )
    expect(sh.returncode == 0 and not sh.stderr, f"sh failed sourcing the drop-in ({sh.returncode}): {sh.stderr}")
    results = sh.stdout.removesuffix("\n").split("\n")
    want = ["quiet", f"quiet {args}", args]
    expect(
        results == want,
        "GRUB_CMDLINE_LINUX_DEFAULT after the drop-in: "
        + ", ".join(f"{got!r}" for got in results)
        + f" (expected 'quiet' without the model file, then {want[1]!r}, and {want[2]!r} from empty)",
    )


@functools.cache
def kmod_baseline() -> Counter[str]:
    """What ``modprobe -c`` prints without configuration: the options from /proc/cmdline."""
    return Counter(modprobe_config(Path("/dev/null")))


def modprobe_config(path: Path) -> list[str]:
    """kmod's parsed view of one configuration file (a kernel version without modules
    keeps it from dumping the module indexes after it)."""
    modprobe = shutil.which("modprobe", path="/usr/sbin:/sbin:/usr/bin:/bin")
    expect(modprobe, "modprobe not found (install kmod)")
    argv = [modprobe, "--set-version", "0-gpupass-none", "--showconfig", "--config", path]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [line for line in out.split("\n# End of configuration files.")[0].splitlines() if line.strip()]


def check_modprobe(text: str, m: Model) -> None:
    """As kmod reads it: vfio-pci's ids, a softdep per driver, the blacklist, nothing else."""
    with tempfile.TemporaryDirectory(prefix="gpupass-modprobe-") as tmp:
        conf = Path(tmp) / "gpupass.conf"
        conf.write_text(text, encoding="utf-8")
        lines = list((Counter(modprobe_config(conf)) - kmod_baseline()).elements())
    if m.mode == "on-demand":
        # Nothing of vfio-pci; NVIDIA's runtime D3 from Turing (device ids from 1e00) on.
        gpu = m.gpu.functions[0]
        turing = gpu.id.startswith("10de:") and gpu.id[5:] >= "1e00"
        want = ["options nvidia NVreg_DynamicPowerManagement=0x02"] if turing else []
    else:
        want = [f"options vfio_pci ids={vfio_ids(m)}"]
        want += [f"softdep {module} pre: vfio-pci" for module in m.host.softdep]
        want += [f"blacklist {module}" for module in m.host.blacklist]
    missing = sorted(set(want) - set(lines))
    extra = sorted(set(lines) - set(want))
    expect(not missing and not extra, f"modprobe -c: missing {missing}, unexpected {extra}")
    expect(len(lines) == len(want), f"modprobe -c lists some directive twice: {lines}")


# Properties ---------------------------------------------------------------------------


@PROPERTY
@given(models())
def test_generated_models_load_back(m: Model) -> None:
    """The strategy is faithful: the loader accepts every generated model, unchanged."""
    assert model.parse(modelfile.to_toml(m), m.id, "x") == m


@PROPERTY
@given(models())
def test_domain_properties(m: Model) -> None:
    check_domain(only(domain.render(m, TEMPLATES)), m)


@PROPERTY
@given(models())
def test_grub_properties(m: Model) -> None:
    check_grub(only(grub.render(m, TEMPLATES)).decode("utf-8"), m)


@PROPERTY
@given(models())
def test_modprobe_properties(m: Model) -> None:
    check_modprobe(only(modprobe.render(m, TEMPLATES)).decode("utf-8"), m)


def check_unit(text: str, m: Model) -> None:
    """The model's name reaches the unit's Description with systemd's '%' specifiers escaped."""
    description = next(
        line.removeprefix("Description=") for line in text.splitlines() if line.startswith("Description=")
    )
    expect("%" not in description.replace("%%", ""), f"unescaped '%' in {description!r}")
    expect(
        description.replace("%%", "%") == f"Save the {m.name} GPU's vBIOS for the VM (gpupass)",
        f"Description {description!r} does not name {m.name!r}",
    )
    expect(f"/sys/bus/pci/drivers/vfio-pci/{m.gpu_function.address}" in text, "the unit does not wait for vfio-pci")


@PROPERTY
@given(models())
def test_unit_properties(m: Model) -> None:
    check_unit(only(systemd.render(m, TEMPLATES)).decode("utf-8"), m)


# The battery SSDT, compiled by iasl -----------------------------------------------------

AML = str(paths.INSTALLED_AML).lstrip("/")


@pytest.mark.tool
@settings(max_examples=AML_EXAMPLES, deadline=None)
@given(battery=batteries(), acpi=derived(model.Acpi))
def test_aml_properties(aurora: Model, battery: model.Battery, acpi: model.Acpi) -> None:
    """Header right, strings in place, stable across compiles and across iasl -d and back."""
    m = dataclasses.replace(aurora, battery=battery, acpi=acpi)
    data = ssdt.render(m, TEMPLATES)[AML]
    header = aml.check(data, acpi.oem_id, acpi.oem_table_id, acpi.oem_revision)
    assert (header.length, sum(data) % 256) == (len(data), 0)
    for text in (battery.model, battery.serial, battery.type, battery.oem):
        assert b"\x0d" + text.encode("ascii") + b"\0" in data, f"AML lacks the string {text!r}"
    assert ssdt.render(m, TEMPLATES)[AML] == data, "the same model compiled to different bytes"
    with tempfile.TemporaryDirectory(prefix="gpupass-iasl-") as tmp:
        (Path(tmp) / "ssdt.aml").write_bytes(data)
        tools.run("iasl", "-vs", "-d", "ssdt.aml", cwd=Path(tmp), what="disassembling the SSDT")
        tools.run("iasl", "-vs", "-p", "again", "ssdt.dsl", cwd=Path(tmp), what="recompiling the disassembled SSDT")
        again = (Path(tmp) / "again.aml").read_bytes()
    assert again == data, f"iasl -d and back changed the AML (sha256 {hashlib.sha256(again).hexdigest()})"


# Mutations: the checks can fail -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mutation:
    template: str
    old: str
    new: str
    caught_as: Callable[[Model], str]  # the line the checks must fail with (a regular expression)


def exactly(line: Callable[[Model], str]) -> Callable[[Model], str]:
    return lambda m: re.escape(line(m))


MUTATIONS = {
    "audio-on-another-slot": Mutation(
        "domain.xml.j2",
        'slot="0x00" function=',
        "slot=\"0x0{{ 1 if dev.function.role == 'audio' else 0 }}\" function=",
        exactly(
            lambda m: (
                "one_guest_slot: the passed-through functions are on guest slots"
                " ['0000:01:00', '0000:01:01'] (expected one)"
            )
        ),
    ),
    "no-qemu-namespace": Mutation(
        "domain.xml.j2",
        ' xmlns:qemu="{{ qemu_ns }}"',
        "",
        lambda m: r"well_formed: Namespace prefix qemu on commandline is not defined, line \d+, column \d+ .*",
    ),
    "multifunction-everywhere": Mutation(
        "domain.xml.j2",
        '{% if dev.guest_function == 0 %} multifunction="on"{% endif %}',
        ' multifunction="on"',
        exactly(
            lambda m: (
                f"one_guest_slot: multifunction='on' on guest functions {list(range(len(m.gpu.functions)))}"
                " (expected on 0 only)"
            )
        ),
    ),
    "secboot-loader": Mutation(
        "domain.xml.j2",
        "{{ model.vm.ovmf_code }}</loader>",
        "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</loader>",
        exactly(
            lambda m: (
                "no_secure_boot: loader '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd'"
                f" (expected the model's {m.vm.ovmf_code!r})"
            )
        ),
    ),
    "ms-keys-varstore": Mutation(
        "domain.xml.j2",
        'template="{{ model.vm.ovmf_vars }}"',
        'template="/usr/share/OVMF/OVMF_VARS_4M.ms.fd"',
        exactly(lambda m: "no_secure_boot: nvram template '/usr/share/OVMF/OVMF_VARS_4M.ms.fd' (expected the model's)"),
    ),
    "vcpupin-off-the-p-cores": Mutation(
        "domain.xml.j2",
        'cpuset="{{ cpu }}"',
        'cpuset="{{ cpu if not loop.last else model.cpu.performance_cpus | max + 1 }}"',
        exactly(
            lambda m: (
                f"vcpu_pinning: vCPU {m.vm.vcpus - 1} is pinned to [{max(m.cpu.performance_cpus) + 1}],"
                f" not a performance CPU {list(m.cpu.performance_cpus)}"
            )
        ),
    ),
    "grub-appends-unconditionally": Mutation(
        "grub.cfg.j2",
        "if [ -e {{ paths.installed_model(model.id) }} ]; then",
        ": {{ paths.installed_model(model.id) }}; if true; then",
        exactly(
            lambda m: (
                f"GRUB_CMDLINE_LINUX_DEFAULT after the drop-in: 'quiet {grub_args(m)}',"
                f" 'quiet {grub_args(m)}', '{grub_args(m)}' (expected 'quiet' without the model file,"
                f" then 'quiet {grub_args(m)}', and '{grub_args(m)}' from empty)"
            )
        ),
    ),
    "modprobe-comment-swallows-a-line": Mutation(
        "modprobe.conf.j2",
        "so they stay free for the VM.\n",
        "so they stay free for the VM: \\\n",
        exactly(lambda m: f"modprobe -c: missing ['options vfio_pci ids={vfio_ids(m)}'], unexpected []"),
    ),
}

ARTIFACT_CHECKS: dict[str, tuple[Callable, Callable[[bytes, Model], None]]] = {
    "domain.xml.j2": (domain.render, check_domain),
    "grub.cfg.j2": (grub.render, lambda data, m: check_grub(data.decode("utf-8"), m)),
    "modprobe.conf.j2": (modprobe.render, lambda data, m: check_modprobe(data.decode("utf-8"), m)),
}


# The first example found is enough; shrinking a whole model takes hypothesis minutes.
# The reach checks search with a budget of their own: they test the strategy, not a property,
# and must not fail when GPUPASS_HYPOTHESIS_EXAMPLES is turned down.
FIND_EXAMPLES = 300
FIND = settings(max_examples=FIND_EXAMPLES, database=None, deadline=None, derandomize=True, phases=[Phase.generate])


def failure(check: Callable[[bytes, Model], None], data: bytes, m: Model) -> str | None:
    try:
        check(data, m)
    except AssertionError as e:
        return str(e)
    return None


@pytest.mark.parametrize("name", MUTATIONS)
def test_properties_catch_a_broken_template(name: str, tmp_path: Path) -> None:
    """Break a scratch copy of a template; hypothesis must find a model the checks reject."""
    mutation = MUTATIONS[name]
    templates_dir = tmp_path / "config-templates"
    shutil.copytree(paths.TEMPLATES_DIR, templates_dir)
    source = templates_dir / mutation.template
    text = source.read_text(encoding="utf-8")
    assert text.count(mutation.old) == 1, f"{mutation.template} changed: update the {name!r} mutation"
    source.write_text(text.replace(mutation.old, mutation.new), encoding="utf-8")
    broken = render.Templates((templates_dir, paths.ACPI_DIR))
    render_artifact, check = ARTIFACT_CHECKS[mutation.template]

    def caught(m: Model) -> bool:
        """The checks reject what the broken template renders, and accept the intact one's."""
        return failure(check, only(render_artifact(m, broken)), m) is not None and (
            failure(check, only(render_artifact(m, TEMPLATES)), m) is None
        )

    m = find(models(), caught, settings=FIND)
    message = failure(check, only(render_artifact(m, broken)), m)
    assert re.search(f"^{mutation.caught_as(m)}$", message, re.MULTILINE), f"{name} was caught, but as:\n{message}"


def test_strategies_reach_the_interesting_cases() -> None:
    """The strategy is not stuck in a corner: both vendors, several functions, tricky text."""

    def reaches(condition: Callable[[Model], bool]) -> None:
        find(models(), condition, settings=FIND)

    reaches(lambda m: m.cpu.vendor == "amd")
    reaches(lambda m: m.cpu.vendor == "intel" and len(m.gpu.functions) >= 4)
    reaches(lambda m: len({f.address.rsplit(".", 1)[0] for f in m.gpu.functions}) > 1)
    reaches(lambda m: len(m.gpu.ids) < len(m.gpu.functions))
    reaches(lambda m: set("<>&'\"") & set(m.smbios.product))
    reaches(lambda m: not m.smbios.manufacturer.isascii())
    reaches(lambda m: m.vm.vcpus == len(m.cpu.performance_cpus) > 2)
    reaches(lambda m: m.battery.full_capacity_mwh < m.battery.design_capacity_mwh)
    reaches(lambda m: m.gpu.mmio64_mb >= 262144)
    reaches(lambda m: m.gpu_function.subsystem_id != "" and len(m.gpu.functions) > 1)
