"""The HTTP API (bot.api) end to end with a tiny real model and the catalog-only answerer."""

from __future__ import annotations

import os

import pytest
from api_support import api_settings, bomb_png, files, photo_bytes
from fastapi.testclient import TestClient

from bot.api import create_app, main, max_request_bytes

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from vision_model.testing import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def classifier(tiny_model_dir, tmp_path_factory):
    from vision_model.classifier import Classifier

    return Classifier.load(tiny_model_dir, cache_dir=tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def answerer():
    from knowledge_base.answer import Answerer

    return Answerer(None)  # catalog-only: real answers, no index needed


@pytest.fixture
def make_client(tmp_path, classifier, answerer):
    clients = []

    def build(**env) -> TestClient:
        app = create_app(api_settings(tmp_path, **env), classifier=classifier, answerer=answerer)
        client = TestClient(app)
        client.__enter__()  # runs the lifespan
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


# --- identify ---------------------------------------------------------------------------


def test_identify_one_photo_matches_the_local_classifier(client, classifier):
    photo = photo_bytes(1)
    response = client.post("/v1/identify", files=files(photo))
    assert response.status_code == 200
    body = response.json()
    local = classifier.identify([photo]).to_dict()
    assert body["top_k"] == local["top_k"]
    assert body["verdict"] == local["verdict"]
    assert body["abstained"] == local["abstained"]
    assert body["model_version"] == classifier.version
    assert body["n_images"] == 1


def test_identify_several_photos_is_one_observation(client, classifier):
    photos = [photo_bytes(seed) for seed in (2, 3, 4)]
    response = client.post("/v1/identify", files=files(*photos))
    assert response.status_code == 200
    body = response.json()
    assert body["n_images"] == 3
    assert len(body["image"]) == 3
    assert body["top_k"] == classifier.identify(photos).to_dict()["top_k"]


def test_identify_each_gives_one_result_per_photo(client, classifier):
    photos = [photo_bytes(seed) for seed in (5, 6)]
    response = client.post("/v1/identify/each", files=files(*photos))
    assert response.status_code == 200
    results = response.json()["results"]
    expected = classifier.identify_each(photos)
    assert [r["top_k"] for r in results] == [e.to_dict()["top_k"] for e in expected]
    assert [r["verdict"] for r in results] == [e.verdict for e in expected]


# --- ask --------------------------------------------------------------------------------


def test_ask_returns_the_knowledge_base_answer(client, answerer):
    response = client.post("/v1/ask", json={"question": "Is the fly agaric edible?", "species": None})
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"answer", "species", "verdict", "citations", "abstained"}
    assert body == answerer.ask("Is the fly agaric edible?").to_dict()


def test_ask_about_a_given_species(client, answerer):
    response = client.post("/v1/ask", json={"question": "Can I eat it?", "species": "amanita_phalloides"})
    assert response.status_code == 200
    assert response.json() == answerer.ask("Can I eat it?", "amanita_phalloides").to_dict()
    assert response.json()["verdict"] != "edible"


def test_ask_about_an_identification_follows_its_verdict(client, answerer):
    """The same story as the chat front doors: the photo's verdict and its dangerous candidates."""
    photo = {"top": "amanita_vaginata", "probability": 0.86, "verdict": "unknown", "abstained": False,
             "dangerous": [["amanita_phalloides", 0.02], ["amanita_virosa", 0.01]]}
    response = client.post("/v1/ask", json={"question": "can I eat it?", "photo": photo})
    assert response.status_code == 200
    body = response.json()
    assert body["answer"].startswith("No - do not eat it.") and body["topic"] == "photo"
    assert "Amanita phalloides" in body["answer"][:400] and body["candidates"][:2] == [
        "amanita_phalloides", "amanita_virosa"]
    assert body["more"] and len(body["answer"]) <= 500


def test_ask_a_poisoning_leads_with_first_aid_and_carries_on(client):
    body = client.post("/v1/ask", json={"question": "ik heb een paddenstoel gegeten en ben misselijk"}).json()
    assert body["first_aid"] and body["language"] == "nl"
    assert body["answer"].startswith("⚠️ Mogelijke vergiftiging: bel NU 112")
    follow = client.post("/v1/ask", json={"question": "symptoms?", "species": "galerina_marginata",
                                          "poisoning": True}).json()
    assert follow["first_aid"] and "Galerina marginata" in follow["answer"]


@pytest.mark.parametrize("question", ["", "   \n\t"])
def test_empty_question_is_422(client, question):
    response = client.post("/v1/ask", json={"question": question})
    assert response.status_code == 422
    assert response.json()["error"] == "empty_question"


