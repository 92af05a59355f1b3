"""The battery SSDT of each shipped model, pinned by its sha256 in tests/aml-checksums.txt,
and the NVPCF SSDT of each that turns guest.nvpcf on (as ``<model id>+nvpcf``).

A change to the ASL template, the model, or iasl that moves an AML byte fails here until
the file is regenerated on purpose (``nox -s tests -- --regenerate``) and the diff reviewed.
The file is in sha256sum's format, with the model id in place of a file name.
"""

from __future__ import annotations

import hashlib

import pytest

from gpupass import model, paths
from gpupass.packaging import render
from gpupass.packaging.artifacts import nvpcf, ssdt

from .conftest import MODELS, ROOT

CHECKSUMS = ROOT / "tests" / "aml-checksums.txt"
AML = str(paths.INSTALLED_AML).lstrip("/")
NVPCF_AML = str(paths.NVPCF_AML).lstrip("/")
HOW = (
    "if the change is intended, regenerate with `nox -s tests -- --regenerate`"
    " and review the diff of tests/aml-checksums.txt"
)


def read_checksums(text: str) -> dict[str, str]:
    """``sha256  <model id>`` lines: {model id: sha256}."""
    return {model_id: digest for digest, model_id in (line.split(None, 1) for line in text.splitlines() if line)}


def format_checksums(checksums: dict[str, str]) -> str:
    return "".join(f"{digest}  {model_id}\n" for model_id, digest in sorted(checksums.items()))


def drift(actual: dict[str, str], recorded: dict[str, str]) -> list[str]:
    """What differs between the models' AML and the recorded checksums, one line each."""
    problems = []
    for model_id in sorted(actual.keys() | recorded.keys()):
        if model_id not in recorded:
            problems.append(f"{model_id}: no checksum in tests/aml-checksums.txt for its AML ({actual[model_id]})")
        elif model_id not in actual:
            problems.append(f"{model_id}: in tests/aml-checksums.txt, but there is no models/{model_id}.toml")
        elif actual[model_id] != recorded[model_id]:
            problems.append(
                f"{model_id}: its AML changed: sha256 {actual[model_id]},"
                f" tests/aml-checksums.txt records {recorded[model_id]}"
            )
    return problems


@pytest.mark.tool
def test_aml_of_every_model_is_as_recorded(regenerate: bool) -> None:
    templates = render.Templates()
    actual = {}
    for path in MODELS:
        m = model.load(path, f"models/{path.name}")
        actual[path.stem] = hashlib.sha256(ssdt.render(m, templates)[AML]).hexdigest()
        if m.nvpcf:  # the experimental NVPCF table, where a model turns it on (none does by default)
            actual[f"{path.stem}+nvpcf"] = hashlib.sha256(nvpcf.render(m, templates)[NVPCF_AML]).hexdigest()
    if regenerate:
        CHECKSUMS.write_text(format_checksums(actual), encoding="ascii")
    recorded = read_checksums(CHECKSUMS.read_text(encoding="ascii")) if CHECKSUMS.exists() else {}
    problems = drift(actual, recorded)
    if problems:
        pytest.fail("\n".join([*problems, HOW]), pytrace=False)


def test_drift_is_reported_per_model() -> None:
    recorded = {"aurora-z": "a" * 64, "gone": "b" * 64}
    actual = {"aurora-z": "c" * 64, "new": "d" * 64}
    assert drift(actual, recorded) == [
        f"aurora-z: its AML changed: sha256 {'c' * 64}, tests/aml-checksums.txt records {'a' * 64}",
        "gone: in tests/aml-checksums.txt, but there is no models/gone.toml",
        f"new: no checksum in tests/aml-checksums.txt for its AML ({'d' * 64})",
    ]
    assert drift(actual, actual) == []


def test_checksum_file_format_round_trips() -> None:
    checksums = {"aurora-z": "0" * 64, "b-model": "f" * 64}
    text = format_checksums(checksums)
    assert text == f"{'0' * 64}  aurora-z\n{'f' * 64}  b-model\n"
    assert read_checksums(text) == checksums
