"""The model registry and serving from it (issue 28): two tiny models trained and registered, the better one
promoted by the release rule while an API following `models:/<name>@champion` keeps answering a stream of
identify requests, a model that breaks the rule refused with the figure that failed, and a rollback that the
running API follows back."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from api_support import free_port, wait_until_serving
from vision_support import (  # noqa: F401 - vision_caches_outside_the_checkout is autouse
    TINY_PHOTOS,
    make_folder,
    tiny_backbone,
    vision_caches_outside_the_checkout,
)

from vision_model.release_rule import Figures, release_rule


def figures(main=0.9, rare=0.6, dangerous=0, open_set=0, photo_set="ds-1") -> Figures:
    return Figures(main, rare, dangerous, open_set, 100, photo_set)


def test_the_release_rule_names_every_figure_that_failed():
    champion = figures()
    assert release_rule(figures(main=0.91, rare=0.6), champion) == []
    assert release_rule(figures(), None) == []  # the first champion: the safety checks alone
    reasons = release_rule(figures(main=0.89, rare=0.5, dangerous=1, open_set=2), champion)
    assert len(reasons) == 4
    assert "1 dangerous error(s)" in reasons[0] and "open set: 2" in reasons[1]
    assert "main-class top-1 0.890 is lower than the champion's 0.900" in reasons[2]
    assert "rare-species top-1 0.500 is lower than the champion's 0.600" in reasons[3]
    assert release_rule(figures(dangerous=1), None) != []  # unsafe is refused even with no champion
    assert "different photos" in release_rule(figures(photo_set="ds-2"), champion)[0]
    assert release_rule(figures(main=None), figures(main=None)) == []  # no main-class photos in the set


@pytest.fixture
def registry_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    monkeypatch.setenv("VISION_TRACKING", "on")
    monkeypatch.setenv("VISION_REGISTERED_MODEL", "mushroom-vision-test")
    return tmp_path


def train_tiny(tmp: Path, data: Path, name: str, **overrides) -> Path:
    from vision_model import train

    args = dict(
        data_dir=[str(data)], backbone=str(tiny_backbone(tmp / "backbone")), output_dir=str(tmp / name),
        num_hidden_layers=2, frozen_layers=1, augmented_views=1, epochs=6, average_last=1, batch_size=4,
        learning_rate=1e-3, head_learning_rate=3e-2, cache_dir=str(tmp / "cache"), save_fp16=False,
        version=name, synthetic_images=8,
    )  # fmt: skip
    args.update(overrides)
    known = {f for f in train.TrainArguments.__dataclass_fields__}
    return train.main(train.TrainArguments(**{k: v for k, v in args.items() if k in known}))


def register_and_promote(tmp: Path, data: Path, name: str) -> None:
    """A tiny model trained, registered and promoted: the first champion of a fresh registry."""
    from vision_model.__main__ import main as vision_main

    assert vision_main(["register", "--model", str(train_tiny(tmp, data, name, epochs=2))]) == 0
    assert vision_main(["promote", "--data", str(data), "--synthetic_images", "4", "--out", str(tmp / "p")]) == 0


def follower(tmp: Path, **settings):
    """A local engine following the champion of the test registry, its model loaded."""
    from bot.engine import Engine
    from bot.settings import Settings

    engine = Engine.local(Settings(_env_file=None, MODEL_URI="models:/mushroom-vision-test@champion",
                                   CHROMA_PATH=str(tmp / "chroma"), **settings))
    engine.load_classifier()
    return engine


def evaluate_tiny(model: Path, data: Path, out: Path) -> Path:
    from vision_model import evaluate

    evaluate.main(evaluate.EvaluateArguments(model=str(model), data_dir=[str(data)], out=str(out),
                                             synthetic_images=8))
    return out


def test_register_promote_hot_swap_refuse_and_roll_back_under_load(registry_env, capsys):
    from bot_support import make_core  # noqa: F401 - sets HF_HUB_OFFLINE like the other bot tests
    from fastapi.testclient import TestClient

    from bot.api import create_app
    from knowledge_base.answer import Answerer
    from knowledge_base.catalog import default_catalog
    from vision_model import registry
    from vision_model.__main__ import main as vision_main

    tmp = registry_env
    data = make_folder(tmp / "img", TINY_PHOTOS)
    # A model that learnt nothing (zero rates: a zero head, every photo a uniform guess) and one that did.
    weak = train_tiny(tmp, data, "weak", learning_rate=0.0, head_learning_rate=0.0, head_init="fresh")
    good = train_tiny(tmp, data, "good")
    assert vision_main(["register", "--model", str(weak)]) == 0
    assert vision_main(["register", "--model", str(good), "--report", str(evaluate_tiny(good, data, tmp / "rep"))]) == 0
    held_out = ["--data", str(data), "--synthetic_images", "8", "--out", str(tmp / "promotion")]
    assert vision_main(["promote", "--model", "1", *held_out]) == 0  # the first champion: safety checks only
    assert "the first champion" in capsys.readouterr().out

    from api_support import api_settings, files, photo_bytes

    settings = api_settings(tmp, MODEL_URI="models:/mushroom-vision-test@champion", MODEL_CHECK_S=0.2,
                            PREDICTION_LOG=str(tmp / "predictions.jsonl"))
    app = create_app(settings, answerer=Answerer(None, default_catalog()))
    seen, failures, stop = [], [], threading.Event()
    with TestClient(app) as client:
        for _ in range(300):
            if client.get("/healthz").json()["model_version"]:
                break
            time.sleep(0.1)
        assert client.get("/healthz").json() == {"status": "ok", "model_version": "weak",
                                                 "model_source": "models:/mushroom-vision-test@champion (version 1)"}

        def stream() -> None:  # identify requests, one after the other, all through the swaps
            i = 0
            while not stop.is_set():
                response = client.post("/v1/identify", files=files(photo_bytes(i)))
                i += 1
                if response.status_code != 200:
                    failures.append((response.status_code, response.text))
                else:
                    version = response.json()["model_version"]
                    if not seen or seen[-1] != version:
                        seen.append(version)

        def wait_for(version: str) -> None:
            for _ in range(300):
                if client.get("/healthz").json()["model_version"] == version:
                    return
                time.sleep(0.1)
            raise AssertionError(f"the API never moved to {version}")

        streamer = threading.Thread(target=stream)
        streamer.start()
        try:
            assert vision_main(["promote", *held_out]) == 0  # latest = version 2, the better one
            promoted = capsys.readouterr().out
            assert "promoted version 2 to champion" in promoted and "was version 1" in promoted
            wait_for("good")
            assert client.get("/readyz").json()["model_source"].endswith("(version 2)")
            # The weak model again: the rule refuses it, and says why.
            assert vision_main(["promote", "--model", "1", *held_out]) == 1
            refusal = capsys.readouterr().err
            assert "promote refused: version 1" in refusal and "rare-species top-1" in refusal
            assert "lower than the champion's" in refusal
            time.sleep(0.5)
            assert client.get("/healthz").json()["model_version"] == "good"
            # Rollback: the running API follows the alias back.
            assert vision_main(["rollback"]) == 0
            assert "from version 2 to version 1" in capsys.readouterr().out
            wait_for("weak")
            time.sleep(0.3)
        finally:
            stop.set()
            streamer.join(timeout=60)
        metrics = client.get("/metrics").text
    assert failures == []
    assert seen[0] == "weak" and "good" in seen and seen[-1] == "weak"
    assert 'mushroom_api_predictions_total{model_version="good"' in metrics
    assert 'mushroom_api_predictions_total{model_version="weak"' in metrics
    assert vision_main(["rollback"]) == 1  # nothing before version 1
    assert "no earlier champion" in capsys.readouterr().err
    assert json.loads(registry.champion_version("models:/mushroom-vision-test@champion")) == 1

    # The recorded stream against the promoted model's evaluation (promote wrote both models' reports).
    status = vision_main(["monitor", "--predictions", str(tmp / "predictions.jsonl"),
                          "--report", str(tmp / "promotion" / "version-2"), "--out", str(tmp / "monitor")])
    report = json.loads((tmp / "monitor" / "report.json").read_text())
    assert report["model_version"] == "good" and report["predictions"] > 0
    assert report["reference_photos"] == 4 and report["top1_probability"]["ks_p_value"] is not None
    logged = [json.loads(line) for line in (tmp / "predictions.jsonl").read_text().splitlines()]
    assert {row["model_version"] for row in logged} == {"weak", "good"} and all(len(r["embedding"]) == 16 for r in logged)
    assert not any("user" in row or "photo" in row for row in logged)  # no user, no photo: outputs only
    assert status == (1 if report["alerts"] else 0)
    assert all((tmp / "monitor" / name).stat().st_size > 1000 for name in ("confidence.png", "verdicts.png"))
    assert "Model good" in (tmp / "monitor" / "report.html").read_text()


def test_monitor_flags_a_shift_and_stays_quiet_without_one(tmp_path):
    import numpy as np

    from vision_model.monitor import compare

    rng = np.random.default_rng(0)
    reference = {"model_version": "m", "top1_probability": rng.beta(8, 2, 400).tolist(),
                 "verdicts": ["edible"] * 300 + ["deadly"] * 100, "abstention_rate": 0.05}

    reference["embeddings"] = rng.normal(0, 1, (400, 16)).tolist()

    def stream(a, b, abstain, shift=0.0):
        return [{"model_version": "m", "top_k": [["x", float(p)]], "verdict": "edible", "abstained": i < abstain,
                 "embedding": (rng.normal(0, 1, 16) + shift).tolist()} for i, p in enumerate(rng.beta(a, b, 400))]

    same = compare(stream(8, 2, 20), reference)
    assert same["alerts"] == [] and 0.35 < same["embedding_drift_auc"] < 0.65
    shifted = compare(stream(2, 3, 150, shift=1.0), reference)
    assert len(shifted["alerts"]) == 4 and shifted["top1_probability"]["psi"] > 0.25
    assert shifted["embedding_drift_auc"] > 0.9 and "embeddings" in shifted["alerts"][-1]


def test_a_model_that_fails_to_load_leaves_the_old_one_serving(registry_env, tmp_path):
    from vision_model import registry
    from vision_model.__main__ import main as vision_main

    data = make_folder(tmp_path / "img", TINY_PHOTOS)
    register_and_promote(tmp_path, data, "good")
    engine = follower(tmp_path)
    assert engine.model_version == "good" and engine.model_registry_version == "1"
    # A broken version: registered, its weights damaged, and moved to champion by hand (as a careless operator
    # could, past the rule): the engine's load or smoke check fails, and version 1 keeps serving.
    assert vision_main(["register", "--model", str(tmp_path / "good" / "model")]) == 0  # version 2
    client = registry._client()
    client.set_registered_model_alias("mushroom-vision-test", "champion", "2")
    target = registry.download("mushroom-vision-test", "2")
    (target / "model.safetensors").write_bytes(b"not weights")
    engine.follow_model(now=True)
    assert engine.model_version == "good" and engine.model_registry_version == "1"  # still serving version 1
    assert "model_update" in engine.errors
    engine.close()


def test_the_compose_mlflow_server_serves_the_registry_to_the_engine(registry_env, tmp_path, monkeypatch):
    """The MLflow server exactly as docker/compose.yaml starts it (its arguments, on loopback and a free port):
    a model registered and promoted through it (artifacts uploaded through the server) is what an engine
    following models:/...@champion over HTTP serves."""
    import os
    import subprocess
    import sys

    import yaml


    compose = yaml.safe_load((Path(__file__).resolve().parent.parent / "docker" / "compose.yaml").read_text())
    command = compose["services"]["mlflow"]["command"]
    port = free_port()
    swap = {"0.0.0.0": "127.0.0.1", "5000": str(port), "sqlite:////app/var/mlflow/mlflow.db":
            f"sqlite:///{tmp_path / 'server' / 'mlflow.db'}", "/app/var/mlflow/artifacts": str(tmp_path / "server" / "artifacts")}
    argv = [swap.get(a, a) for a in command]
    (tmp_path / "server").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", *argv[1:]], cwd=tmp_path / "server", env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{url}/health", server)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        register_and_promote(tmp_path, make_folder(tmp_path / "img", TINY_PHOTOS), "served")
        engine = follower(tmp_path)
        assert (engine.model_version, engine.model_registry_version) == ("served", "1")
        engine.close()
        assert not (tmp_path / "mlruns").exists() and (tmp_path / "server" / "artifacts").is_dir()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_with_no_champion_yet_the_engine_serves_the_bundled_release_and_swaps_one_in_later(registry_env, tmp_path):
    from vision_model.release import bundled_model_available

    if not bundled_model_available():
        pytest.skip("the bundled release is not in this checkout")
    import asyncio

    from api_support import photo_bytes

    # A lazy engine, as the chat bots hold: no loader thread; photos coming in make it look.
    engine = follower(tmp_path, MODEL_CHECK_S=0.1)  # nothing registered: the bundled release meanwhile
    assert engine.model_version and engine.model_registry_version is None
    register_and_promote(tmp_path, make_folder(tmp_path / "img", TINY_PHOTOS), "first")

    async def photos_until_swapped() -> list[str]:
        versions = []
        for i in range(100):
            result, _ = await engine.identify([photo_bytes(i)])
            versions.append(result.model_version)
            if engine.model_registry_version == "1":
                break
            await asyncio.sleep(0.1)
        return versions

    versions = asyncio.run(photos_until_swapped())
    assert versions[0] != "first" and engine.model_version == "first"  # each photo answered meanwhile
    engine.close()
