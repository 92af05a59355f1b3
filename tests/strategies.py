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
from gpupass.model import Battery, Cpu, Gpu, Model, PciFunction, Vm

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


_OVMF_CODE = field_strategy(Vm, "ovmf_code").filter(lambda path: not model._SECURE_BOOT_LOADER.search(path))


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
def models(draw: st.DrawFn) -> Model:
    """Models the loader accepts: every field from the schema, every cross-field rule met."""
    cpu, vm = draw(cpu_and_vm())
    gpu = build(draw, Gpu, functions=draw(gpu_functions()))
    return build(draw, Model, id=draw(strategy_for(model.MODEL_ID)), cpu=cpu, vm=vm, gpu=gpu, battery=draw(batteries()))
