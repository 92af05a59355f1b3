"""The per-laptop model: parsed once from ``models/<id>.toml`` into a frozen object.

Every field is declared once, with the constraint that validates it (see schema.py);
the same declarations drive the property tests' strategies. Loading collects *every*
problem in a file, each as ``file: field: what is wrong (expected ...)``, and raises
one ModelError with all of them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import schema
from .errors import ModelError
from .schema import ListOf, show

MODEL_ID = schema.Text(
    r"[a-z0-9][a-z0-9-]{0,39}",
    "a model id",
    "a file name of lower-case letters, digits and -, e.g. aurora-z.toml",
    alphabet="abcz019-",
    max_len=20,
)


def spec(constraint: Any, default: Any = dataclasses.MISSING, doc: str = "") -> Any:
    """Declare a model field: its constraint, an optional default, and what it means."""
    kwargs: dict[str, Any] = {"metadata": {"constraint": constraint, "doc": doc}}
    if default is not dataclasses.MISSING:
        if isinstance(default, (list, tuple)):
            kwargs["default_factory"] = lambda d=tuple(default): d
        else:
            kwargs["default"] = default
    return field(**kwargs)


# The kernel argument that turns the IOMMU on, by CPU vendor.
IOMMU_ARG = {"intel": "intel_iommu=on", "amd": "amd_iommu=on"}

# When the dGPU goes to vfio-pci: at boot, for good (vfio-pci.ids and the modprobe and initramfs
# drop-ins), or on demand (the host drivers keep it; gpupass gpu claim hands it over when the VM
# starts, release gives it back). ``gpupass mode`` switches an installed package's mode.
MODES = ("boot", "on-demand")


@dataclass(frozen=True, kw_only=True)
class PciFunction:
    address: str = spec(schema.PCI_ADDRESS, doc="host PCI address")
    id: str = spec(schema.PCI_ID, doc="vendor:device id")
    role: str = spec(
        schema.OneOf(("gpu", "audio", "usb", "serial-bus")),
        doc="what the function is (serial-bus: the USB-C UCSI controller of Turing GPUs, class 0x0c80)",
    )
    subsystem_id: str = spec(
        schema.SUBSYSTEM_ID,
        default="",
        doc="the laptop's PCI subsystem vendor:device id of this function, shown to the guest"
        " (mobile NVIDIA drivers stay in Code 43 without it); empty when unknown",
    )

    @property
    def vendor(self) -> str:
        return self.id.split(":")[0]

    @property
    def device(self) -> str:
        return self.id.split(":")[1]

    @property
    def pci_parts(self) -> tuple[int, int, int, int]:
        domain, bus, rest = self.address.split(":")
        slot, function = rest.split(".")
        return int(domain, 16), int(bus, 16), int(slot, 16), int(function, 16)

    @property
    def alias(self) -> str:
        """The libvirt user alias of this function's hostdev (libvirt keeps ``ua-`` aliases),
        by which ``<qemu:override>`` names the device: named by the host address, so the
        generated domain and ``gpupass vm attach`` agree and a reordered domain keeps it."""
        return "ua-gpupass-" + re.sub(r"[:.]", "-", self.address)


@dataclass(frozen=True, kw_only=True)
class Cpu:
    vendor: str = spec(schema.OneOf(("intel", "amd")), doc="CPU vendor: selects intel_iommu or amd_iommu")
    performance_cpus: tuple[int, ...] = spec(
        ListOf(schema.Int(0, 1023), min_len=1, max_len=64, unique=True),
        doc="host CPUs of the performance cores (with their SMT siblings), for vCPU pinning",
    )
    threads_per_core: int = spec(schema.Int(1, 2), default=2, doc="SMT threads per performance core")


@dataclass(frozen=True, kw_only=True)
class Gpu:
    functions: tuple[PciFunction, ...] = spec(
        ListOf(PciFunction, min_len=1, max_len=8),
        doc="the functions passed through together, the GPU first",
    )
    mmio64_mb: int = spec(
        schema.Int(2048, 1048576, power_of_two=True, unit="MiB"),
        default=65536,
        doc="guest 64-bit PCI MMIO window (OVMF X-PciMmio64Mb), big enough for the resizable BAR",
    )

    @property
    def ids(self) -> tuple[str, ...]:
        """The distinct vendor:device ids, in declaration order."""
        return tuple(dict.fromkeys(f.id for f in self.functions))


@dataclass(frozen=True, kw_only=True)
class Host:
    softdep: tuple[str, ...] = spec(
        ListOf(schema.MODULE, max_len=32, unique=True),
        default=("nouveau", "nvidia", "nvidia_drm", "nvidia_modeset", "snd_hda_intel"),
        doc="modules that must load after vfio-pci (softdep X pre: vfio-pci)",
    )
    blacklist: tuple[str, ...] = spec(
        ListOf(schema.MODULE, max_len=32, unique=True),
        default=(),
        doc="modules never loaded on the host (only when the host never uses the dGPU)",
    )


@dataclass(frozen=True, kw_only=True)
class Vm:
    name: str = spec(schema.VM_NAME, default="win11-gpu", doc="libvirt domain name")
    memory_mib: int = spec(schema.Int(1024, 1048576, unit="MiB"), default=16384, doc="guest memory")
    vcpus: int = spec(schema.Int(1, 64), default=8, doc="guest vCPUs, each pinned to one performance CPU")
    ovmf_code: str = spec(
        schema.ABS_PATH, default="/usr/share/OVMF/OVMF_CODE_4M.fd", doc="OVMF firmware without Secure Boot"
    )
    ovmf_vars: str = spec(schema.ABS_PATH, default="/usr/share/OVMF/OVMF_VARS_4M.fd", doc="OVMF variable store")
    hyperv_vendor_id: str = spec(schema.HYPERV_VENDOR_ID, default="GenuineIntel", doc="Hyper-V vendor_id")
    panel: str = spec(
        schema.RESOLUTION,
        default="1920x1080",
        doc="the laptop's internal panel resolution (its eDP connector's preferred mode): what"
        " gpupass vm define/attach --looking-glass sizes Looking Glass's shared memory for",
    )

    @property
    def panel_size(self) -> tuple[int, int]:
        width, _, height = self.panel.partition("x")
        return int(width), int(height)


@dataclass(frozen=True, kw_only=True)
class Smbios:
    manufacturer: str = spec(schema.FreeText(), doc="system manufacturer as the real firmware reports it")
    product: str = spec(schema.FreeText(), doc="system product name")
    version: str = spec(schema.FreeText(), default="1.0", doc="system version")
    family: str = spec(schema.FreeText(), default="Notebook", doc="system family")


@dataclass(frozen=True, kw_only=True)
class Battery:
    design_capacity_mwh: int = spec(schema.Int(1000, 500000, unit="mWh"), doc="design capacity")
    full_capacity_mwh: int = spec(schema.Int(1000, 500000, unit="mWh"), doc="last full charge capacity")
    design_voltage_mv: int = spec(schema.Int(1000, 60000, unit="mV"), doc="design voltage")
    model: str = spec(schema.ASL_STRING, default="GPUPASS BAT0", doc="battery model number")
    serial: str = spec(schema.ASL_STRING, default="0001", doc="battery serial number")
    type: str = spec(schema.ASL_STRING, default="LION", doc="battery type")
    oem: str = spec(schema.ASL_STRING, default="GPUPASS", doc="battery OEM information")


@dataclass(frozen=True, kw_only=True)
class Acpi:
    oem_id: str = spec(schema.ACPI_OEM_ID, default="GPUPAS", doc="SSDT OEM id")
    oem_table_id: str = spec(schema.ACPI_OEM_TABLE_ID, default="BATTERY", doc="SSDT OEM table id")
    oem_revision: int = spec(schema.Int(0, 0xFFFFFFFF), default=1, doc="SSDT OEM revision")


# NVPCF power offsets: whole watts; the table carries them as signed 1/8 W units (16 bits).
NVPCF_WATTS = schema.Int(-255, 255, unit="W")


@dataclass(frozen=True, kw_only=True)
class Guest:
    acpi_rom: bool = spec(
        schema.Bool(),
        default=True,
        doc="serve the stored vBIOS to the guest through ACPI _ROM on the GPU's guest node (an SSDT written"
        " on the laptop whenever the vBIOS is stored), as NVIDIA's driver and nouveau read it on Optimus"
        " laptops; NVIDIA GPUs only; proven in emulation (QEMU 7.2), not yet on a laptop",
    )
    nvpcf: bool = spec(
        schema.Bool(),
        default=False,
        doc="EXPERIMENTAL: give the guest a static NVIDIA Platform Controllers and Framework device"
        " (\\_SB.NPCF, NVDA0820) offering Dynamic Boost with the nvpcf_* values below; NVIDIA GPUs only;"
        " proven in emulation (ACPICA over QEMU 7.2's tables), not yet on a laptop",
    )
    nvpcf_ctgp_offset_w: int = spec(
        NVPCF_WATTS,
        default=0,
        doc="NVPCF: configurable TGP offset on AC, from the GPU's default TGP (the 'base TGP offset')",
    )
    nvpcf_tpp_offset_w: int = spec(
        NVPCF_WATTS,
        default=0,
        doc="NVPCF: Dynamic Boost's target total processor power (CPU + GPU) on AC, as an offset from the"
        " GPU's default TGP",
    )
    nvpcf_max_tgp_offset_w: int = spec(
        NVPCF_WATTS, default=0, doc="NVPCF: the most Dynamic Boost may add to the GPU's default TGP on AC"
    )
    nvpcf_min_tgp_offset_w: int = spec(
        NVPCF_WATTS, default=0, doc="NVPCF: the least Dynamic Boost may give the GPU, as an offset from its default TGP"
    )
    nvpcf_on_battery: bool = spec(
        schema.Bool(), default=False, doc="NVPCF: let Dynamic Boost run on battery too (default: AC only)"
    )


@dataclass(frozen=True, kw_only=True)
class Model:
    id: str  # from the file name, not a field of the file
    name: str = spec(schema.FreeText(), doc="the laptop's marketing name")
    confirmed: bool = spec(
        schema.Bool(),
        default=False,
        doc="true when the values were read from the laptop itself (gpupass probe, or a reported working"
        " setup); false for a model written from a layout someone published, not yet confirmed on the hardware",
    )
    mode: str = spec(
        schema.OneOf(MODES),
        default="boot",
        doc="when the dGPU goes to vfio-pci: boot (at every boot, the host never uses it) or on-demand"
        " (the host drivers keep it while the VM is off; the libvirt hook claims it when the VM starts);"
        " the installed package's mode is switched with: sudo gpupass mode boot|on-demand",
    )
    cpu: Cpu = spec(Cpu)
    gpu: Gpu = spec(Gpu)
    host: Host = spec(Host, default=None)
    vm: Vm = spec(Vm, default=None)
    smbios: Smbios = spec(Smbios)
    battery: Battery = spec(Battery)
    acpi: Acpi = spec(Acpi, default=None)
    guest: Guest = spec(Guest, default=None)

    @property
    def package(self) -> str:
        return f"gpupass-{self.id}"

    @property
    def gpu_function(self) -> PciFunction:
        return self.gpu.functions[0]

    @property
    def acpi_rom(self) -> bool:
        """Whether the guest gets the _ROM SSDT: asked for, and an NVIDIA GPU (whose drivers read it)."""
        return self.guest.acpi_rom and self.gpu_function.vendor == "10de"

    @property
    def nvpcf(self) -> bool:
        """Whether the guest gets the experimental NPCF SSDT (guest.nvpcf; refused for other GPUs)."""
        return self.guest.nvpcf

    @property
    def kernel_args(self) -> tuple[str, ...]:
        """The kernel arguments the package adds (GRUB drop-in) in the model's own mode."""
        return self.kernel_args_for(self.mode)

    def kernel_args_for(self, mode: str) -> tuple[str, ...]:
        """The kernel arguments of ``mode``, in order: the IOMMU always, vfio-pci.ids at boot only."""
        iommu = (IOMMU_ARG[self.cpu.vendor], "iommu=pt")
        return iommu + ("vfio-pci.ids=" + ",".join(self.gpu.ids),) if mode == "boot" else iommu

    @property
    def runtime_d3(self) -> bool:
        """Whether the host's NVIDIA driver can power the idle dGPU off by itself (runtime D3,
        NVreg_DynamicPowerManagement=0x02): Turing and later, whose device ids start at 0x1e00
        (TU102 is 10de:1e02; Volta's and Pascal's are below)."""
        f = self.gpu_function
        return f.vendor == "10de" and int(f.device, 16) >= 0x1E00


