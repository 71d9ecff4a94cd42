"""vision_model.calibrate: temperature scaling and safety-threshold tuning on synthetic logits."""

import numpy as np
from vision_support import edibility  # the tests' one small catalog

from vision_model.calibrate import (
    SELECTIVE_ACCURACY_TARGET,
    fit_temperature,
    safety_config,
    selective_accuracy_threshold,
    tune_thresholds,
)
from vision_model.heldout import build_tuning_set, synthetic_images
from vision_model.metrics import danger_figures, evaluate_with_decide, expected_calibration_error, nll
from vision_model.verdict import SafetyConfig, energy_score, softmax

LABELS = [
    "amanita_phalloides",
    "amanita_muscaria",
    "boletus_edulis",
    "cantharellus_cibarius",
    "fomes_fomentarius",
]


def overconfident_logits(n: int, seed: int = 0, scale: float = 12.0):
    """70 %-accurate predictions whose logits say ~100 % (the typical fine-tuned net)."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, len(LABELS), n)
    predicted = np.where(rng.random(n) < 0.7, targets, rng.integers(0, len(LABELS), n))
    logits = rng.normal(0, 1, (n, len(LABELS)))
    logits[np.arange(n), predicted] += scale
    logits[np.arange(n), targets] += scale * 0.6  # the true class is usually runner-up when wrong
    return logits, targets


def realistic_logits(n: int, seed: int = 0, scale: float = 8.0):
    """90 % accurate; mistakes are less confident than hits, with the true class a close runner-up."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, len(LABELS), n)
    predicted = np.where(rng.random(n) < 0.9, targets, rng.integers(0, len(LABELS), n))
    wrong = predicted != targets
    logits = rng.normal(0, 0.5, (n, len(LABELS)))
    logits[np.arange(n), predicted] += np.where(wrong, scale * 0.25, scale)
    logits[np.arange(n), targets] += np.where(wrong, scale * 0.2, 0.0)
    return logits, targets


def test_temperature_scaling_reduces_nll_and_ece_on_an_overconfident_set():
    logits, targets = overconfident_logits(600)
    t = fit_temperature(logits, targets)
    assert t > 1.5  # overconfident -> soften
    assert nll(logits, targets, t) < nll(logits, targets) * 0.8
    assert expected_calibration_error(softmax(logits, t), targets) < expected_calibration_error(
        softmax(logits), targets
    )
    # And it does not make things worse on already calibrated data.
    held_logits, held_targets = overconfident_logits(600, seed=1)
    assert nll(held_logits, held_targets, t) < nll(held_logits, held_targets)


def test_threshold_tuning_gives_zero_dangerous_errors_on_its_set():
    logits, targets = realistic_logits(400, seed=2)
    t = fit_temperature(logits, targets)
    val_labels = [LABELS[i] for i in targets]
    synth = np.random.default_rng(3).normal(0, 0.5, (30, len(LABELS)))  # flat: nothing familiar
    tuning = build_tuning_set(logits, val_labels, LABELS, edibility, {"amanita_phalloides"}, synth)
    assert tuning.kind.count("open_set_species") == val_labels.count("amanita_phalloides")
    assert tuning.kind.count("synthetic") == 30

    energies = energy_score(logits, t)
    chosen = tune_thresholds(tuning, LABELS, edibility, t, {"p95": float(np.percentile(energies, 95))})
    safety = safety_config(chosen, t)
    checked = evaluate_with_decide(tuning.logits, tuning.truth, LABELS, edibility, safety)

    assert checked["dangerous_errors"] == 0 == chosen["dangerous"]
    assert chosen["dangerous_sharpened"] == 0
    # Not a degenerate "never say edible" answer: some edible photos are still called edible.
    n_edible = sum(t == "edible" for t in tuning.truth)
    assert checked["missed_edible"] == chosen["missed_edible"] < n_edible
    assert "edible" in checked["verdicts"]
    # The naive thresholds (no danger margin) would have produced dangerous errors here.
    naive = SafetyConfig(
        temperature=t, danger_threshold=1.0, abstain_min_probability=0.0, edible_min_probability=0.0
    )
    assert evaluate_with_decide(tuning.logits, tuning.truth, LABELS, edibility, naive)["dangerous_errors"] > 0


