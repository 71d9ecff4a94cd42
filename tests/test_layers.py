"""Layers import downward only, and no two files import each other, even through others (read from the
source tree: every import statement counts, the ones inside functions too).

    bot                      front doors: the core and its adapters
    ingest   vision_model    building the index | the photo model
    knowledge_base           species facts, vector store, retrieval, answers
    config                   settings read from the environment
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"config": 0, "knowledge_base": 1, "ingest": 2, "vision_model": 2, "bot": 3}


def module_files() -> dict[str, Path]:
    out = {}
    for package in LAYER:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports (`from a import b` counts as a.b when b is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this file's package
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != name}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_packages_import_only_lower_layers():
    offenders = [f"{a} -> {b}" for a, deps in import_graph().items() for b in deps
                 if a.split(".")[0] != b.split(".")[0] and LAYER[b.split(".")[0]] >= LAYER[a.split(".")[0]]]
    assert not offenders, offenders


def test_no_import_cycle_between_files():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_graph_sees_real_imports():
    """Guards the two tests above against reading nothing: known edges are found."""
    graph = import_graph()
    assert "knowledge_base.catalog" in graph["ingest.pipeline"]
    assert "knowledge_base.answer_types" in graph["knowledge_base.llm"]
    assert "bot.core" in graph["bot.telegram_adapter"]
