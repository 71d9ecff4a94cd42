"""bot.remote against the real API app: the same answers as the local components."""

from __future__ import annotations

import io
import os

import httpx
import numpy as np
import pytest
from api_support import api_settings, photo_bytes
from fastapi.testclient import TestClient
from PIL import Image

from bot.api import create_app
from bot.remote import RemoteAnswerer, RemoteClassifier, RemoteError
from bot.settings import MissingSetting

os.environ.setdefault("HF_HUB_OFFLINE", "1")

API_KEY = "remote-test-key"


def as_sent(identification) -> tuple:
    """What crosses the wire: the JSON shape (probabilities rounded to 6 places) and the photo count."""
    return identification.to_dict(), identification.n_images


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from vision_model.classifier import Classifier
    from vision_model.testing import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))
    return Classifier.load(model_dir, cache_dir=tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def answerer():
    from knowledge_base.answer import Answerer

    return Answerer(None)


@pytest.fixture
def api(tmp_path, classifier, answerer):
    app = create_app(api_settings(tmp_path, API_KEY=API_KEY), classifier=classifier, answerer=answerer)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def remote(api):
    return RemoteClassifier("http://testserver", API_KEY, client=api)


def test_remote_identify_matches_local(remote, classifier):
    photos = [photo_bytes(seed) for seed in (21, 22)]
    assert as_sent(remote.identify(photos[:1])) == as_sent(classifier.identify(photos[:1]))
    assert as_sent(remote.identify(photos)) == as_sent(classifier.identify(photos))


def test_remote_identify_each_matches_local(remote, classifier):
    photos = [photo_bytes(seed) for seed in (23, 24, 25)]
    assert [as_sent(i) for i in remote.identify_each(photos)] == [as_sent(i) for i in classifier.identify_each(photos)]


def test_remote_accepts_paths_and_pil_images(remote, classifier, tmp_path):
    path = tmp_path / "cap.jpg"
    path.write_bytes(photo_bytes(26))
    image = Image.open(io.BytesIO(photo_bytes(27))).convert("RGB")
    assert as_sent(remote.identify([path])) == as_sent(classifier.identify([path]))
    # PIL images travel losslessly (PNG), so the result is identical.
    assert as_sent(remote.identify([image])) == as_sent(classifier.identify([image]))


def test_remote_labels_and_version(remote, classifier):
    assert remote.labels == list(classifier.labels)
    assert remote.version == classifier.version


def test_remote_bad_photo_raises_image_error(remote):
    from vision_model.images import ImageError

    with pytest.raises(ImageError) as error:
        remote.identify([b"definitely not a photo"])
    assert error.value.reason == "not_an_image"
    assert "photo" in str(error.value).lower()


def test_remote_answerer_matches_local(api, answerer):
    remote = RemoteAnswerer("http://testserver", API_KEY, client=api)
    question = "Is the death cap edible?"
    assert remote.ask(question) == answerer.ask(question)
    assert remote.ask("Can I eat it?", "amanita_phalloides") == answerer.ask("Can I eat it?", "amanita_phalloides")
    # A photo's context and an ongoing poisoning cross the wire too: the same story in remote mode.
    from knowledge_base.answer_types import PhotoContext

    photo = PhotoContext("russula_emetica", 0.6, "deadly", False, [("galerina_marginata", 0.2)])
    assert remote.ask("can I eat it?", photo=photo) == answerer.ask("can I eat it?", photo=photo)
    assert remote.ask("symptoms?", "galerina_marginata", poisoning=True) == answerer.ask(
        "symptoms?", "galerina_marginata", poisoning=True)


def test_remote_answerer_empty_question_is_a_friendly_error(api):
    remote = RemoteAnswerer("http://testserver", API_KEY, client=api)
    with pytest.raises(RemoteError) as error:
        remote.ask("   ")
    assert error.value.status == 422
    assert "empty" in str(error.value).lower()


def test_wrong_api_key_is_a_remote_error(api):
    remote = RemoteClassifier("http://testserver", "wrong-key", client=api)
    with pytest.raises(RemoteError) as error:
        remote.identify([photo_bytes(28)])
    assert error.value.status == 401
    assert "wrong-key" not in str(error.value)


def test_unreachable_service_is_a_friendly_error():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    remote = RemoteClassifier("http://api:8080", client=httpx.Client(transport=httpx.MockTransport(refuse)))
    with pytest.raises(RemoteError) as error:
        remote.identify([photo_bytes(29)])
    assert "try again" in str(error.value)


def test_from_settings_needs_inference_url(tmp_path):
    with pytest.raises(MissingSetting, match="INFERENCE_URL"):
        RemoteClassifier.from_settings(api_settings(tmp_path))
    remote = RemoteAnswerer.from_settings(api_settings(tmp_path, INFERENCE_URL="http://api:8080/", API_KEY="k"))
    assert remote._base_url == "http://api:8080"
    remote.close()


def test_remote_sends_a_large_pil_image_as_jpeg_within_limits(remote, classifier):
    from bot.remote import MAX_UPLOAD_BYTES, _photo_bytes

    rng = np.random.default_rng(30)
    image = Image.fromarray(rng.integers(0, 256, size=(1100, 1300, 3), dtype=np.uint8))
    name, data = _photo_bytes(image, 0)
    assert name.endswith(".jpg") and len(data) <= MAX_UPLOAD_BYTES
    result = remote.identify([image])
    assert result.model_version == classifier.version
    assert result.top_k[0].label in classifier.labels


def test_remote_version_while_unreachable_is_a_placeholder():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    remote = RemoteClassifier("http://api:8080", client=httpx.Client(transport=httpx.MockTransport(refuse)))
    assert remote.version == "unavailable"
