"""`python -m vision_model identify` contract, run as a subprocess on a tiny model directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision_model.classifier import ensure_onnx
from vision_model.testing import TINY_IMAGE_SIZE, make_tiny_model_dir

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env_extra: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "vision_model", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    model = make_tiny_model_dir(base / "model")
    photos = []
    for i in range(3):
        rng = np.random.default_rng(i)
        img = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((90, 70))
        path = base / f"photo{i}.jpg"
        img.save(path, "JPEG")
        photos.append(str(path))
    broken = base / "broken.jpg"
    broken.write_text("this is not a photo", encoding="utf-8")
    env = {"VISION_ONNX_CACHE": str(base / "onnx")}
    # Export once here, so the CLI runs below find the cached graph (as a deployed bot does).
    ensure_onnx(model, (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), base / "onnx")
    return model, photos, str(broken), env


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("command", [[], ["identify"]])
def test_help_without_heavy_imports(command):
    result = run_cli(*command, "--help", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_cli_parser_does_not_import_torch():
    code = (
        "import sys; from vision_model.__main__ import build_parser; build_parser(); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["train", "evaluate", "calibrate", "export", "soup"])
def test_pipeline_subcommand_help(command, capsys):
    """In-process (these import torch anyway): --help lists the options of the command's arguments."""
    from vision_model.__main__ import main

    with pytest.raises(SystemExit) as exit_status:  # argparse exits after printing the help
        main([command, "--help"])
    assert exit_status.value.code == 0
    assert f"usage: python -m vision_model {command}" in capsys.readouterr().out


def test_top_level_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("identify", "train", "evaluate", "export"):
        assert command in result.stdout


def test_json_line_per_image_and_error_line_for_unreadable(setup):
    model, photos, broken, env = setup
    result = run_cli("identify", "--model", str(model), "--json", photos[0], broken, photos[1], env_extra=env)
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["image"] for line in lines] == [photos[0], broken, photos[1]]  # order kept
    assert set(lines[1]) == {"image", "error"} and "photo" in lines[1]["error"]
    for line in (lines[0], lines[2]):
        assert {"image", "top_k", "verdict", "abstained"} <= set(line)
        assert 1 <= len(line["top_k"]) <= 5
        assert all(set(p) == {"label", "probability"} for p in line["top_k"])
        assert line["verdict"] in {
            "deadly",
            "poisonous",
            "inedible",
            "edible_with_caution",
            "edible",
            "unknown",
        }
        assert isinstance(line["abstained"], bool)


def test_identify_with_a_cached_graph_does_not_import_torch(setup):
    """Start-up cost: with the ONNX graph cached, identify needs neither torch nor transformers."""
    model, photos, _, env = setup
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "vision_model",
            "identify",
            "--model",
            str(model),
            "--json",
            photos[0],
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "openvino" in imported  # auto: the cached graph in OpenVINO
    assert "torch" not in imported and "transformers" not in imported


def test_observation_gives_one_line(setup):
    model, photos, broken, env = setup
    result = run_cli(
        "identify", "--model", str(model), "--observation", "--json", *photos, broken, env_extra=env
    )
    assert result.returncode == 0, result.stderr
    (line,) = json_lines(result.stdout)
    assert line["image"] == photos
    assert line["skipped"] == [{"image": broken, "error": line["skipped"][0]["error"]}]
    assert line["top_k"] and isinstance(line["abstained"], bool)


def test_all_unreadable_exits_1(setup):
    model, _, broken, env = setup
    result = run_cli("identify", "--model", str(model), "--json", broken, env_extra=env)
    assert result.returncode == 1
    assert "error" in json_lines(result.stdout)[0]


def test_readable_summary_without_json(setup):
    model, photos, broken, env = setup
    result = run_cli("identify", "--model", str(model), photos[0], broken, env_extra=env)
    assert result.returncode == 0, result.stderr
    assert "verdict:" in result.stdout and "error:" in result.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout.splitlines()[0])


def test_missing_model_exits_3(setup, tmp_path):
    _, photos, _, env = setup
    result = run_cli("identify", "--model", str(tmp_path / "no-model"), "--json", photos[0], env_extra=env)
    assert result.returncode == 3
    assert "No vision model" in result.stderr


def test_no_images_is_a_usage_error():
    result = run_cli("identify", "--json")
    assert result.returncode == 2