# Loading ------------------------------------------------------------------------------

# An OVMF firmware or variable-store file name that enables Secure Boot (with Microsoft's or
# test keys); model.py refuses such vm.ovmf_* paths, laptop/vm.py such a domain loader.
SECURE_BOOT_LOADER = re.compile(r"secboot|\.ms\.fd$|snakeoil", re.IGNORECASE)


def _is_table(constraint: Any) -> bool:
    """A nested model class (a TOML table), as opposed to a constraint instance."""
    return isinstance(constraint, type) and dataclasses.is_dataclass(constraint)


def _build(cls: type, data: Any, where: str, problems: list[tuple[str, str]], **extra: Any) -> Any:
    """Build dataclass ``cls`` from ``data``; append (field path, message) problems."""
    if not isinstance(data, dict):
        problems.append((where, f"{show(data)} is not a table (expected a [{where}] table)"))
        return None
    known = {f.name: f for f in dataclasses.fields(cls) if "constraint" in f.metadata}
    values: dict[str, Any] = {}
    for key in data:
        if key not in known:
            path = f"{where}.{key}" if where else key
            problems.append((path, f"unknown field (expected one of: {', '.join(known)})"))
    for name, f in known.items():
        path = f"{where}.{name}" if where else name
        constraint = f.metadata["constraint"]
        if name not in data:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                if value is None and _is_table(constraint):
                    value = _build(constraint, {}, path, problems)
                values[name] = value
            else:
                problems.append((path, f"missing (expected {_expected(constraint)})"))
            continue
        values[name] = _value(constraint, data[name], path, problems)
    if any(v is None for v in values.values()) or len(values) < len(known):
        return None
    return cls(**extra, **values)


