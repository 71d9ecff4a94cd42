"""Layers import downward only: nothing below the bot imports it (read from the source tree)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BELOW_THE_BOT = ("config", "vision_model", "knowledge_base", "ingest")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_lower_layer_imports_the_bot():
    offenders = [f"{path.relative_to(ROOT)}: {name}"
                 for package in BELOW_THE_BOT for path in sorted((ROOT / package).rglob("*.py"))
                 for name in imported_modules(path) if name == "bot" or name.startswith("bot.")]
    assert not offenders, offenders


def test_config_imports_no_package_of_the_project():
    project = ("bot", *BELOW_THE_BOT[1:])
    for path in (ROOT / "config").rglob("*.py"):
        assert not [n for n in imported_modules(path) if n.split(".")[0] in project], path
