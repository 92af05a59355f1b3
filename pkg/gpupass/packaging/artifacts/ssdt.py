"""The fake-battery SSDT: ASL rendered from acpi/, compiled by iasl, header checked."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ... import paths
from ...errors import ToolError
from ...model import Model
from .. import aml, tools

TEMPLATE = "ssdt-battery.asl.j2"
ASL_NAME = "ssdt-battery.asl"


def render_asl(model: Model, templates) -> str:
    return templates.render(TEMPLATE, model, acpi=model.acpi, battery=model.battery).decode("utf-8")


def compile_asl(asl: str, name: str = ASL_NAME, what: str = "the battery SSDT") -> bytes:
    """Compile ASL source with iasl; on failure, iasl's own messages (which quote each
    offending ASL line with its number) reach the user, naming the file as shipped."""
    with tempfile.TemporaryDirectory(prefix="gpupass-iasl-") as tmp:
        source = Path(tmp) / name
        source.write_text(asl, encoding="ascii")
        try:
            tools.run("iasl", "-vs", "-p", Path(tmp) / "ssdt", source, cwd=Path(tmp), what=f"compiling {what}")
        except ToolError as e:
            lines = [line.replace(str(source), name) for line in e.problems]
            raise ToolError(lines, hint=f"the rendered ASL is in the package as {paths.SHARE}/{name}") from None
        return (Path(tmp) / "ssdt.aml").read_bytes()


def render(model: Model, templates) -> dict[str, bytes]:
    asl = render_asl(model, templates)
    data = compile_asl(asl)
    aml.check(data, model.acpi.oem_id, model.acpi.oem_table_id, model.acpi.oem_revision)
    share = str(paths.SHARE).lstrip("/")
    return {f"{share}/{ASL_NAME}": asl.encode("ascii"), str(paths.INSTALLED_AML).lstrip("/"): data}
