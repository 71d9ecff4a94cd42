"""Classifier on the tiny random model: preprocessing parity, ONNX vs torch, calibration,
observations, batching, thread safety, the JSON shape."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from vision_model.classifier import Classifier, Identification, Preprocessor, ensure_onnx
from vision_model.images import ImageError
from vision_model.release import ModelNotFound, read_labels
from vision_model.testing import DEFAULT_TINY_LABELS, make_tiny_model_dir
from vision_model.verdict import SafetyConfig, decide, softmax

EDIBILITY = {
    "amanita_phalloides": "deadly",
    "amanita_muscaria": "poisonous",
    "hypholoma_fasciculare": "poisonous",
    "boletus_edulis": "edible",
    "cantharellus_cibarius": "edible",
    "fomes_fomentarius": "inedible",
    "morchella_esculenta": "edible_with_caution",
}


def edibility(label: str) -> str:
    return EDIBILITY.get(label, "unknown")


def photo(seed: int, size=(80, 64), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    # Smooth random colour fields, so photos differ in ways the model's features notice.
    small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    return img.convert(mode)


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def classifier(model_dir, onnx_cache):
    return Classifier.load(model_dir, backend="onnx", cache_dir=onnx_cache, edibility=edibility)


@pytest.fixture(scope="module")
def torch_classifier(model_dir):
    return Classifier.load(model_dir, backend="torch", edibility=edibility)


PHOTOS = [photo(i) for i in range(12)]


def test_tiny_model_dir_is_in_release_format(model_dir):
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "safety.json",
        "MODEL_CARD.md",
    ):
        assert (model_dir / name).is_file(), name
    assert read_labels(model_dir) == list(DEFAULT_TINY_LABELS)
    assert SafetyConfig.load(model_dir).version == "tiny-test"


def test_loads_with_labels_version_and_onnx_backend(classifier, onnx_cache):
    assert classifier.labels == list(DEFAULT_TINY_LABELS)
    assert classifier.version == "tiny-test"
    assert classifier.backend == "onnx"
    assert len(list(onnx_cache.glob("*.onnx"))) == 1
    assert not list(onnx_cache.glob(".*tmp"))  # the atomic write left nothing behind


def test_onnx_export_is_cached_and_reused(model_dir, onnx_cache, classifier):
    path = ensure_onnx(model_dir, (56, 56), onnx_cache)
    mtime = path.stat().st_mtime_ns
    again = Classifier.load(model_dir, backend="onnx", cache_dir=onnx_cache, edibility=edibility)
    assert again.backend == "onnx"
    assert path.stat().st_mtime_ns == mtime  # not exported a second time


def test_preprocessing_matches_the_transformers_processor(model_dir):
    from transformers import AutoImageProcessor

    config = json.loads((model_dir / "preprocessor_config.json").read_text())
    ours = Preprocessor(config)
    theirs = AutoImageProcessor.from_pretrained(model_dir)
    images = [photo(1, (80, 64)), photo(2, (64, 200)), photo(3, (64, 64)), photo(4, (30, 20))]
    for img in images:  # includes a photo smaller than the crop (padding path)
        expected = theirs(images=[img], return_tensors="np")["pixel_values"]
        np.testing.assert_allclose(ours([img]), expected, atol=1e-5)


def test_preprocessing_matches_on_the_real_processor_config(shared_data):
    from transformers import AutoImageProcessor

    weights = shared_data / "weights" / "dinov2-small-imgfocus"
    ours = Preprocessor(json.loads((weights / "preprocessor_config.json").read_text()))
    theirs = AutoImageProcessor.from_pretrained(weights)
    paths = sorted((shared_data / "images").glob("*/*.jpg"))[::400][:6]
    from vision_model.images import decode_image

    images = [decode_image(p) for p in paths]
    np.testing.assert_allclose(
        ours(images), theirs(images=images, return_tensors="np")["pixel_values"], atol=1e-5
    )


def test_onnx_matches_torch(classifier, torch_classifier):
    onnx_logits = classifier.logits(PHOTOS)
    torch_logits = torch_classifier.logits(PHOTOS)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=1e-4)
    assert (onnx_logits.argmax(1) == torch_logits.argmax(1)).all()
    # ... and the random model does tell the photos apart (the check is not vacuous).
    assert np.ptp(onnx_logits, axis=0).max() > 0.1


def test_batching_does_not_change_results(model_dir, onnx_cache):
    one_by_one = Classifier.load(model_dir, cache_dir=onnx_cache, edibility=edibility, batch_size=1)
    batched = Classifier.load(model_dir, cache_dir=onnx_cache, edibility=edibility, batch_size=5)
    np.testing.assert_allclose(one_by_one.logits(PHOTOS), batched.logits(PHOTOS), atol=1e-4)
    each = batched.identify_each(PHOTOS)
    assert len(each) == len(PHOTOS)
    singles = [batched.identify([p]) for p in PHOTOS]
    assert [r.verdict for r in each] == [r.verdict for r in singles]
    for a, b in zip(each, singles, strict=True):
        assert [p.label for p in a.top_k] == [p.label for p in b.top_k]
        np.testing.assert_allclose(
            [p.probability for p in a.top_k], [p.probability for p in b.top_k], atol=1e-5
        )


def test_identification_agrees_with_the_rule(classifier):
    for img, result in zip(PHOTOS, classifier.identify_each(PHOTOS), strict=True):
        probs = softmax(classifier.logits([img])[0], classifier.safety.temperature)
        expected = decide(probs, classifier.labels, edibility, classifier.safety)
        assert (result.verdict, result.abstained) == (expected.verdict, expected.abstained)
        assert result.danger_probability == pytest.approx(expected.danger_probability)
        top = [p.probability for p in result.top_k]
        assert len(top) == 5 and top == sorted(top, reverse=True)
        assert result.label == classifier.labels[int(probs.argmax())]


def test_calibration_temperature_is_applied(tmp_path, classifier, onnx_cache):
    hot = make_tiny_model_dir(tmp_path / "hot", safety=SafetyConfig(version="hot", temperature=4.0))
    warm = Classifier.load(hot, backend="onnx", cache_dir=onnx_cache, edibility=edibility)
    assert warm.safety.temperature == 4.0
    logits = warm.logits(PHOTOS[:3])
    np.testing.assert_allclose(logits, classifier.logits(PHOTOS[:3]), atol=1e-5)  # same weights
    np.testing.assert_allclose(warm.probabilities(PHOTOS[:3]), softmax(logits / 4.0), atol=1e-6)
    for cold_result, hot_result in zip(
        classifier.identify_each(PHOTOS[:3]), warm.identify_each(PHOTOS[:3]), strict=True
    ):
        assert hot_result.label == cold_result.label
        assert hot_result.top_k[0].probability < cold_result.top_k[0].probability


def test_observation_of_several_photos_gives_one_result(classifier):
    photos = PHOTOS[:4]
    result = classifier.identify(photos)
    assert isinstance(result, Identification) and result.n_images == 4
    mean = classifier.probabilities(photos).mean(axis=0)
    top = int(mean.argmax())
    assert result.top_k[0].label == classifier.labels[top]
    assert result.top_k[0].probability == pytest.approx(float(mean[top]), abs=1e-6)
    assert sum(p.probability for p in classifier.identify(photos).top_k) <= 1.0 + 1e-6


def test_observation_keeps_a_single_photos_deadly_mass(tmp_path, onnx_cache):
    """Mean of probabilities: a deadly species one photo is sure of is not averaged away."""
    deadly = make_tiny_model_dir(tmp_path / "deadly", favour="amanita_phalloides")
    clf = Classifier.load(deadly, cache_dir=onnx_cache, edibility=edibility)
    result = clf.identify(PHOTOS[:3])
    assert result.verdict == "deadly" and result.danger_probability > 0.99


def test_favoured_edible_model_says_edible(tmp_path, onnx_cache):
    edible = make_tiny_model_dir(tmp_path / "edible", favour="boletus_edulis")
    result = Classifier.load(edible, cache_dir=onnx_cache, edibility=edibility).identify([PHOTOS[0]])
    assert result.verdict == "edible" and not result.abstained


def test_accepts_bytes_paths_and_any_pil_mode(classifier, tmp_path):
    img = photo(7)
    path = tmp_path / "p.jpg"
    path.write_bytes(jpeg_bytes(img))
    from_path = classifier.identify([path])
    from_bytes = classifier.identify([path.read_bytes()])
    assert from_path.top_k == from_bytes.top_k
    assert classifier.identify(str(path)).top_k == from_path.top_k  # a single photo, not in a list
    rgba = classifier.identify([photo(7, mode="RGBA")])
    assert rgba.top_k[0].label == classifier.identify([img]).top_k[0].label


def test_bad_photo_raises_image_error(classifier):
    with pytest.raises(ImageError):
        classifier.identify([b"definitely not a photo"])
    with pytest.raises(ValueError):
        classifier.identify([])


def test_to_dict_shape(classifier):
    result = classifier.identify([PHOTOS[0]])
    data = result.to_dict("cap.jpg")
    assert set(data) == {"image", "top_k", "verdict", "abstained", "danger_probability", "model_version",
                         "dangerous"}
    assert data["image"] == "cap.jpg" and data["model_version"] == "tiny-test"
    assert all(set(p) == {"label", "probability"} for p in data["top_k"])
    assert json.loads(json.dumps(data)) == data
    assert result.to_dict(["a.jpg", "b.jpg"])["image"] == ["a.jpg", "b.jpg"]


def test_identify_from_eight_threads(classifier):
    expected = [r.top_k for r in classifier.identify_each(PHOTOS[:8])]
    results: list = [None] * 8
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(3):
                results[i] = classifier.identify([PHOTOS[i]]).top_k
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    for got, want in zip(results, expected, strict=True):
        assert [p.label for p in got] == [p.label for p in want]
        np.testing.assert_allclose([p.probability for p in got], [p.probability for p in want], atol=1e-5)


def test_auto_backend_falls_back_to_torch_when_export_fails(model_dir, tmp_path, monkeypatch):
    import vision_model.classifier as classifier_module

    def broken_export(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(classifier_module, "export_onnx", broken_export)
    clf = Classifier.load(model_dir, backend="auto", cache_dir=tmp_path / "empty-cache", edibility=edibility)
    assert clf.backend == "torch"
    assert clf.identify([PHOTOS[0]]).top_k
    with pytest.raises(RuntimeError):
        Classifier.load(model_dir, backend="onnx", cache_dir=tmp_path / "empty-cache", edibility=edibility)


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFound, match="No vision model"):
        Classifier.load(tmp_path / "nowhere", edibility=edibility)


def test_unwritable_cache_falls_back_to_a_temporary_folder(model_dir, tmp_path, monkeypatch):
    import tempfile

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    path = ensure_onnx(model_dir, (56, 56), blocker / "onnx")
    assert path.is_file() and path.is_relative_to(tmp_path / "tmp")


def test_auto_serves_int8_only_for_a_model_whose_evaluation_found_it_at_parity(tmp_path, onnx_cache):
    """Issue 23: int8 is the default where its evaluation showed every reply unchanged; float32 stays a flag."""
    import shutil

    from vision_model.classifier import INT8_PARITY_MIN_PHOTOS, auto_backends

    model = tmp_path / "model"
    shutil.copytree(make_tiny_model_dir(tmp_path / "src"), model)

    def served(parity: dict | None, backend: str | None = None) -> str:
        (model / "metrics.json").write_text(json.dumps({"parity": parity}))
        return Classifier.load(model, backend=backend, cache_dir=onnx_cache, edibility=edibility).backend

    at_parity = {"backend": "onnx-int8", "against": "torch", "n": INT8_PARITY_MIN_PHOTOS, "same": 100,
                 "rate": 1.0, "compared": "the verdict shown and the species named as most likely"}
    assert served(at_parity) == "onnx-int8"
    assert served(at_parity, backend="onnx") == "onnx"  # the float32 flag
    # Otherwise what gives float32's replies: OpenVINO (bfloat16 checked against float32 where the CPU has the
    # units for it), as auto_backends orders them.
    replies_of_float32 = [b for b in auto_backends(model) if b != "onnx-int8"][0]
    assert replies_of_float32 in ("openvino", "openvino-bf16")
    assert served({**at_parity, "same": 99, "rate": 0.99}) == replies_of_float32  # one reply changed
    assert served({**at_parity, "n": 10, "same": 10}) == replies_of_float32  # too few photos to mean something
    old_definition = {k: v for k, v in at_parity.items() if k != "compared"}
    assert served(old_definition) == replies_of_float32  # counted before replies were compared: not trusted
    assert served(None) == replies_of_float32
    (model / "metrics.json").write_text("{not json")
    assert Classifier.load(model, cache_dir=onnx_cache, edibility=edibility).backend == replies_of_float32
    # Served int8 still answers, with the reply's shown answer as the evaluation counts it.
    (model / "metrics.json").write_text(json.dumps({"parity": at_parity}))
    result = Classifier.load(model, cache_dir=onnx_cache, edibility=edibility).identify([photo(1)])
    verdict, named = result.shown_answer()
    assert verdict == ("unknown" if result.abstained else result.verdict)
    assert named == (result.label if not result.abstained and result.top_k[0].probability >= 0.5 else None)


def test_openvino_float32_matches_onnx_runtime(classifier, model_dir, onnx_cache):
    ov = Classifier.load(model_dir, backend="openvino", cache_dir=onnx_cache, edibility=edibility)
    assert ov.backend == "openvino" and ov._exact_runner is None
    np.testing.assert_allclose(ov.logits(PHOTOS), classifier.logits(PHOTOS), atol=1e-4)


def test_checked_bfloat16_gives_the_replies_of_float32(model_dir, onnx_cache):
    exact = Classifier.load(model_dir, backend="openvino", cache_dir=onnx_cache, edibility=edibility)
    fast = Classifier.load(model_dir, backend="openvino-bf16", cache_dir=onnx_cache, edibility=edibility)
    assert fast.backend == "openvino-bf16" and fast._exact_runner is not None
    assert [r.shown_answer() for r in fast.identify_each(PHOTOS)] == [
        r.shown_answer() for r in exact.identify_each(PHOTOS)]
    assert fast.identify(PHOTOS[:3]).shown_answer() == exact.identify(PHOTOS[:3]).shown_answer()
    assert fast.photos_run == len(PHOTOS) + 3 and 0 <= fast.photos_rerun <= fast.photos_run


def test_answers_near_a_line_are_run_again_exactly_and_only_those(model_dir, onnx_cache):
    """The check itself, with a fast backend that moves every logit a little (as bfloat16 does) and a
    threshold put right on one photo's top-1 probability: that photo gets float32's logits, the others keep
    the fast ones, and every reply is float32's."""
    from vision_model import openvino_runner
    from vision_model.classifier import load_preprocessor

    onnx_path = ensure_onnx(model_dir, (56, 56), onnx_cache)
    float32 = openvino_runner.OpenVinoRunner(onnx_path, 1)
    exact_calls = []

    def exact(pixel_values):
        exact_calls.append(len(pixel_values))
        return float32(pixel_values)

    def nudged(pixel_values):  # moves probabilities by far less than FAST_PROBABILITY_BOUND
        out = float32(pixel_values)
        return out + np.float32(0.002) * np.sign(np.sin(np.arange(out.size))).reshape(out.shape).astype(np.float32)

    want = float32(load_preprocessor(model_dir)(PHOTOS[:6]))
    # A temperature that spreads the tiny model's probabilities: photos 0, 1, 3, 4, 5 sit 0.05-0.16 from every
    # line, photo 2 right on the abstain line.
    top = softmax(want, 10.0).max(1)
    safety = SafetyConfig(temperature=10.0, abstain_min_probability=float(top[2]))

    def build(runner, exact_runner=None):
        return Classifier(model_dir, read_labels(model_dir), load_preprocessor(model_dir), runner, safety,
                          edibility, exact_runner=exact_runner)

    checked, reference = build(nudged, exact), build(float32)
    got = checked.logits(PHOTOS[:6])
    near = np.array([not checked._far_from_lines(p, 0.0) for p in softmax(want, 10.0)])
    assert near.tolist() == [False, False, True, False, False, False]
    assert checked.photos_rerun == 1 == sum(exact_calls)
    np.testing.assert_array_equal(got[near], want[near])  # float32's own logits
    assert not np.array_equal(got[~near], want[~near])  # the fast ones kept
    assert [r.shown_answer() for r in checked.identify_each(PHOTOS[:6])] == [
        r.shown_answer() for r in reference.identify_each(PHOTOS[:6])]