def _expected(constraint: Any) -> str:
    if _is_table(constraint):
        return "a table"
    if isinstance(constraint, ListOf):
        return constraint.describe()
    return constraint.expected


def _value(constraint: Any, raw: Any, path: str, problems: list[tuple[str, str]]) -> Any:
    if _is_table(constraint):
        return _build(constraint, raw, path, problems)
    if isinstance(constraint, ListOf):
        if not isinstance(raw, list):
            problems.append((path, f"{show(raw)} is not a list (expected {constraint.describe()})"))
            return None
        if not constraint.min_len <= len(raw) <= constraint.max_len:
            problems.append((path, f"has {len(raw)} items (expected {constraint.describe()})"))
            return None
        items = [_value(constraint.item, item, f"{path}[{i}]", problems) for i, item in enumerate(raw)]
        if any(item is None for item in items):
            return None
        if constraint.unique:
            seen: set[Any] = set()
            for i, item in enumerate(items):
                if item in seen:
                    problems.append((f"{path}[{i}]", f"{show(item)} is listed twice (expected unique items)"))
                    return None
                seen.add(item)
        return tuple(items)
    wrong = constraint.check(raw)
    if wrong:
        problems.append((path, f"{wrong} (expected {constraint.expected})"))
        return None
    return raw


def _cross_checks(model: Model) -> list[tuple[str, str]]:
    """Rules that span fields; each names the field the user should change."""
    problems = []
    functions = model.gpu.functions
    if functions[0].role != "gpu":
        problems.append(
            ("gpu.functions[0].role", f"{show(functions[0].role)} comes first (expected the 'gpu' function first)")
        )
    for i, f in enumerate(functions[1:], start=1):
        if f.role == "gpu":
            problems.append(
                (f"gpu.functions[{i}].role", "a second 'gpu' function (expected exactly one, listed first)")
            )
    addresses = [f.address for f in functions]
    for i, a in enumerate(addresses):
        if a in addresses[:i]:
            problems.append((f"gpu.functions[{i}].address", f"{show(a)} is listed twice (expected each function once)"))
    if model.vm.vcpus > len(model.cpu.performance_cpus):
        problems.append(
            (
                "vm.vcpus",
                f"{model.vm.vcpus} vCPUs but only {len(model.cpu.performance_cpus)} performance CPUs to pin them to"
                f" (expected at most {len(model.cpu.performance_cpus)})",
            )
        )
    if model.vm.vcpus % model.cpu.threads_per_core:
        problems.append(
            (
                "vm.vcpus",
                f"{model.vm.vcpus} is not a multiple of cpu.threads_per_core={model.cpu.threads_per_core}"
                " (expected whole cores)",
            )
        )
    # Secure Boot refuses the guest's unsigned NVIDIA module: neither the firmware nor a
    # variable store enrolled with Microsoft's or test keys may be one that enables it.
    for field_name, example in (("ovmf_code", "OVMF_CODE_4M.fd"), ("ovmf_vars", "OVMF_VARS_4M.fd")):
        path = getattr(model.vm, field_name)
        if SECURE_BOOT_LOADER.search(path):
            problems.append(
                (f"vm.{field_name}", f"{show(path)} is a Secure Boot build (expected e.g. /usr/share/OVMF/{example})")
            )
    g = model.guest
    if g.nvpcf and model.gpu_function.vendor != "10de":
        problems.append(
            (
                "guest.nvpcf",
                f"true for a {model.gpu_function.vendor} GPU (expected false: NVPCF is NVIDIA's, vendor 10de)",
            )
        )
    if g.nvpcf_min_tgp_offset_w > g.nvpcf_max_tgp_offset_w:
        problems.append(
            (
                "guest.nvpcf_min_tgp_offset_w",
                f"{g.nvpcf_min_tgp_offset_w} exceeds guest.nvpcf_max_tgp_offset_w={g.nvpcf_max_tgp_offset_w}"
                " (expected at most the maximum)",
            )
        )
    b = model.battery
    if b.full_capacity_mwh > b.design_capacity_mwh:
        problems.append(
            (
                "battery.full_capacity_mwh",
                f"{b.full_capacity_mwh} exceeds battery.design_capacity_mwh={b.design_capacity_mwh}"
                " (expected at most the design capacity)",
            )
        )
    return problems


