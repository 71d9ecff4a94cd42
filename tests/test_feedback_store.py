"""bot.feedback on its own: salted user keys, one vote per user and identification, consent-gated photos in an
fsspec store, /forget and retention leave no row or file behind (issue 27)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, update

from bot.memory import StoredIdentification
from vision_model.feedback import FeedbackStore, feedback, kept_photos


def ident(number: int = 1) -> StoredIdentification:
    return StoredIdentification(id=number, labels=["amanita_phalloides", "amanita_citrina"], probabilities=[0.9, 0.1],
                                verdict="deadly", abstained=False, danger_probability=0.9, photo_count=1,
                                model_version="tiny-1", created_at=datetime.now(UTC), photo_hashes=["ab" * 32])


@pytest.fixture
def store(tmp_path):
    return FeedbackStore(create_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}"), photos_url=str(tmp_path / "photos"))


def test_user_keys_are_salted_hashes_that_stay_stable(tmp_path, store):
    key = store.user_key("telegram", "user-123")
    # (an id with '-', which never occurs in a hex digest, so a random salt cannot make it appear by chance)
    assert len(key) == 64 and "user-123" not in key and key == store.user_key("telegram", "user-123")
    assert key != store.user_key("discord", "user-123")
    again = FeedbackStore(store.engine, photos_url=str(tmp_path / "photos"))  # the salt is kept in the database
    assert again.user_key("telegram", "user-123") == key
    other = FeedbackStore(create_engine(f"sqlite:///{tmp_path / 'other.sqlite3'}"))
    assert other.user_key("telegram", "user-123") != key  # another database, another salt
    assert FeedbackStore(store.engine, salt="fixed").user_key("telegram", "user-123") != key


def test_one_vote_per_user_and_identification(store):
    key = store.user_key("web", "u")
    assert store.record(key, "web", ident(), "right").changed_from is None
    assert store.record(key, "web", ident(), "right").changed_from is None  # the same again: nothing changes
    assert store.record(key, "web", ident(), "wrong", "amanita_citrina").changed_from == "right"
    [row] = store.rows(key)
    assert (row["vote"], row["user_label"], row["model_version"]) == ("wrong", "amanita_citrina", "tiny-1")
    with pytest.raises(ValueError):
        store.record(key, "web", ident(), "maybe")


def test_forget_keeps_a_photo_another_consenting_user_also_sent(store, tmp_path):
    alice, bob = store.user_key("web", "alice"), store.user_key("web", "bob")
    store.set_consent(alice, True)
    store.set_consent(bob, True)
    assert store.keep_photos(alice, [b"same photo", b"alice only"]) == 2
    assert store.keep_photos(bob, [b"same photo"]) == 0  # content-addressed: already there
    store.record(alice, "web", ident(), "right")
    assert store.forget_user(alice) == (1, 1)
    assert store.rows() == [] and store.consent(alice) is None and store.consent(bob) is True
    files = [p for p in (tmp_path / "photos").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].read_bytes() == b"same photo"
    assert store.forget_user(bob) == (0, 1)
    assert not [p for p in (tmp_path / "photos").rglob("*") if p.is_file()]


def test_retention_deletes_old_votes_and_photos(store, tmp_path):
    key = store.user_key("web", "u")
    store.set_consent(key, True)
    store.keep_photos(key, [b"old photo"])
    store.record(key, "web", ident(1), "right")
    old = datetime.now(UTC) - timedelta(days=400)
    with store.engine.begin() as conn:
        conn.execute(update(feedback).values(created_at=old))
        conn.execute(update(kept_photos).values(created_at=old))
    store.keep_photos(key, [b"new photo"])
    store.record(key, "web", ident(2), "unsure")
    assert store.delete_older_than(365) == (1, 1)
    assert [r["identification_id"] for r in store.rows()] == [2]
    assert [p.read_bytes() for p in (tmp_path / "photos").rglob("*.jpg")] == [b"new photo"]


async def test_votes_go_through_the_review_queue_into_a_dataset_folder(tmp_path, monkeypatch, capsys):
    """A user confirms one photo and corrects another in a chat, an expert accepts them from the command
    line, and `export` writes them in the training pool's layout with no trace of the user."""
    import csv
    import json

    from bot_support import jpeg, make_core, make_settings, tiny_model

    from bot.messages import Event
    from config import get_settings
    from vision_model.feedback import main

    settings = make_settings(tmp_path)
    core = make_core(settings, tiny_model(str(tmp_path / "models"), "amanita_phalloides"))
    chat = {"platform": "web", "chat_id": "c1", "user_id": "user-42"}
    await core.handle(Event(**chat, command="consent", args="on"))
    [first] = await core.handle(Event(**chat, photos=[jpeg((200, 200, 180))]))
    right = next(b.payload for b in first.buttons if b.label == "Right")
    await core.handle(Event(**chat, button=right))
    [second] = await core.handle(Event(**chat, photos=[jpeg((240, 150, 20))]))
    await core.handle(Event(**chat, button=next(b.payload for b in second.buttons if b.label == "Wrong")))
    [said] = await core.handle(Event(**chat, command="correct", args="golden chanterelle"))
    assert "Cantharellus cibarius" in said.text
    core.close()

    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("FEEDBACK_PHOTOS", settings.feedback_photos)
    get_settings.cache_clear()
    try:
        assert main(["list"]) == 0
        listing = capsys.readouterr().out
        assert "2 item(s)" in listing and "user: cantharellus_cibarius" in listing and "user-42" not in listing
        assert main(["show", "1"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["vote"] == "right" and "user_key" not in shown and shown["model_version"]
        assert main(["accept", "1", "--reviewer", "expert"]) == 0  # "right": the model's label
        assert main(["accept", "2", "--reviewer", "expert", "--label", "not_a_species"]) == 2
        assert main(["accept", "2", "--reviewer", "expert"]) == 0  # the user's label
        assert main(["show", "99"]) == 1
        out = tmp_path / "accepted"
        assert main(["export", "--out", str(out)]) == 0
        assert "exported 2 photo(s) of 2 species" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
    rows = list(csv.DictReader((out / "manifest.csv").open(encoding="utf-8")))
    assert sorted(r["label"] for r in rows) == ["amanita_phalloides", "cantharellus_cibarius"]
    assert {r["source"] for r in rows} == {"feedback"} and {r["license"] for r in rows} == {"contributed with consent"}
    assert all((out / r["path"]).is_file() and r["reviewer"] == "expert" for r in rows)
    assert "user-42" not in (out / "manifest.csv").read_text(encoding="utf-8")


def test_the_api_hands_out_a_signed_token_and_takes_feedback_on_it(tmp_path):
    """The HTTP API keeps no conversation: /v1/identify returns a feedback_token; /v1/feedback takes it back
    with the vote (forged tokens, unknown species refused); /v1/forget deletes the user's votes."""
    from api_support import api_settings, photo_bytes
    from fastapi.testclient import TestClient

    from bot.api import create_app
    from knowledge_base.answer import Answerer
    from vision_model.classifier import Classifier
    from vision_model.testing import make_tiny_model_dir

    classifier = Classifier.load(make_tiny_model_dir(tmp_path / "model"), cache_dir=tmp_path / "onnx")
    app = create_app(api_settings(tmp_path, API_KEY="k"), classifier=classifier, answerer=Answerer(None))
    key = {"X-API-Key": "k"}
    with TestClient(app) as client:
        result = client.post("/v1/identify", files=[("image", ("a.jpg", photo_bytes(1), "image/jpeg"))],
                             headers=key).json()
        token = result["feedback_token"]
        vote = {"token": token, "vote": "right", "user": "client-user-7"}
        assert client.post("/v1/feedback", json=vote).status_code == 401  # the API key applies
        said = client.post("/v1/feedback", json=vote, headers=key).json()
        assert said == {"recorded": "right", "label": None, "changed_from": None,
                        "model_version": result["model_version"]}
        again = client.post("/v1/feedback", json={**vote, "vote": "wrong", "label": "chanterelle"}, headers=key)
        assert again.json()["changed_from"] == "right" and again.json()["label"] == "cantharellus_cibarius"
        forged = client.post("/v1/feedback", json={**vote, "token": token[:-1] + "0"}, headers=key)
        assert forged.status_code == 422 and forged.json()["error"] == "bad_token"
        unknown = client.post("/v1/feedback", json={**vote, "label": "Boletus imaginarius"}, headers=key)
        assert unknown.status_code == 422 and unknown.json()["error"] == "unknown_species"
        assert client.post("/v1/feedback", json={**vote, "vote": "maybe"}, headers=key).status_code == 422
        core = app.state.core
        [row] = core.feedback.rows()
        assert row["platform"] == "api" and row["user_label"] == "cantharellus_cibarius"
        assert row["model_version"] == result["model_version"] and "client-user-7" not in str(row)
        assert len(__import__("json").loads(row["photo_sha256"])) == 1 and not row["photos_kept"]
        gone = client.post("/v1/forget", json={"user": "client-user-7"}, headers=key).json()
        assert gone == {"votes_deleted": 1, "photos_deleted": 0} and core.feedback.rows() == []


@pytest.fixture
def s3_endpoint(monkeypatch):
    """An S3-compatible server on loopback (moto's; MinIO in Compose), reached through s3fs as in production:
    only the network edge is a stand-in."""
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{host}:{port}")  # what Compose sets for MinIO
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "mushroom")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "minio-secret-123")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield f"http://{host}:{port}"
    server.stop()