def test_decision_margin_measures_the_distance_to_the_nearest_line():
    from vision_model.verdict import decision_margin

    labels = ["amanita_phalloides", "boletus_edulis", "fomes_fomentarius"]
    safety = SafetyConfig(abstain_min_probability=0.6, ood_threshold=-2.0)
    # deadly mass 0.049: 0.001 from the 5 % line; the energy 0.5 from the OOD line.
    gap, energy_gap = decision_margin(np.array([0.049, 0.851, 0.1]), labels, edibility, safety, energy=-2.5)
    assert gap == pytest.approx(0.001) and energy_gap == pytest.approx(0.5)
    # Far from every line: the nearest is the 5 % line (0.05 away; the abstain line 0.39, the edible line 0.09;
    # inedible vs caution does not count above the edible line).
    gap, energy_gap = decision_margin(np.array([0.0, 0.99, 0.01]), labels, edibility,
                                      SafetyConfig(abstain_min_probability=0.6))
    assert gap == pytest.approx(0.05) and energy_gap == float("inf")
    # Below the edible line, inedible (0.11) vs caution (0.0) decides too: half their gap.
    gap, _ = decision_margin(np.array([0.0, 0.89, 0.11]), labels, edibility, SafetyConfig(abstain_min_probability=0.6))
    assert gap == pytest.approx(0.01)  # the edible line, 0.01 away, is nearer than 0.055
    # A near tie of the top two: half their gap.
    gap, _ = decision_margin(np.array([0.0, 0.50, 0.50]), labels, edibility, safety)
    assert gap == pytest.approx(0.0)


def test_several_photos_far_from_lines_alone_but_not_together_are_all_run_again(model_dir, onnx_cache):
    from vision_model import openvino_runner
    from vision_model.classifier import load_preprocessor

    float32 = openvino_runner.OpenVinoRunner(ensure_onnx(model_dir, (56, 56), onnx_cache), 1)
    pair = [PHOTOS[0], PHOTOS[1]]
    probs = softmax(float32(load_preprocessor(model_dir)(pair)), 10.0)
    combined_top = float(probs.mean(0).max())
    assert all(abs(p.max() - combined_top) > 0.1 for p in probs)  # each photo alone: far from that line
    safety = SafetyConfig(temperature=10.0, abstain_min_probability=combined_top)
    checked = Classifier(model_dir, read_labels(model_dir), load_preprocessor(model_dir),
                         lambda pv: float32(pv) * np.float32(1.001), safety, edibility, exact_runner=float32)
    reference = Classifier(model_dir, read_labels(model_dir), load_preprocessor(model_dir), float32, safety,
                           edibility)
    got, want = checked.identify(pair), reference.identify(pair)
    assert checked.photos_rerun == 2
    assert got.shown_answer() == want.shown_answer() and got.top_k == want.top_k
