"""Is my laptop supported? README.md's table of models is what models/*.toml say (rewritten with
``--regenerate``), and ``gpupass models`` prints the same, as text, JSON and Markdown."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gpupass import cli, supported
from gpupass.errors import GpupassError, ModelError
from gpupass.modelfiles import known_models

from .conftest import ROOT

README = ROOT / "README.md"


def table() -> list[supported.Row]:
    return supported.rows(ROOT / "models")


def test_readmes_table_is_what_the_model_files_say(regenerate: bool) -> None:
    expected = supported.with_table(README.read_text(encoding="utf-8"), table())
    if regenerate:
        README.write_text(expected, encoding="utf-8")
    differs = "README.md's models table differs from models/ (run with --regenerate)"
    assert README.read_text(encoding="utf-8") == expected, differs


def test_every_model_is_a_row_with_its_source() -> None:
    rows = {r.id: r for r in table()}
    assert sorted(rows) == known_models()
    assert rows["aurora-z"] == supported.Row(
        "aurora-z", "MECHREVO Aurora Z", "NVIDIA 10de:25a2", True, "read from the laptop itself"
    )
    assert rows["hp-victus-16-navi23"] == supported.Row(
        "hp-victus-16-navi23",
        "HP Victus by HP Laptop 16-e0xxx",
        "AMD 1002:73ff",
        False,
        "layout published at https://github.com/bottlesdevs/programs/issues/248",
    )


def models(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.main(["models", *args]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def test_gpupass_models_prints_the_same_table(capsys: pytest.CaptureFixture[str]) -> None:
    rows = table()
    text = models(capsys)
    assert text.splitlines()[:2] == [
        "id                        laptop                                  GPU               confirmed  source",
        "aurora-z                  MECHREVO Aurora Z                       NVIDIA 10de:25a2  yes        read from the"
        " laptop itself",
    ]
    assert [line.split()[0] for line in text.splitlines()[1:]] == known_models()
    assert json.loads(models(capsys, "--json")) == [
        {"id": r.id, "laptop": r.laptop, "gpu": r.gpu, "confirmed": r.confirmed, "source": r.source} for r in rows
    ]
    markdown = models(capsys, "--markdown")
    assert f"{supported.BEGIN}\n{markdown}{supported.END}\n" in README.read_text(encoding="utf-8")
    assert models(capsys, "--ids") == "".join(f"{m}\n" for m in known_models())


def test_an_unconfirmed_model_must_name_its_source(tmp_path: Path) -> None:
    text = (ROOT / "models" / "hp-victus-16-rtx4060.toml").read_text(encoding="utf-8")
    unsourced = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("# Layout published"))
    (tmp_path / "hp-victus-16-rtx4060.toml").write_text(unsourced, encoding="utf-8")
    shutil.copy(ROOT / "models" / "aurora-z.toml", tmp_path)
    with pytest.raises(ModelError) as raised:
        supported.rows(tmp_path)
    assert raised.value.lines() == [
        "models/hp-victus-16-rtx4060.toml: confirmed = false and no source"
        " (expected a '# Layout published at URL' or '# Source: ...' line)"
    ]


def test_a_source_line_names_where_a_confirmed_models_values_came_from(tmp_path: Path) -> None:
    text = (ROOT / "models" / "hp-victus-16-rtx4060.toml").read_text(encoding="utf-8")
    report = "# Source: gpupass report, issue 31 (a Victus 16-r0xxx owner's laptop)\n"
    confirmed = report + text.replace("confirmed = false", "confirmed = true")
    (tmp_path / "hp-victus-16-rtx4060.toml").write_text(confirmed, encoding="utf-8")
    [row] = supported.rows(tmp_path)
    assert (row.confirmed, row.source) == (True, "gpupass report, issue 31 (a Victus 16-r0xxx owner's laptop)")
    assert supported.markdown_table([row]).splitlines()[2] == (
        "| hp-victus-16-rtx4060 | HP Victus by HP Gaming Laptop 16-r0xxx | NVIDIA 10de:28a0 | yes"
        " | gpupass report, issue 31 (a Victus 16-r0xxx owner's laptop) |"
    )


def test_a_readme_without_the_markers_is_refused() -> None:
    with pytest.raises(GpupassError) as raised:
        supported.with_table("# gpupass\n", table())
    expected = f"README.md: expected one '{supported.BEGIN}' line, then one '{supported.END}' line"
    assert raised.value.lines() == [expected]
