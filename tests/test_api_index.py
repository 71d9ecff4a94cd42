"""The API with a tiny real Chroma index built by the ingest pipeline: not ready without an
index, ready once one is built (as when the re-ingest Job finishes after the pods start), and
following a later re-ingest to the new version."""

from __future__ import annotations

import os
import time

import pytest
from api_support import api_settings, files, photo_bytes
from fastapi.testclient import TestClient

import bot.engine
from bot.api import create_app

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GUIDE = (
    "=Amanita muscaria= Linn. =Poisonous.=--The fly amanita has a bright red cap covered with white "
    "warts. It grows in woods and is very common in autumn.\n\n"
    "=Boletus edulis= Bull. =Edible.=--The edible boletus has a brown cap, white tubes becoming "
    "greenish yellow, and a stout stem marked with a fine network.\n"
)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from vision_model.classifier import Classifier
    from vision_model.testing import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))
    return Classifier.load(model_dir, cache_dir=tmp_path_factory.mktemp("onnx"))


def wait_for(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_ready_once_the_index_is_built_and_follows_reingest(tmp_path, classifier, monkeypatch):
    from ingest.pipeline import reingest
    from knowledge_base.catalog import default_catalog

    monkeypatch.setattr(bot.engine, "LOAD_RETRY_SECONDS", 0.1)
    monkeypatch.setattr(bot.engine, "MAX_LOAD_RETRY_SECONDS", 0.2)
    monkeypatch.setattr(bot.engine, "INDEX_CHECK_S", 0.2)
    guides = tmp_path / "guides"
    guides.mkdir()
    (guides / "guide.txt").write_text(GUIDE, encoding="utf-8")
    settings = api_settings(tmp_path, GUIDES_DIR=str(guides))

    def build(force: bool = False):
        report = reingest(settings, sources=[guides], catalog=default_catalog(), include_catalog=False, force=force)
        assert report.status == "built", report

    app = create_app(settings, classifier=classifier)
    with TestClient(app) as client:
        components = app.state.engine
        # No index yet: photos work, questions get catalog-only answers, not ready.
        assert wait_for(lambda: components.answerer is not None)
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503 and "index" in not_ready.json()["detail"]
        assert client.post("/v1/identify", files=files(photo_bytes(41))).status_code == 200
        assert client.post("/v1/ask", json={"question": "Is the fly agaric edible?"}).status_code == 200

        build()
        assert wait_for(lambda: components.ready), components.errors
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["index_version"] == 1
        answer = client.post("/v1/ask", json={"question": "Is the fly agaric edible?"}).json()
        assert answer["verdict"] == "poisonous"
        assert 'mushroom_api_index_info{built_at=' in client.get("/metrics").text

        # A re-ingest switches the alias; the running API moves to the new version by itself.
        build(force=True)
        assert wait_for(lambda: components.index_info.get("version") == 2), components.index_info
        assert client.get("/readyz").json()["index_version"] == 2
        assert 'version="2"' in client.get("/metrics").text