def test_malformed_ask_body_is_422_with_json_error(client):
    response = client.post("/v1/ask", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    missing = client.post("/v1/ask", json={"species": "amanita_muscaria"})
    assert missing.status_code == 422 and "question" in missing.json()["detail"]


# --- bad photos -------------------------------------------------------------------------


def test_text_file_is_415(client):
    response = client.post("/v1/identify", files=[("image", ("notes.txt", b"just some text", "text/plain"))])
    assert response.status_code == 415
    body = response.json()
    assert body["error"] == "not_an_image"
    assert "photo" in body["detail"].lower()


def test_corrupt_jpeg_is_422(client):
    truncated = photo_bytes(7)[:300]
    response = client.post("/v1/identify", files=files(truncated))
    assert response.status_code == 422
    assert response.json()["error"] == "corrupt"


def test_empty_upload_is_422(client):
    response = client.post("/v1/identify", files=files(b""))
    assert response.status_code == 422
    assert response.json()["error"] == "empty"


def test_decompression_bomb_is_413(client):
    response = client.post("/v1/identify", files=[("image", ("bomb.png", bomb_png(), "image/png"))])
    assert response.status_code == 413
    assert response.json()["error"] == "too_many_pixels"


def test_photo_over_max_image_bytes_is_413(make_client):
    client = make_client(MAX_IMAGE_BYTES=2000)
    big = photo_bytes(8, size=(200, 200))
    assert len(big) > 2000
    response = client.post("/v1/identify", files=files(big))
    assert response.status_code == 413
    assert response.json()["error"] in {"too_many_bytes", "request_too_large"}


def test_a_photo_too_large_is_told_its_real_size(make_client):
    client = make_client(MAX_IMAGE_BYTES=1_000_000, MAX_IMAGES_PER_OBSERVATION=4)
    response = client.post("/v1/identify", files=files(b"\xff\xd8" + b"x" * 2_600_000))
    assert response.status_code == 413 and response.json()["error"] == "too_many_bytes"
    assert "(2.5 MB)" in response.json()["detail"] and "limit is 1.0 MB" in response.json()["detail"]


def test_too_many_photos_is_413(make_client):
    client = make_client(MAX_IMAGES_PER_OBSERVATION=2)
    response = client.post("/v1/identify", files=files(*[photo_bytes(s) for s in range(3)]))
    assert response.status_code == 413
    assert response.json()["error"] == "too_many_images"


def test_no_photo_is_422(client):
    response = client.post("/v1/identify", data={"note": "forgot the photo"})
    assert response.status_code == 422
    assert response.json()["error"] == "no_image"


def test_bad_photo_among_several_is_skipped_with_a_note(client):
    """The core's one decoding rule: an unreadable photo is skipped and named; the others are used."""
    bad = [("image", ("bad.txt", b"text", "text/plain"))]
    response = client.post("/v1/identify", files=[("image", ("good.jpg", photo_bytes(9), "image/jpeg")), *bad])
    assert response.status_code == 200
    body = response.json()
    assert body["image"] == ["good.jpg"] and body["n_images"] == 1
    assert body["notes"] == ["I skipped photo 2: That doesn't look like a photo I can read. Please send a JPEG, "
                             "PNG, WebP or GIF photo of the mushroom."]
    each = client.post("/v1/identify/each", files=[*bad, ("image", ("good.jpg", photo_bytes(9), "image/jpeg"))])
    assert each.status_code == 200
    assert [r["image"] for r in each.json()["results"]] == ["good.jpg"]
    assert each.json()["notes"][0].startswith("I skipped photo 1: ")
    only_bad = client.post("/v1/identify", files=bad * 2)
    assert only_bad.status_code == 415 and only_bad.json()["detail"].startswith("I couldn't read any of those photos.")


# --- request body limit -----------------------------------------------------------------


def test_body_over_limit_is_refused_by_content_length(make_client):
    client = make_client(MAX_IMAGE_BYTES=1000, MAX_IMAGES_PER_OBSERVATION=1)
    limit = max_request_bytes(client.app.state.settings)
    response = client.post("/v1/ask", content=b"x" * (limit + 1), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"


def test_body_over_limit_is_refused_while_streaming(make_client):
    """A chunked upload (no Content-Length) is cut off once it passes the limit."""
    client = make_client(MAX_IMAGE_BYTES=1000, MAX_IMAGES_PER_OBSERVATION=1)
    limit = max_request_bytes(client.app.state.settings)
    sent = []

    def chunks():
        for _ in range(limit // 4096 + 10):
            sent.append(4096)
            yield b"x" * 4096

    response = client.post("/v1/ask", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"


# --- API key ----------------------------------------------------------------------------


def test_api_key_required_when_set(make_client):
    client = make_client(API_KEY="s3cret-test-key")
    question = {"question": "Is the chanterelle edible?"}
    missing = client.post("/v1/ask", json=question)
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    assert "s3cret" not in missing.text
    assert client.post("/v1/ask", json=question, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v1/ask", json=question, headers={"X-API-Key": "s3cret-test-key"}).status_code == 200
    bearer = {"Authorization": "Bearer s3cret-test-key"}
    assert client.post("/v1/identify", files=files(photo_bytes(10)), headers=bearer).status_code == 200
    # Health endpoints stay open for probes.
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


# --- service endpoints ------------------------------------------------------------------


def test_health_and_ready_with_injected_components(client, classifier):
    assert client.get("/healthz").json() == {"status": "ok", "model_version": classifier.version, "model_source": None}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == classifier.version


def test_readyz_is_503_until_the_model_loads(tmp_path):
    """A model directory that does not exist: alive, never ready, identify says not ready."""
    settings = api_settings(tmp_path, MODEL_DIR=str(tmp_path / "no-model-here"))
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"] == "not_ready"
        response = client.post("/v1/identify", files=files(photo_bytes(11)))
        assert response.status_code == 503
        assert response.headers.get("Retry-After")


def test_model_loads_in_the_background(tmp_path, tiny_model_dir, monkeypatch):
    """The real loading path: the model comes from settings.model_dir; without an index the
    API serves photos (and catalog-only answers) but stays unready."""
    monkeypatch.setenv("VISION_ONNX_CACHE", str(tmp_path / "onnx"))
    settings = api_settings(tmp_path, MODEL_DIR=str(tiny_model_dir))
    app = create_app(settings)
    with TestClient(app) as client:
        components = app.state.engine
        assert components.wait_ready(60, "model"), components.errors
        assert client.post("/v1/identify", files=files(photo_bytes(12))).status_code == 200
        ready = client.get("/readyz")
        if components.index_loaded:
            assert ready.status_code == 200
        else:
            assert ready.status_code == 503 and "index" in ready.json()["detail"]


def test_metrics_count_requests_and_show_versions(client, classifier):
    client.post("/v1/identify", files=files(photo_bytes(13)))
    client.post("/v1/identify", files=[("image", ("x.txt", b"text", "text/plain"))])
    client.get("/no/such/route")
    text = client.get("/metrics").text
    assert 'mushroom_api_requests_total{method="POST",route="/v1/identify",status="200"} 1.0' in text
    assert 'mushroom_api_requests_total{method="POST",route="/v1/identify",status="415"} 1.0' in text
    assert 'route="unmatched"' in text
    assert "mushroom_api_request_duration_seconds_bucket" in text
    assert f'mushroom_api_model_info{{source="folder",version="{classifier.version}"}} 1.0' in text
    assert 'mushroom_api_ready{component="model"} 1.0' in text
    assert "mushroom_api_images_total 1.0" in text
    # Predictions by model version (a swapped-in model is counted apart from the one it replaced).
    assert f'mushroom_api_predictions_total{{model_version="{classifier.version}",verdict=' in text
    assert f'mushroom_api_top1_probability_count{{model_version="{classifier.version}"}} 1.0' in text


def test_openapi_schema_and_docs(client):
    schema = client.get("/openapi.json").json()
    for path in ("/v1/identify", "/v1/identify/each", "/v1/ask", "/healthz", "/readyz", "/metrics"):
        assert path in schema["paths"]
    identify_body = schema["paths"]["/v1/identify"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in identify_body
    assert "413" in schema["paths"]["/v1/identify"]["post"]["responses"]
    assert client.get("/docs").status_code == 200


def test_info_lists_labels_and_limits(client, classifier):
    body = client.get("/v1/info").json()
    assert body["labels"] == list(classifier.labels)
    assert body["limits"]["max_images_per_observation"] == client.app.state.settings.max_images_per_observation


def test_unknown_route_is_json_404(client):
    response = client.get("/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_cli_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--port" in capsys.readouterr().out


# --- batching of concurrent single-photo requests -----------------------------------------


def top_labels(result: dict) -> list[tuple[str, float]]:
    return [(p["label"], round(p["probability"], 4)) for p in result["top_k"]]


async def test_concurrent_requests_each_get_their_own_result(tmp_path, classifier, answerer):
    """Many single-photo requests at once (batched together inside) each get the result of
    their own photo, the same as the local classifier gives for it."""
    import asyncio

    import httpx

    app = create_app(api_settings(tmp_path), classifier=classifier, answerer=answerer)
    photos = [photo_bytes(seed) for seed in range(50, 62)]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        responses = await asyncio.gather(*(client.post("/v1/identify", files=files(p)) for p in photos))
        metrics = (await client.get("/metrics")).text
    app.state.core.close()
    for photo, response in zip(photos, responses, strict=True):
        assert response.status_code == 200
        local = classifier.identify([photo]).to_dict()
        assert top_labels(response.json())[:2] == top_labels(local)[:2]
        assert response.json()["verdict"] == local["verdict"]
    assert f"mushroom_api_batch_size_sum {float(len(photos))}" in metrics


async def test_micro_batcher_runs_queued_photos_in_one_call(tmp_path, classifier):
    import asyncio

    from bot.engine import Engine
    from vision_model.images import decode_image

    engine = Engine(api_settings(tmp_path), classifier=classifier)
    batches: list[int] = []
    engine.on_batch = batches.append
    images = [decode_image(photo_bytes(seed)) for seed in range(70, 76)]
    results = await asyncio.gather(*(engine.identify_images([image]) for image in images))
    engine.close()
    # All six were queued before the batch first ran: one model call of six.
    assert batches == [6]
    expected = classifier.identify_each(images)
    assert [r.to_dict() for r in results] == [e.to_dict() for e in expected]


