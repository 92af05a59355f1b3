"""Hypothesis strategies for models, derived from the model schema itself.

Every field is drawn from the constraint it is declared with in ``gpupass.model``
(``metadata["constraint"]``: a schema constraint's ``strategy()``, a ``ListOf``, or a
nested model class, recursively), so the tests explore what the loader accepts and a new
field needs no change here. The loader's cross-field rules (``model._cross_checks``) are
met by construction, drawing the dependent fields after the ones they depend on, so no
example is thrown away. The strategy is checked against the loader in
test_properties.py: every generated model must load back from its own TOML unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from hypothesis import strategies as st

from gpupass import model, schema
from gpupass.model import Battery, Cpu, Gpu, Guest, Model, PciFunction, Vm

# Mixed into every free-text field so that XML-special, shell-special and non-ASCII
# characters (and characters outside the Basic Multilingual Plane) turn up often, not
# only when the general text strategy happens to draw them.
TRICKY_CHARACTERS = "<>&'\"\\$`;#=%{} aé–ü中ß€😀𝔘"


def constraint_of(cls: type, name: str) -> Any:
    """The constraint ``cls.name`` is declared with."""
    return next(f.metadata["constraint"] for f in dataclasses.fields(cls) if f.name == name)


# Strategies are built once: building and validating them again on every draw costs more
# than drawing from them.
@functools.cache
def strategy_for(constraint: Any) -> st.SearchStrategy:
    """Values a field declared with ``constraint`` may hold (before cross-field rules)."""
    if isinstance(constraint, type) and dataclasses.is_dataclass(constraint):
        return derived(constraint)
    if isinstance(constraint, schema.ListOf):
        return st.lists(
            strategy_for(constraint.item),
            min_size=constraint.min_len,
            max_size=constraint.max_len,
            unique=constraint.unique,
        ).map(tuple)
    if isinstance(constraint, schema.FreeText):
        tricky = st.text(TRICKY_CHARACTERS, min_size=1, max_size=constraint.max_len)
        return st.one_of(constraint.strategy(), tricky.filter(lambda s: constraint.check(s) is None))
    return constraint.strategy()


def field_strategy(cls: type, name: str) -> st.SearchStrategy:
    return strategy_for(constraint_of(cls, name))


def derived(cls: type) -> st.SearchStrategy:
    """Instances of model class ``cls`` (without cross-field rules), every field from its constraint."""
    return st.builds(cls, **{f.name: strategy_for(f.metadata["constraint"]) for f in dataclasses.fields(cls)})


def build(draw: st.DrawFn, cls: type, **given: Any) -> Any:
    """An instance of ``cls``: the ``given`` fields as they are, every other field drawn from its constraint."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = set(given) - set(names)
    assert not unknown, f"{cls.__name__} has no fields {unknown}"
    return cls(**{name: given[name] if name in given else draw(field_strategy(cls, name)) for name in names})


def _sibling_addresses(gpu_address: str, count: int) -> list[str]:
    """Functions 0..count-1 of the GPU's own device, as on a real laptop (01:00.0, 01:00.1)."""
    device = gpu_address.rsplit(".", 1)[0]
    return [f"{device}.{function}" for function in range(count)]


@st.composite
def gpu_functions(draw: st.DrawFn) -> tuple[PciFunction, ...]:
    """The passed-through functions: the one 'gpu' first, then other roles; unique addresses."""
    functions = constraint_of(Gpu, "functions")
    address = field_strategy(PciFunction, "address")
    roles = constraint_of(PciFunction, "role").choices
    count = draw(st.integers(functions.min_len, functions.max_len))
    if count <= 8 and draw(st.booleans()):
        addresses = _sibling_addresses(draw(address), count)
    else:
        addresses = draw(st.lists(address, min_size=count, max_size=count, unique=True))
    other_roles = st.sampled_from([r for r in roles if r != "gpu"])
    return tuple(
        build(draw, PciFunction, address=a, role="gpu" if i == 0 else draw(other_roles))
        for i, a in enumerate(addresses)
    )


_OVMF_CODE = field_strategy(Vm, "ovmf_code").filter(lambda path: not model.SECURE_BOOT_LOADER.search(path))


