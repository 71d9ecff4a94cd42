"""The web page's endpoints without a browser: sessions, same-origin only, headers, limits, memory."""

from __future__ import annotations

import time

import pytest
from api_support import api_settings, photo_bytes
from fastapi.testclient import TestClient

from bot.api import create_app
from bot.web import COOKIE, Sessions

WEB = {"X-Mushroom-Web": "1"}


@pytest.fixture
def client(tmp_path):
    from knowledge_base.answer import Answerer
    from vision_model.classifier import Classifier
    from vision_model.testing import make_tiny_model_dir

    classifier = Classifier.load(make_tiny_model_dir(tmp_path / "model"), cache_dir=tmp_path / "onnx")
    app = create_app(api_settings(tmp_path, API_KEY="k", MAX_IMAGE_BYTES=100_000, PHOTO_RATE_LIMIT=50),
                     classifier=classifier, answerer=Answerer(None))
    with TestClient(app) as client:
        client.get("/")  # the session cookie
        yield client


def test_page_and_assets_come_with_the_security_headers_and_no_key(client):
    page = client.get("/")
    assert page.status_code == 200 and "<script src=\"/web/app.js\"" in page.text
    assert "k" not in {page.headers.get("x-api-key")} and "API_KEY" not in page.text
    for response in (page, client.get("/web/app.js"), client.get("/web/style.css"), client.get("/web/nothing")):
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert response.headers["x-content-type-options"] == "nosniff"
    assert client.get("/web/nothing").status_code == 404
    assert "innerHTML" not in client.get("/web/app.js").text  # every text goes in as text


def test_only_this_site_with_a_valid_session(client, tmp_path):
    ask = {"text": "is the death cap deadly?"}
    assert client.post("/web/message", json=ask, headers=WEB).status_code == 200  # no API key needed
    assert client.post("/web/message", json=ask).status_code == 403  # a cross-site form cannot add the header
    cross = client.post("/web/message", json=ask, headers={**WEB, "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    for forged in ("abc.9999999999.0000", "", Sessions("another secret", 1).new()):
        client.cookies.clear()
        client.cookies.set(COOKIE, forged)
        assert client.post("/web/message", json=ask, headers=WEB).status_code == 401
    expired = Sessions(None, -1)
    client.app.state.sessions = expired
    client.cookies.clear()
    client.cookies.set(COOKIE, expired.new())
    answer = client.post("/web/message", json=ask, headers=WEB)
    assert answer.status_code == 401 and "reload the page" in answer.json()["detail"]


def test_a_chat_remembers_its_photo_like_the_bots(client):
    files = [("image", (f"p{i}.jpg", photo_bytes(i), "image/jpeg")) for i in range(7)]
    reply = client.post("/web/photo", files=files, headers=WEB).json()["replies"][0]
    card = reply["data"]["identification"]
    assert card["verdict"] and len(card["top"]) == 3 and "first 6 of your 7 photos" in " ".join(card["notes"])
    assert [b["label"] for b in reply["buttons"]] == ["More", "Is it poisonous?", "Lookalikes", "Sources", "Right",
                                                     "Wrong", "Not sure"]
    follow = client.post("/web/message", json={"text": "is it poisonous?"}, headers=WEB).json()["replies"][0]
    assert follow["text"].startswith("Your photo") or card["top"][0]["name"].split(" (")[0] in follow["text"]
    core = client.app.state.core
    chat = client.cookies.get(COOKIE).split(".")[0]
    assert len(core.memory.recent_identifications("web", chat)) == 1


def test_limits_apply_before_the_core(client):
    big = [("image", ("big.jpg", b"x" * 150_000, "image/jpeg"))]
    reply = client.post("/web/photo", files=big, headers=WEB).json()["replies"][0]["text"]
    assert "The photo 'big.jpg' is too large (0.1 MB); the limit is 0.1 MB" in reply
    long = client.post("/web/message", json={"text": "x" * 50_000}, headers=WEB)
    assert long.status_code == 413  # JSON bodies get 32 KB, photos the photo limit
    assert client.post("/web/message", json={"text": "y" * 2001}, headers=WEB).status_code == 422
    started = time.monotonic()
    empty = client.post("/web/photo", headers=WEB).json()["replies"][0]["text"]
    assert "choose at least one photo" in empty and time.monotonic() - started < 5


def test_feedback_from_the_page_and_forget(client):
    """The page's Right / Wrong / Not sure buttons and /correct, /forget go through the core (issue 27)."""
    reply = client.post("/web/photo", files=[("image", ("p.jpg", photo_bytes(1), "image/jpeg"))],
                        headers=WEB).json()["replies"][0]
    wrong = next(b["payload"] for b in reply["buttons"] if b["label"] == "Wrong")
    asked = client.post("/web/message", json={"button": wrong}, headers=WEB).json()["replies"][0]["text"]
    assert "Which species is it?" in asked and "/consent on" in asked
    said = client.post("/web/message", json={"text": "/correct unknown"}, headers=WEB).json()["replies"][0]
    assert "an unknown species" in said["text"]
    core = client.app.state.core
    [vote] = core.feedback.rows()
    assert (vote["vote"], vote["user_label"], vote["platform"]) == ("wrong", "unknown", "web")
    assert vote["model_version"] == core.model_version
    gone = client.post("/web/message", json={"text": "/forget"}, headers=WEB).json()["replies"][0]["text"]
    assert "your 1 feedback answer(s)" in gone and core.feedback.rows() == []
    chat = client.cookies.get(COOKIE).split(".")[0]
    assert core.memory.recent_identifications("web", chat) == []