def test_synthetic_open_set_images_are_varied_rgb_images():
    images = synthetic_images(12, seed=0, size=64)
    assert len(images) == 12 and all(im.mode == "RGB" and im.size == (64, 64) for im in images)
    assert len({im.tobytes() for im in images}) == 12


def test_when_no_threshold_is_safe_the_model_never_says_edible():
    # Confident mistakes everywhere: no threshold separates them, so "edible" must be switched off.
    logits, targets = overconfident_logits(300, seed=5, scale=14.0)
    rng = np.random.default_rng(6)
    targets = rng.integers(0, len(LABELS), len(targets))  # labels unrelated to the logits
    tuning = build_tuning_set(
        logits, [LABELS[i] for i in targets], LABELS, edibility, set(), np.zeros((0, 5))
    )
    chosen = tune_thresholds(tuning, LABELS, edibility, 1.0, {})
    safety = safety_config(chosen, 1.0)
    checked = evaluate_with_decide(tuning.logits, tuning.truth, LABELS, edibility, safety)
    assert chosen.get("never_edible") and checked["dangerous_errors"] == 0
    assert checked["dangerous_errors_incl_caution"] == 0
    assert "edible" not in checked["verdicts"]
    assert checked["abstention_rate"] > 0.5  # not "deadly" for everything: it abstains instead


def test_selective_accuracy_threshold_is_the_smallest_probability_reaching_the_target():
    top = np.array([0.99, 0.95, 0.9, 0.6, 0.5])
    correct = np.array([True, True, True, False, True])
    # >= 0.9: 3/3 right; >= 0.6: 3/4; >= 0.5: 4/5.
    assert selective_accuracy_threshold(top, correct, 0.9) == 0.9
    assert selective_accuracy_threshold(top, correct, 0.8) == 0.5
    assert selective_accuracy_threshold(top, np.zeros(5, bool), 0.9) is None
    # Tied probabilities are kept or dropped together.
    tied = np.array([0.9, 0.9, 0.8])
    assert selective_accuracy_threshold(tied, np.array([True, False, True]), 0.9) is None


