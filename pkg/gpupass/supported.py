"""Is my laptop supported? The table of the models in ``models/``: id, laptop, GPU, confirmed
or not, and where the values came from. ``gpupass models`` prints it (text, ``--json``,
``--markdown``); README.md carries the Markdown one between two markers, and
tests/test_supported.py fails when README's differs from what the model files say.

Where a model's values came from is written in its file's header comments, not in a field
(a field would be in every package and move every model's version when a comment changes):
``# Source: ...`` when a maintainer names it (a confirmed model's report), else the
``# Layout published at URL`` line tests/make_models.py writes for a published layout; a
confirmed model with neither was read from the laptop itself (``confirmed``'s meaning in
model.py). An unconfirmed model must name its source.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from . import model
from .errors import GpupassError, ModelError

SOURCE = re.compile(r"^# Source: (.+)$", re.MULTILINE)
PUBLISHED = re.compile(r"^# Layout published at (\S+)", re.MULTILINE)
FROM_THE_LAPTOP = "read from the laptop itself"
VENDORS = {"10de": "NVIDIA", "1002": "AMD", "8086": "Intel"}
COLUMNS = ("id", "laptop", "GPU", "confirmed", "source")
# README.md's table sits between these lines.
BEGIN = "<!-- models table: written by `python3 -m gpupass models --markdown`; tests/test_supported.py checks it -->"
END = "<!-- end of models table -->"


@dataclass(frozen=True)
class Row:
    id: str
    laptop: str
    gpu: str
    confirmed: bool
    source: str

    def cells(self) -> tuple[str, ...]:
        return (self.id, self.laptop, self.gpu, "yes" if self.confirmed else "no", self.source)


def source_of(text: str, m: model.Model, shown: str) -> str:
    """Where ``m``'s values came from, as its file's header says."""
    if found := SOURCE.search(text):
        return found.group(1).strip()
    if found := PUBLISHED.search(text):
        return f"layout published at {found.group(1)}"
    if m.confirmed:
        return FROM_THE_LAPTOP
    raise ModelError(
        f"{shown}: confirmed = false and no source (expected a '# Layout published at URL' or '# Source: ...' line)"
    )


def row(path: Path, shown: str | None = None) -> Row:
    shown = shown or f"models/{path.name}"
    m = model.load(path, shown)
    gpu = m.gpu_function
    text = path.read_text(encoding="utf-8")
    return Row(m.id, m.name, f"{VENDORS.get(gpu.vendor, gpu.vendor)} {gpu.id}", m.confirmed, source_of(text, m, shown))


def rows(models_dir: Path) -> list[Row]:
    """Every model of ``models_dir``, by id; every problem of every file at once."""
    found, problems = [], []
    for path in sorted(models_dir.glob("*.toml")):
        try:
            found.append(row(path))
        except ModelError as e:
            problems += e.problems
    if problems:
        raise ModelError(problems)
    return found


def text_table(table: list[Row]) -> str:
    lines = [COLUMNS, *(r.cells() for r in table)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS) - 1)]
    return "".join("  ".join([*(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)), line[-1]]) + "\n"
                   for line in lines)  # fmt: skip


def markdown_table(table: list[Row]) -> str:
    def cells(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |\n"

    return cells(COLUMNS) + cells(("---",) * len(COLUMNS)) + "".join(cells(r.cells()) for r in table)


def json_table(table: list[Row]) -> str:
    return json.dumps([asdict(r) for r in table], indent=2) + "\n"


def with_table(readme: str, table: list[Row]) -> str:
    """``readme`` with the text between BEGIN and END replaced by the table."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise GpupassError(f"README.md: expected one '{BEGIN}' line, then one '{END}' line")
    head, rest = readme.split(BEGIN + "\n", 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{markdown_table(table)}{END}{tail}"
