"""docs/TRAINING.md: every command of its `bash` blocks runs as written, in order.

The commands run in-process through `python -m vision_model`'s entry point, in a scratch folder
(their relative paths - var/runs/..., reports/... - land there), with a tiny backbone and a tiny
recipe appended: all of them on a tiny photo folder, and the one command (the first block) once
more on the real photos of ../shared where they are present (about a minute on 2 cores).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import vision_support
from vision_support import vision_caches_outside_the_checkout  # noqa: F401 - autouse

from vision_model import cli
from vision_model.release import BUNDLED_MODEL_DIR

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "TRAINING.md"
TINY_RECIPE = [
    *("--num_hidden_layers", "2", "--frozen_layers", "1", "--augmented_views", "1"),
    *("--epochs", "2", "--average_last", "1", "--batch_size", "4"),
]


def documented_blocks(text: str) -> list[list[list[str]]]:
    """Each bash block's commands, in order: the arguments after `python -m vision_model`."""
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        commands = []
        for line in block.replace("\\\n", " ").splitlines():
            for step in line.split("&&"):
                argv = shlex.split(step, comments=True)
                if argv:
                    assert argv[:3] == ["python", "-m", "vision_model"], f"not a vision_model command: {step}"
                    commands.append(argv[3:])
        blocks.append(commands)
    return blocks


def tiny_flags(command: str, scratch: Path, data_dir: Path | None) -> list[str]:
    """What a documented command gets appended: the tiny backbone and recipe, scratch outputs."""
    # None: the documented default, the real photos: decoded once, for the centre view only (not
    # also at the scan, nor for augmented views), in batches of 64 - to keep the run near a minute.
    data = ["--data_dir", str(data_dir)] if data_dir else []
    scan = [] if data_dir else ["--no-verify_images", "--augmented_views", "0", "--batch_size", "64"]
    return {
        "train": [*data, "--backbone", str(scratch / "backbone"), *TINY_RECIPE, *scan],
        "calibrate": [*data, "--synthetic_images", "4"],
        "evaluate": [*data, "--synthetic_images", "4"],
        "export": ["--release_dir", str(scratch / "release")]
        + ([] if data_dir is None else ["--manifest", str(scratch / "no-manifest.csv")]),
        "soup": [],
        "imprint": data,
    }[command]


def checkout_outputs() -> dict[str, int]:
    """What the vision commands could write in the checkout: the release, runs, caches, reports."""
    paths = [*BUNDLED_MODEL_DIR.rglob("*"), *(ROOT / "var" / "runs").rglob("*")]
    paths += [*(ROOT / "var" / "cache").glob("vision-*/**/*"), *(ROOT / "reports").glob("vision*/**/*")]
    return {str(p): p.stat().st_mtime_ns for p in paths if p.is_file()}


def run_the_documented_commands(
    scratch: Path, data_dir: Path | None, monkeypatch, blocks: list[list[list[str]]]
) -> list[str]:
    from vision_model.__main__ import main

    vision_support.tiny_backbone(scratch / "backbone")
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = checkout_outputs()
    ran = []
    for argv in (argv for block in blocks for argv in block):
        assert main([*argv, *tiny_flags(argv[0], scratch, data_dir)]) == 0, argv
        ran.append(argv[0])
    assert checkout_outputs() == before  # nothing written in the checkout, the bundled release included
    return ran


def test_the_bash_blocks_hold_the_whole_pipeline():
    blocks = documented_blocks(DOC.read_text(encoding="utf-8"))
    assert {argv[0] for block in blocks for argv in block} == set(cli.PIPELINE_COMMANDS)
    one_command = blocks[0]
    assert one_command[0] == ["train", "--output_dir", "var/runs/vision", "--bf16"]
    assert one_command[-1][0] == "export"


def test_training_docs_run_as_written_on_tiny_data(tmp_path, monkeypatch, capsys):
    data_dir = vision_support.make_folder(tmp_path / "img", vision_support.TINY_PHOTOS)
    blocks = documented_blocks(DOC.read_text(encoding="utf-8"))
    ran = run_the_documented_commands(tmp_path, data_dir, monkeypatch, blocks)
    assert ran.count("train") == 4 and ran.count("export") == 2
    out = capsys.readouterr().out
    assert "NOT held out" not in out  # evaluate read only photos the refit never learnt from
    card = (tmp_path / "release" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "final fit on all photos (train + validation + test)" in card
    assert (tmp_path / "reports" / "vision" / "metrics.json").is_file()
    assert (tmp_path / "var" / "runs" / "vision-soup" / "safety.json").is_file()


@pytest.mark.shared
@pytest.mark.slow
def test_training_docs_run_as_written_on_the_shared_photos(shared_data, tmp_path, monkeypatch):
    if not cli.DEFAULT_IMAGES.is_dir():
        pytest.skip(f"the documented default --data_dir {cli.DEFAULT_IMAGES} is absent")
    one_command = documented_blocks(DOC.read_text(encoding="utf-8"))[:1]
    run_the_documented_commands(tmp_path, None, monkeypatch, one_command)
    card = (tmp_path / "release" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "field photos of" in card and "Sources (photo count)" in card
