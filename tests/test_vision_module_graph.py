"""The vision_model modules import each other without a cycle (read from the source, lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vision_model"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The sibling modules a module imports: absolute or relative, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "vision_model" if node.level else (node.module or "")
            if node.level and node.module:
                base = f"vision_model.{node.module}"
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "vision_model" and len(parts) > 1 and parts[1] in modules:
                found.add(parts[1])
    return found - {path.stem}


def module_graph() -> dict[str, set[str]]:
    paths = {path.stem: path for path in PACKAGE.glob("*.py")}
    return {name: imports_of(path, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        for dep in sorted(graph[name]):
            if dep in path:
                return [*path[path.index(dep) :], dep]
            if dep not in done:
                cycle = visit(dep, [*path, dep])
                if cycle:
                    return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [name])
        if cycle:
            return cycle
    return None


def test_the_reader_sees_relative_and_lazy_imports(tmp_path):
    source = tmp_path / "example.py"
    source.write_text(
        "from . import calibrate\nfrom .data import load_splits\nimport vision_model.cli\n"
        "def later():\n    from vision_model.metrics import nll\n    from vision_model import heldout\n"
    )
    modules = {"calibrate", "data", "cli", "metrics", "heldout", "train"}
    assert imports_of(source, modules) == modules - {"train"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_vision_model_has_no_import_cycle():
    graph = module_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_metrics_and_the_command_line_helpers_depend_on_no_pipeline_module():
    graph = module_graph()
    pipeline = {"train", "calibrate", "evaluate", "export", "soup"}
    assert not graph["metrics"] & pipeline and not graph["cli"] & pipeline and not graph["heldout"] & pipeline
    assert "calibrate" not in graph["evaluate"]  # the measures evaluate shares live in metrics / heldout
