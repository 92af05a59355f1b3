"""The pre-flight checks as a program for the package's preinst.

preinst runs before the package's files are unpacked, so it cannot import the gpupass
the package ships. Instead, the same modules ``gpupass check`` runs (model parsing and
preflight, standard library only) are embedded in the preinst as source text, with the
model, and loaded from memory: one implementation of the checks, nothing written to disk.
"""

from __future__ import annotations

from pathlib import Path

from .artifacts import modelfile
from .model import Model

# In import order: each imports only those before it.
MODULES = ("errors", "schema", "model", "preflight")

BOOTSTRAP = """\
import sys
import types

SOURCES = {sources}
MODEL = {model_toml}

package = types.ModuleType("gpupass")
package.__path__ = []
sys.modules["gpupass"] = package
for name in {modules}:
    module = types.ModuleType("gpupass." + name)
    module.__package__ = "gpupass"
    module.__file__ = "{package} preinst: gpupass/" + name + ".py"
    sys.modules[module.__name__] = module
    exec(compile(SOURCES[name], module.__file__, "exec"), module.__dict__)
    setattr(package, name, module)

from gpupass import model, preflight

sys.exit(preflight.preinst(model.parse(MODEL, {model_id}, "{package} preinst")))
"""


def program(model: Model) -> str:
    """Python source that runs ``gpupass check`` for ``model`` with nothing installed."""
    here = Path(__file__).parent
    sources = {name: (here / f"{name}.py").read_text(encoding="utf-8") for name in MODULES}
    return BOOTSTRAP.format(
        sources=repr(sources),
        model_toml=repr(modelfile.to_toml(model)),
        modules=repr(MODULES),
        model_id=repr(model.id),
        package=model.package,
    )
