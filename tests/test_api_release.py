"""The API with the real bundled model, loaded the way production loads it (skips until the
release exists in vision_model/release)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from api_support import api_settings, files, photo_bytes
from fastapi.testclient import TestClient

from bot.api import create_app
from knowledge_base.catalog import VERDICTS
from vision_model.release import BUNDLED_MODEL_DIR

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
IMAGES = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data")) / "images"

pytestmark = pytest.mark.skipif(
    not (BUNDLED_MODEL_DIR / "config.json").is_file(), reason="no bundled model in vision_model/release yet"
)


def test_bundled_model_served_end_to_end(tmp_path):
    from knowledge_base.answer import Answerer

    # MODEL_DIR unset: the app loads the bundled release itself, in its background thread.
    app = create_app(api_settings(tmp_path), answerer=Answerer(None))
    with TestClient(app) as client:
        components = app.state.engine
        assert components.wait_ready(300, "model"), components.errors
        assert client.get("/readyz").status_code == 200

        # A generated photo, plus two real fly agarics when the shared data is here.
        photos = [photo_bytes(31, size=(320, 256))]
        photos += [path.read_bytes() for path in sorted(IMAGES.glob("amanita_muscaria/*.jpg"))[:2]]
        response = client.post("/v1/identify", files=files(*photos))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["verdict"] in VERDICTS
        assert body["model_version"] == components.classifier.version
        assert len(body["top_k"]) == min(5, len(components.classifier.labels))
        assert body["top_k"] == components.classifier.identify(photos).to_dict()["top_k"]