def test_never_edible_fallback_keeps_answers_and_abstains_only_when_unsure():
    # A realistic model plus one confident mistake no threshold can catch: a poisonous photo
    # that the model calls boletus_edulis at ~0.999 -> "edible" must be switched off.
    logits, targets = realistic_logits(400, seed=7)
    mistake = np.zeros(len(LABELS))
    mistake[LABELS.index("boletus_edulis")] = 12.0
    logits = np.vstack([logits, mistake])
    targets = np.append(targets, LABELS.index("amanita_muscaria"))
    val_labels = [LABELS[i] for i in targets]
    synth = np.random.default_rng(8).normal(0, 0.5, (40, len(LABELS)))  # flat: nothing familiar
    tuning = build_tuning_set(logits, val_labels, LABELS, edibility, set(), synth)
    chosen = tune_thresholds(tuning, LABELS, edibility, 1.0, {})

    assert chosen["never_edible"] and chosen["allow_edible"] is False
    # The planted mistake is recorded as the reason, and the model card quotes it.
    case = chosen["hardest_case"]
    assert (case["true_label"], case["predicted"], case["kind"]) == ("amanita_muscaria", "boletus_edulis", "val")
    assert case["probability"] > 0.99 and case["true_edibility"] == "poisonous"
    from vision_model.export import hardest_case_text

    assert hardest_case_text(case) == (
        f"e.g. a poisonous `amanita_muscaria` photo called `boletus_edulis` at {case['probability']:.4f}"
    )
    open_set = dict(case, kind="open_set_species", true_label=None, true_edibility="unknown")
    assert hardest_case_text(open_set).startswith("e.g. a photo of a species outside the label set called")
    # The abstain threshold is the selective-accuracy one, not a blanket "abstain on everything".
    top, correct = softmax(logits).max(1), softmax(logits).argmax(1) == targets
    threshold = chosen["abstain_min_probability"]
    assert 0.0 < threshold < 1.0
    assert correct[top >= threshold].mean() >= SELECTIVE_ACCURACY_TARGET
    assert chosen["selective"]["val_selective_accuracy"] == correct[top >= threshold].mean()
    below = top[top < threshold]
    if len(below):  # one step lower the accuracy falls short
        lower = below.max()
        assert correct[top >= lower].mean() < SELECTIVE_ACCURACY_TARGET
    # The OOD threshold flags about 10 % of validation photos and is kept: it flags the flat images.
    assert chosen["ood"]["val_flag_rate"] <= 0.11
    assert chosen["ood"]["used"] and chosen["ood_threshold"] == chosen["ood"]["candidate"]
    assert chosen["ood"]["open_set_flag_rate"] >= 0.25

    safety = safety_config(chosen, 1.0)
    assert safety.abstain_min_probability == threshold and safety.allow_edible is False
    checked = evaluate_with_decide(tuning.logits, tuning.truth, LABELS, edibility, safety)
    assert checked["dangerous_errors"] == 0 == checked["dangerous_errors_incl_caution"]
    assert checked["edible_verdicts"] == 0
    assert "inedible" in checked["verdicts"]  # confident answers survive
    assert checked["abstention_rate"] < 0.5


def test_danger_recall_counts_warnings_and_false_alarms_count_warnings_on_edible_photos():
    verdicts = ["deadly", "unknown", "poisonous", "edible", "poisonous", "unknown", "edible"]
    truth = ["deadly", "deadly", "poisonous", "poisonous", "edible", "edible", "edible_with_caution"]
    figures = danger_figures(verdicts, truth)
    # 2 of 4 dangerous photos warned ("unknown" is safe but names no danger; "edible" is a dangerous error).
    assert figures["dangerous_photos"] == 4 and figures["danger_recall"] == 0.5
    # 1 of 3 edible photos got a warning ("unknown" is not an alarm).
    assert figures["edible_photos"] == 3 and abs(figures["false_alarm_rate"] - 1 / 3) < 1e-9
    assert danger_figures([], []) == {"dangerous_photos": 0, "danger_recall": None, "edible_photos": 0,
                                      "false_alarm_rate": None}