def test_photos_in_an_s3_bucket_are_kept_exported_and_forgotten(s3_endpoint, tmp_path):
    import boto3
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()
    store = FeedbackStore(create_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}"),
                          photos_url="s3://mushroom-feedback/photos")
    alice, bob = store.user_key("telegram", "alice"), store.user_key("telegram", "bob")
    store.set_consent(alice, True)
    photo = b"\xff\xd8 a jpeg of amanita_citrina"
    assert store.keep_photos(alice, [photo]) == 1  # the bucket is created on first use
    bucket = boto3.client("s3", endpoint_url=s3_endpoint)

    def keys() -> list[str]:
        return sorted(o["Key"] for o in bucket.list_objects_v2(Bucket="mushroom-feedback").get("Contents", []))

    [key] = keys()
    assert key.startswith("photos/") and key.endswith(".jpg")
    photo_hash = hashlib.sha256(photo).hexdigest()
    item = ident()
    item.photo_hashes = [photo_hash]
    store.record(alice, "telegram", item, "wrong", "amanita_citrina")
    store.record(bob, "telegram", ident(2), "right")  # no consent: only hashes, nothing in the bucket
    [row] = store.rows(alice)
    store.review(row["id"], "accepted", "expert", "amanita_citrina")
    exported = store.export(tmp_path / "accepted")
    assert [r["path"] for r in exported] == [f"amanita_citrina/{photo_hash}.jpg"]
    assert (tmp_path / "accepted" / "amanita_citrina" / f"{photo_hash}.jpg").read_bytes() == photo
    assert "alice" not in (tmp_path / "accepted" / "manifest.csv").read_text()

    assert store.forget_user(alice) == (1, 1)
    assert keys() == [] and store.rows(alice) == [] and store.kept_photo_paths() == []
    assert store.export(tmp_path / "accepted") == []  # a re-export no longer holds the forgotten photo
    assert not (tmp_path / "accepted" / "amanita_citrina").exists()
