"""The CLI contract: `python -m knowledge_base ask --json` (stdin mode), `species`, `--help`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from knowledge_base.catalog import default_catalog

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, stdin: str | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LLM_BASE_URL": ""}
    return subprocess.run([sys.executable, "-m", "knowledge_base", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=timeout)


def test_ask_reads_one_question_per_stdin_line_and_prints_json_lines():
    catalog = default_catalog()
    if "amanita_phalloides" not in catalog:
        pytest.skip("catalog has no amanita_phalloides yet")
    questions = ["Is the death cap poisonous?", "", "What's the weather tomorrow?", "Is it edible?"]
    proc = run_cli("ask", "--json", "--catalog-only", stdin="\n".join(questions) + "\n")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 3  # the blank line is skipped
    for obj in lines:
        assert {"answer", "species", "verdict", "citations", "abstained"} <= set(obj)  # fields added, none removed
        assert {"more", "language", "first_aid"} <= set(obj)
    death_cap, off_topic, which = lines
    assert death_cap["species"] == "amanita_phalloides"
    assert death_cap["verdict"] == catalog.edibility("amanita_phalloides")
    assert death_cap["abstained"] is False and "poison centre" in death_cap["answer"]
    assert off_topic["abstained"] is True and off_topic["species"] is None
    assert which["abstained"] is True


def test_ask_with_species_from_the_caller():
    catalog = default_catalog()
    if "amanita_muscaria" not in catalog:
        pytest.skip("catalog has no amanita_muscaria yet")
    proc = run_cli("ask", "--species", "amanita_muscaria", "--json", "--catalog-only", "Is", "it", "edible?")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["species"] == "amanita_muscaria" and obj["verdict"] == catalog.edibility("amanita_muscaria")


def test_readable_output_without_json():
    proc = run_cli("ask", "--catalog-only", "What is the capital of France?")
    assert proc.returncode == 0
    assert "mushrooms" in proc.stdout and not proc.stdout.lstrip().startswith("{")


def test_species_lists_and_validates_the_catalog():
    proc = run_cli("species", "--json")
    report = json.loads(proc.stdout)
    assert report["count"] == len(list((ROOT / "knowledge_base" / "catalog").glob("*.yaml"))) - len(report["errors"])
    assert proc.returncode == (1 if report["errors"] else 0)
    wanted = (ROOT / "docs" / "vision_labels_ge2.txt").read_text().split()
    assert set(report["missing_vision_labels"]) == {w for w in wanted if w not in report["species"]}


@pytest.mark.parametrize("args", [(), ("ask",), ("evaluate",), ("species",)])
def test_help_everywhere(args):
    proc = run_cli(*args, "--help")
    assert proc.returncode == 0 and "usage" in proc.stdout.lower()
