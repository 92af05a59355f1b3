"""Write models/<id>.toml for the laptops of the published layouts in tests/layouts.py.

Each model is ``gpupass probe``'s output on the fixture tree of its layout, with a header
naming where the layout was published and ``confirmed = false``: the values come from
someone's post, not from the laptop. test_probe.py checks that the files still say exactly
what probe makes of their layouts. Run: python3 -m tests.make_models (from the source tree).
"""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

from gpupass.laptop import machine
from gpupass.laptop.onboarding import probe

from .layouts import LAYOUTS

ROOT = Path(__file__).resolve().parents[1]
# Model id -> layout name: the laptops among the layouts (the rest are not laptops, or are refused).
PUBLISHED_MODELS = {
    "hp-victus-16-rtx4060": "hp-victus-16-rtx4060",
    "hp-victus-16-navi23": "hp-victus-16-navi23",
    "lenovo-legion-5-15arh05": "lenovo-legion-5-15arh05",
    "lenovo-ideapad-5-15itl05": "lenovo-ideapad-5-15itl05",
}
CONFIRMED = "confirmed = true  # read from this machine by gpupass probe"
UNCONFIRMED = "confirmed = false  # from a published layout: not yet confirmed on the hardware"


def probed(layout_name: str) -> probe.Probed:
    with tempfile.TemporaryDirectory(prefix="gpupass-layout-") as tmp:
        return probe.probe(machine.read(LAYOUTS[layout_name].build(Path(tmp))))


def model_text(model_id: str) -> str:
    layout = LAYOUTS[PUBLISHED_MODELS[model_id]]
    result = probed(layout.name)
    body = [line for line in result.toml().splitlines() if not line.startswith("# ")]
    assert body.count(CONFIRMED) == 1
    body[body.index(CONFIRMED)] = UNCONFIRMED

    def comment(text: str) -> list[str]:
        return ["# " + line for line in textwrap.wrap(text, 100, break_on_hyphens=False)]

    header = [
        f"# {result.description}: NOT YET CONFIRMED ON THE HARDWARE.",
        f"# Layout published at {layout.source}",
        *comment(f"What the post shows: {layout.published}."),
        *comment(f"Assumed, not in the post: {layout.assumed}."),
        *comment(
            "The values are `gpupass probe`'s output on the fixture tree tests/layouts.py builds from"
            " that layout (each comment says which sysfs file it came from there). The package's"
            " pre-flight checks refuse to install on a laptop that does not match; run `gpupass probe`"
            " on the laptop itself to replace this file."
        ),
        *(f"# warning: {w}" for w in result.warnings),
    ]
    return "\n".join(header + body) + "\n"


if __name__ == "__main__":
    for model_id in PUBLISHED_MODELS:
        path = ROOT / "models" / f"{model_id}.toml"
        path.write_text(model_text(model_id), encoding="utf-8")
        print(path)
