"""Every command in README.md runs as written (from a folder holding the photo it names). The two
first commands (install + console, the tests) and the install without a CPU wheel mirror are CI's own
steps (.ci/run); a synopsis with [optional] parts or a long-running service is run with --help."""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {("bot", "console"), ("bot", "telegram"), ("bot", "discord"), ("bot", "api")}


def bash_commands(markdown: Path) -> list[str]:
    """The commands of the ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown.read_text(encoding="utf-8"), flags=re.S):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = re.sub(r"\s+#.*$", "", command).strip()
            if command:
                commands.append(command)
    return commands


def runnable(command: str) -> list[str] | None:
    """The argv to run for a README command, or None for CI's own steps."""
    if "pip install" in command or "pytest" in command:
        return None
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"], f"README command not of the form `python -m ...`: {command}"
    if (argv[2], argv[3]) in SERVICES or any(a.startswith("[") for a in argv):
        return [sys.executable, "-m", argv[2], argv[3], "--help"]
    return [sys.executable, *argv[1:]]


def test_readme_lists_the_commands_a_newcomer_needs():
    commands = bash_commands(ROOT / "README.md")
    assert commands[0].startswith("python3 -m venv .venv && .venv/bin/pip install -r requirements.txt -e .")
    assert commands[0].endswith(".venv/bin/python -m bot console")
    assert commands[1] == ".venv/bin/python -m pytest"
    assert ".venv/bin/python -m pytest -q" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert sum(runnable(c) is not None for c in commands) >= 7


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """A small index, as the README's first command leaves one (from the test guides, not the real ones)."""
    from config import Settings
    from ingest.pipeline import reingest
    from ingest.testing import tiny_catalog, write_tiny_guides

    root = tmp_path_factory.mktemp("readme-index")
    settings = Settings(CHROMA_PATH=str(root / "chroma"), GUIDES_DIR=str(root / "guides"))
    assert reingest(settings, sources=[write_tiny_guides(root / "guides")], catalog=tiny_catalog()).ok
    return root / "chroma"


@pytest.mark.parametrize("command", [c for c in bash_commands(ROOT / "README.md") if runnable(c)])
def test_readme_command_runs_as_written(command, tmp_path, index):
    rng = np.random.default_rng(0)
    photo = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((160, 120)).save(photo, "JPEG")
    (tmp_path / "chanterelle.jpg").write_bytes(photo.getvalue())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CHROMA_PATH": str(index),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}", "VISION_ONNX_CACHE": str(tmp_path / "onnx"),
           "LLM_BASE_URL": ""}
    proc = subprocess.run(runnable(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip(), command