def test_the_warning_threshold_cuts_false_alarms_and_keeps_danger_recall_on_every_group():
    """Edible photos with a little poisonous doubt stop getting "POISONOUS"; the dangerous ones keep their warning."""
    from vision_model.calibrate import DANGER_RECALL_TARGETS, tune_warning_threshold
    from vision_model.metrics import danger_by_group, masked_softmax

    rng = np.random.default_rng(11)
    rows, val_labels = [], []
    for label, n in (("boletus_edulis", 60), ("cantharellus_cibarius", 40), ("amanita_muscaria", 40),
                     ("amanita_phalloides", 20)):
        for _ in range(n):
            row = rng.normal(0, 0.3, len(LABELS))
            row[LABELS.index(label)] += 6.0
            if label in ("boletus_edulis", "cantharellus_cibarius"):
                # The edible photos' doubt: 5-25 % of the mass on the fly agaric.
                row[LABELS.index("amanita_muscaria")] += 6.0 + np.log(rng.uniform(0.06, 0.3))
            rows.append(row)
            val_labels.append(label)
    logits = np.array(rows)
    fewshot = {"cantharellus_cibarius", "amanita_phalloides"}  # rare: these also form the open set
    tuning = build_tuning_set(logits, val_labels, LABELS, edibility, fewshot, np.zeros((0, len(LABELS))))
    assert tuning.group.count("main") == 100 and tuning.group.count("rare") == 60
    assert tuning.group.count("open_set") == 60
    # The open set keeps what its photos really are: a death cap with its class removed is still deadly.
    assert tuning.species_truth[tuning.group.index("open_set")] in ("edible", "deadly")

    toxic = masked_softmax(tuning.logits, 1.0)[:, :2].sum(1)  # LABELS[:2]: the deadly and the poisonous one
    chosen = tune_warning_threshold(tuning, toxic, 0.05)
    at_danger, at_warning = chosen["warning"]["at_danger_threshold"], chosen["warning"]["at_warning_threshold"]
    assert chosen["warning_threshold"] > 0.05
    for group in ("main", "rare"):
        assert at_danger[group]["false_alarm_rate"] > 0.5  # the 5 % rule warns on most edible photos
        assert at_warning[group]["false_alarm_rate"] < at_danger[group]["false_alarm_rate"]
    for group, target in DANGER_RECALL_TARGETS.items():
        needed = min(target, at_danger[group]["danger_recall"])
        assert at_warning[group]["danger_recall"] >= needed

    # The production rule gives exactly the figures the search chose by.
    safety = SafetyConfig(temperature=1.0, danger_threshold=0.05, warning_threshold=chosen["warning_threshold"],
                          abstain_min_probability=0.5, allow_edible=False)
    verdicts = evaluate_with_decide(tuning.logits, tuning.truth, LABELS, edibility, safety)["verdicts"]
    decided = danger_by_group(verdicts, tuning.species_truth, tuning.group)
    for group in at_warning:
        assert decided[group]["danger_recall"] == at_warning[group]["danger_recall"]
        assert decided[group]["false_alarm_rate"] == at_warning[group]["false_alarm_rate"]


def test_parity_is_counted_on_what_the_reply_shows():
    """A near-tie among guesses the reply calls unreliable is the same answer; a different named species or
    verdict is not."""
    from vision_model.metrics import shown_answers

    probs = np.array([
        [0.05, 0.06, 0.04, 0.80, 0.05],  # named: cantharellus_cibarius
        [0.30, 0.31, 0.09, 0.15, 0.15],  # abstained: guesses only
        [0.30, 0.31, 0.09, 0.15, 0.15],  # not abstained but under 0.5: nothing named
    ])
    shown = shown_answers(probs, ["poisonous", "unknown", "unknown"], [False, True, False], LABELS)
    assert shown == [("poisonous", "cantharellus_cibarius"), ("unknown", None), ("unknown", None)]
    swapped = probs[:, [1, 0, 2, 3, 4]]  # the runner-up and the top guess trade places
    assert shown_answers(swapped, ["poisonous", "unknown", "unknown"], [False, True, False], LABELS)[1:] == shown[1:]
    assert shown_answers(swapped, ["deadly", "unknown", "unknown"], [False, True, False], LABELS)[0] != shown[0]


def test_cached_logits_of_a_checked_backend_are_named_by_the_calibration_too(tmp_path):
    """The checked bfloat16 backend runs photos near safety.json's lines again in float32, so its cached logits
    belong to one calibration: a new safety.json must not reuse them (float32 backends' logits do not depend
    on it, and keep their cache)."""
    from vision_model.heldout import _fingerprint

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    keys = ["a.jpg", "b.jpg"]
    before = {b: _fingerprint(model, keys, b) for b in ("torch", "openvino", "openvino-bf16", "auto")}
    SafetyConfig(temperature=0.7).save(model)
    after = {b: _fingerprint(model, keys, b) for b in before}
    assert after["torch"] == before["torch"] and after["openvino"] == before["openvino"]
    assert after["openvino-bf16"] != before["openvino-bf16"] and after["auto"] != before["auto"]