@st.composite
def cpu_and_vm(draw: st.DrawFn) -> tuple[Cpu, Vm]:
    """A CPU and a VM whose vCPUs are whole cores that fit on the performance CPUs."""
    threads = draw(field_strategy(Cpu, "threads_per_core"))
    cpus = constraint_of(Cpu, "performance_cpus")
    performance_cpus = tuple(
        draw(
            st.lists(
                strategy_for(cpus.item),
                min_size=max(cpus.min_len, threads),
                max_size=cpus.max_len,
                unique=cpus.unique,
            )
        )
    )
    vcpus = constraint_of(Vm, "vcpus")
    cores = draw(st.integers(-(-vcpus.lo // threads), min(vcpus.hi, len(performance_cpus)) // threads))
    cpu = build(draw, Cpu, performance_cpus=performance_cpus, threads_per_core=threads)
    vm = build(draw, Vm, vcpus=cores * threads, ovmf_code=draw(_OVMF_CODE))
    return cpu, vm


@st.composite
def batteries(draw: st.DrawFn) -> Battery:
    """A battery whose last full charge is at most its design capacity."""
    design = draw(field_strategy(Battery, "design_capacity_mwh"))
    full = constraint_of(Battery, "full_capacity_mwh")
    return build(
        draw, Battery, design_capacity_mwh=design, full_capacity_mwh=draw(st.integers(full.lo, min(full.hi, design)))
    )


@st.composite
def guests(draw: st.DrawFn, gpu: Gpu) -> Guest:
    """Guest settings: NVPCF only for an NVIDIA GPU, its minimum TGP offset at most its maximum."""
    nvpcf = draw(field_strategy(Guest, "nvpcf")) and gpu.functions[0].vendor == "10de"
    high = draw(field_strategy(Guest, "nvpcf_max_tgp_offset_w"))
    low = constraint_of(Guest, "nvpcf_min_tgp_offset_w")
    return build(
        draw, Guest, nvpcf=nvpcf, nvpcf_max_tgp_offset_w=high, nvpcf_min_tgp_offset_w=draw(st.integers(low.lo, high))
    )


@st.composite
def models(draw: st.DrawFn) -> Model:
    """Models the loader accepts: every field from the schema, every cross-field rule met."""
    cpu, vm = draw(cpu_and_vm())
    gpu = build(draw, Gpu, functions=draw(gpu_functions()))
    return build(
        draw,
        Model,
        id=draw(strategy_for(model.MODEL_ID)),
        cpu=cpu,
        vm=vm,
        gpu=gpu,
        battery=draw(batteries()),
        guest=draw(guests(gpu)),
    )


# Machines (gpupass.laptop.machine snapshots) with a dGPU that can be passed through ------------

_HEX4 = st.text("0123456789abcdef", min_size=4, max_size=4)
_DISPLAY = st.sampled_from(["0x030000", "0x030200", "0x038000"])
_OTHER_FUNCTIONS = {"audio": "0x040300", "usb": "0x0c0330", "serial-bus": "0x0c8000"}


@st.composite
def bars(draw: st.DrawFn) -> tuple:
    from gpupass.laptop.machine import Bar

    out = []
    for index in sorted(draw(st.sets(st.integers(0, 5), max_size=3))):
        size = 1 << draw(st.integers(12, 35))  # 4 KiB to 32 GiB
        larger = draw(st.lists(st.integers(20, 35), max_size=4, unique=True))
        out.append(Bar(index, size, draw(st.booleans()), draw(st.booleans()), tuple(sorted(1 << n for n in larger))))
    return tuple(out)


@st.composite
def cpu_topologies(draw: st.DrawFn, vendor: str) -> tuple[tuple, tuple | None]:
    """(cores as Cpu records, Intel hybrid P-core list or None)."""
    from gpupass.laptop.machine import Cpu

    n_cores = draw(st.integers(1, 24))
    threads = draw(st.sampled_from([1, 2]))
    apart = draw(st.booleans())
    cores = []
    for c in range(n_cores):
        if threads == 1:
            cores.append((c,))
        else:
            cores.append((c, c + n_cores) if apart else (2 * c, 2 * c + 1))
    e_cores = draw(st.integers(0, 8)) if vendor == "intel" else 0
    first_e = max(n for core in cores for n in core) + 1
    cores += [(first_e + n,) for n in range(e_cores)]
    p_cores = tuple(sorted(n for core in cores[:n_cores] for n in core)) if e_cores else None
    cpus = tuple(Cpu(n, tuple(sorted(core))) for core in cores for n in core)
    return tuple(sorted(cpus, key=lambda c: c.number)), p_cores


@st.composite
def machines(draw: st.DrawFn):
    """Laptops gpupass can serve: an iGPU driving the panel, a dGPU (any display class, behind
    one to three bridges) with audio, USB and UCSI functions or not, a clean IOMMU group or
    none yet, the firmware's IOMMU table; DMI strings and batteries anything sysfs may say."""
    from gpupass.laptop.machine import Battery, Dmi, Machine, PciDevice

    vendor = draw(st.sampled_from(["intel", "amd"]))
    vendor_id = {"intel": "GenuineIntel", "amd": "AuthenticAMD"}[vendor]
    bus = draw(st.integers(1, 0x80))
    chain = [f"0000:00:{draw(st.integers(1, 0x1F)):02x}.{draw(st.integers(0, 7))}"]
    chain += [f"0000:{bus - n:02x}:00.0" for n in range(draw(st.integers(0, min(2, bus - 1))), 0, -1)]
    gpu_slot = f"0000:{bus:02x}:00"
    groups_on = draw(st.booleans())
    with_bridges = draw(st.booleans())

    def device(address, vid, cls, *, upstream=(), boot_vga=None, group=None, bars=(), subsystem=None):
        v, d = vid.split(":")
        sv, sd = subsystem.split(":") if subsystem else (None, None)
        return PciDevice(
            address,
            v,
            d,
            sv,
            sd,
            cls,
            None,
            boot_vga,
            upstream,
            bars,
            group if groups_on else None,
            "suspended",
            "auto",
            "D3cold",
        )

    gpu_class = draw(_DISPLAY)
    functions = [
        device(
            f"{gpu_slot}.0",
            f"{draw(_HEX4)}:{draw(_HEX4)}",
            gpu_class,
            upstream=tuple(reversed(chain)),
            boot_vga=False if gpu_class == "0x030000" else None,
            group="7",
            bars=draw(bars()),
            subsystem=draw(st.one_of(st.none(), st.just("0000:0000"), st.just("103c:8902"))),
        )
    ]
    roles = draw(st.lists(st.sampled_from(sorted(_OTHER_FUNCTIONS)), max_size=7))
    for n, role in enumerate(roles, start=1):
        functions.append(
            device(
                f"{gpu_slot}.{n}",
                f"{draw(_HEX4)}:{draw(_HEX4)}",
                _OTHER_FUNCTIONS[role],
                upstream=tuple(reversed(chain)),
                group="7",
                bars=draw(bars()),
            )
        )
    bridge_group = "7" if with_bridges else "3"
    bridges = [
        device(address, "8086:0001", "0x060400", upstream=tuple(reversed(chain[:i])), group=bridge_group)
        for i, address in enumerate(chain)
    ]
    igpu = device(
        "0000:00:02.0" if "0000:00:02.0" not in chain else "0000:00:03.0",
        "8086:46a3",
        "0x030000",
        boot_vga=True,
        group="1",
    )
    pci = tuple(sorted([igpu, *bridges, *functions], key=lambda d: d.address))
    groups = {}
    if groups_on:
        for d in pci:
            groups.setdefault(d.iommu_group, []).append(d.address)
    cpus, p_cores = draw(cpu_topologies(vendor))
    text = st.one_of(st.none(), st.text(max_size=80), st.text(TRICKY_CHARACTERS, max_size=80))
    battery = st.builds(
        Battery,
        st.just("BAT0"),
        st.one_of(st.none(), st.integers(0, 10**7)),
        st.one_of(st.none(), st.integers(0, 10**7)),
        st.one_of(st.none(), st.integers(0, 10**6)),
        st.none(),
        st.none(),
        st.none(),
    )
    return Machine(
        pci=pci,
        iommu_groups={g: tuple(sorted(a)) for g, a in groups.items()},
        cpu_vendor_id=vendor_id,
        cpu_model="x",
        cpus=cpus,
        performance_cores=p_cores,
        dmi=Dmi(draw(text), draw(text), draw(text), draw(text), draw(st.one_of(st.none(), st.integers(1, 36)))),
        batteries=tuple(draw(st.lists(battery, max_size=2))),
        acpi_tables=("DSDT", {"intel": "DMAR", "amd": "IVRS"}[vendor]),
    )
