"""Imports flow one way: no module of the repository imports, at module level or inside a function,
one that imports it back (directly or through others)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = [path.parent for path in REPO.glob("*/__init__.py") if path.parent.name not in ("tests", "benchmarks")]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The repository's modules that ``path`` imports anywhere in its code."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known  # `from . import functional`
            found.update(submodules or {base})
    # A package's __init__ runs before any of its modules: an import of an enclosing package is
    # not an edge back.
    return {module for module in found if module in known and not (name + ".").startswith(module + ".")}


def graph() -> dict[str, set[str]]:
    files = [path for package in PACKAGES for path in package.rglob("*.py")]
    known = {module_name(path) for path in files}
    return {module_name(path): imports_of(path, known) for path in files}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read():
    edges = graph()
    assert "models.functional" in edges["models.layers"]  # `from . import functional`
    assert "models.kv_cache" in edges["models.generation"]
    assert "download" in edges["models.loading"]


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)
