"""The pre-flight checks as a program for the package's preinst.

preinst runs before the package's files are unpacked, so it cannot import the gpupass
the package ships. Instead, the same modules ``gpupass check`` runs (model parsing and
preflight, standard library only) are embedded in the preinst as source text, with the
model, and loaded from memory: one implementation of the checks, nothing written to disk.
"""

from __future__ import annotations

from pathlib import Path

from ..model import Model
from .artifacts import modelfile

# In import order: each imports only those before it (dotted: below gpupass/).
MODULES = ("errors", "schema", "model", "laptop", "laptop.machine", "laptop.preflight")

BOOTSTRAP = """\
import sys
import types

SOURCES = {sources}
MODEL = {model_toml}

package = types.ModuleType("gpupass")
package.__path__ = []
sys.modules["gpupass"] = package
for name in {modules}:
    shown, source = SOURCES[name]
    parent_name, _, leaf = ("gpupass." + name).rpartition(".")
    module = types.ModuleType("gpupass." + name)
    module.__package__ = parent_name
    if shown.endswith("/__init__.py"):
        module.__path__ = []
        module.__package__ = module.__name__
    module.__file__ = "{package} preinst: " + shown
    sys.modules[module.__name__] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    setattr(sys.modules[parent_name], leaf, module)

from gpupass import model
from gpupass.laptop import preflight

sys.exit(preflight.preinst(model.parse(MODEL, {model_id}, "{package} preinst")))
"""


def program(model: Model) -> str:
    """Python source that runs ``gpupass check`` for ``model`` with nothing installed."""
    top = Path(__file__).parents[1]  # pkg/gpupass
    sources = {}
    for name in MODULES:
        path = top.joinpath(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        shown = path.relative_to(top.parent).as_posix()
        sources[name] = (shown, path.read_text(encoding="utf-8"))
    return BOOTSTRAP.format(
        sources=repr(sources),
        model_toml=repr(modelfile.to_toml(model)),
        modules=repr(MODULES),
        model_id=repr(model.id),
        package=model.package,
    )
