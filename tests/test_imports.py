"""Imports point down: no circle among gpupass's modules, and the laptop side's areas are folders.

A circle means a fact two rooms need lives in one of them; the fix is to move it below both
(style.md, lesson 18). Every import counts, including those inside functions: a lazy import
hides a circle from Python at start-up, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pkg"
MAX_LINES = 500


def module_name(path: Path, top: Path) -> str:
    parts = list(path.relative_to(top).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(top: Path) -> dict[str, set[str]]:
    """For each module of the packages under ``top``, the project modules it imports."""
    modules = {module_name(p, top): p for p in sorted(top.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from package import module` imports the module; `from module import name` the module.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            else:
                continue
            for target in targets:
                # `import a.b.c` runs a, a.b and a.b.c; only the deepest module that exists matters here.
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe(graph: dict[str, set[str]], component: list[str]) -> str:
    """One path round the circle from its first module, e.g. 'a -> b -> a'."""
    members, start = set(component), component[0]

    def walk(path: list[str]) -> list[str] | None:
        for nxt in sorted(graph[path[-1]] & members):
            if nxt == start:
                return [*path, nxt]
            if nxt not in path and (found := walk([*path, nxt])):
                return found
        return None

    return " -> ".join(walk([start]) or [start])


def test_no_import_circles() -> None:
    graph = import_graph(PKG)
    assert "gpupass.laptop.machine" in graph and "gpupass.laptop.machine" in graph["gpupass.laptop.preflight"]
    assert [describe(graph, c) for c in circles(graph)] == []


def test_a_circle_is_found(tmp_path: Path) -> None:
    """The checker sees a circle through a relative import inside a function, two packages deep."""
    pkg = tmp_path / "proj"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("from .b import thing\n")
    (pkg / "low" / "b.py").write_text("def f():\n    from ..high import user\n")
    (pkg / "high.py").write_text("from .low import a\n")
    graph = import_graph(tmp_path)
    assert circles(graph) == [["proj.high", "proj.low.a", "proj.low.b"]]
    assert describe(graph, circles(graph)[0]) == "proj.high -> proj.low.a -> proj.low.b -> proj.high"


# The laptop side's areas, as folders a reader sees in the tree.
AREAS = {"rom", "vm", "gpu", "mode", "power", "doctor", "onboarding"}


def test_the_laptop_side_is_grouped_by_area() -> None:
    laptop = PKG / "gpupass" / "laptop"
    folders = {p.parent.name for p in laptop.glob("*/__init__.py")}
    assert folders == AREAS
    # Below the areas, only what several of them share: the tool wrapper, the machine snapshot,
    # the pre-flight checks (also the preinst's), the command-line options, the atomic writer.
    assert sorted(p.name for p in laptop.glob("*.py")) == [
        "__init__.py", "command.py", "files.py", "machine.py", "options.py", "preflight.py",
    ]  # fmt: skip
    # Each area that has commands registers them itself; cli.py only assembles.
    cli = (PKG / "gpupass" / "cli.py").read_text(encoding="utf-8")
    for area in ("rom", "vm", "power", "doctor", "onboarding", "gpu", "mode"):
        assert (laptop / area / "commands.py").is_file()
        assert f"from .laptop.{area} import commands" in cli


def test_the_shared_modules_import_no_area() -> None:
    """The machine snapshot, the tool wrapper, the pre-flight checks, the options and the atomic
    writer are below every area."""
    graph = import_graph(PKG)
    for base in ("machine", "command", "preflight", "options", "files"):
        above = {m for m in graph[f"gpupass.laptop.{base}"] if m.startswith("gpupass.laptop.")}
        assert above <= {"gpupass.laptop.machine"}, (base, above)


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_no_module_outgrows_a_room(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines, over {MAX_LINES}: split it by what it holds"