def parse(text: str, model_id: str, source: str) -> Model:
    """Parse model TOML ``text``; ``source`` names the file in messages."""
    problems: list[tuple[str, str]] = []
    wrong_id = MODEL_ID.check(model_id)
    if wrong_id:
        raise ModelError(f"{source}: {wrong_id} (expected {MODEL_ID.expected})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"{source}: not valid TOML: {e}") from None
    model = _build(Model, data, "", problems, id=model_id)
    if model is not None:
        problems.extend(_cross_checks(model))
    if problems:
        raise ModelError([f"{source}: {path}: {message}" for path, message in problems])
    return model


def load(path: Path, source: str | None = None) -> Model:
    """Load and validate ``models/<id>.toml``; the model id is the file's stem."""
    source = source or str(path)
    if path.suffix != ".toml":
        raise ModelError(f"{source}: not a .toml file (expected models/<id>.toml)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{source}: no such model file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{source}: cannot be read: {e}") from None
    return parse(text, path.stem, source)


def to_dict(model: Model) -> dict[str, Any]:
    """The resolved model (defaults filled in) as plain data, for preview."""
    return dataclasses.asdict(model)


def toml_value(v: Any) -> str:
    """A field's value as TOML (the resolved model the package ships, probe's output)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON string escapes are TOML basic-string escapes
    return "[" + ", ".join(toml_value(item) for item in v) + "]"


def _toml_table(obj: Any, prefix: str) -> list[str]:
    scalars, tables, arrays = [], [], []
    for f in dataclasses.fields(obj):
        if "constraint" not in f.metadata:
            continue  # derived, e.g. the id (the file name)
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            tables += ["", f"[{name}]", *_toml_table(value, name + ".")]
        elif value and isinstance(value, tuple) and dataclasses.is_dataclass(value[0]):
            for item in value:
                arrays += ["", f"[[{name}]]", *_toml_table(item, name + ".")]
        else:
            scalars.append(f"{f.name} = {toml_value(value)}")
    return scalars + tables + arrays


def to_toml(model: Model) -> str:
    """The resolved model (every default filled in) as TOML: the file the package installs, and
    the model section of ``gpupass report``; ``parse`` gives back the same model."""
    header = [f"# {model.package}: the resolved model (every default filled in), read by gpupass."]
    return "\n".join(header + _toml_table(model, "")) + "\n"
