"""The safety rule (vision_model.verdict.decide) and SafetyConfig storage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from vision_support import EDIBILITY, edibility

from vision_model.verdict import SafetyConfig, VerdictResult, decide, energy_score, softmax

LABELS = [*EDIBILITY, "mystery_fungus"]  # the last one is missing from the catalog


SAFETY = SafetyConfig(
    version="t", abstain_min_probability=0.5, danger_threshold=0.05, edible_min_probability=0.9
)


def probs(**mass: float) -> np.ndarray:
    p = np.array([mass.get(label, 0.0) for label in LABELS])
    assert abs(p.sum() - 1.0) < 1e-9, "test distributions must sum to 1"
    return p


def run(p, safety=SAFETY, **kw) -> VerdictResult:
    return decide(p, LABELS, edibility, safety, **kw)


def test_confident_edible():
    result = run(probs(boletus_edulis=0.97, cantharellus_cibarius=0.03))
    assert result == VerdictResult("edible", False, 0.0)


def test_edible_top1_with_ten_percent_poisonous_mass_is_poisonous():
    result = run(probs(boletus_edulis=0.9, amanita_muscaria=0.1))
    assert result.verdict == "poisonous" and not result.abstained
    assert result.danger_probability == pytest.approx(0.1)


def test_deadly_mass_wins_over_everything():
    result = run(probs(boletus_edulis=0.85, amanita_muscaria=0.05, amanita_phalloides=0.1))
    assert result.verdict == "deadly"
    assert result.danger_probability == pytest.approx(0.15)


def test_deadly_and_poisonous_mass_together_cross_the_threshold():
    # Neither alone reaches 0.05; together they do: "poisonous" (not "deadly").
    result = run(probs(boletus_edulis=0.94, amanita_muscaria=0.03, amanita_phalloides=0.03))
    assert result.verdict == "poisonous"


def test_low_confidence_abstains():
    result = run(probs(boletus_edulis=0.45, cantharellus_cibarius=0.3, fomes_fomentarius=0.25))
    assert result.verdict == "unknown" and result.abstained


def test_unknown_label_mass_counts_as_danger():
    result = run(probs(boletus_edulis=0.92, mystery_fungus=0.08))
    assert result.verdict == "unknown" and not result.abstained
    assert result.danger_probability == pytest.approx(0.08)


def test_uncatalogued_top1_is_unknown():
    result = run(probs(mystery_fungus=1.0))
    assert result.verdict == "unknown" and result.danger_probability == pytest.approx(1.0)


def test_edible_but_not_sure_enough_falls_back_to_do_not_eat_class():
    result = run(probs(boletus_edulis=0.8, fomes_fomentarius=0.15, morchella_esculenta=0.05))
    assert result.verdict == "inedible"
    result = run(probs(boletus_edulis=0.85, morchella_esculenta=0.15))
    assert result.verdict == "edible_with_caution"


def test_edible_not_sure_enough_and_nothing_else_is_unknown():
    strict = SafetyConfig(abstain_min_probability=0.5, danger_threshold=0.05, edible_min_probability=0.99)
    result = run(probs(boletus_edulis=0.6, cantharellus_cibarius=0.38, amanita_muscaria=0.02), strict)
    assert result.verdict == "unknown" and not result.abstained


def test_edible_mass_is_summed_over_edible_species():
    result = run(probs(boletus_edulis=0.5, cantharellus_cibarius=0.45, fomes_fomentarius=0.05))
    assert result.verdict == "edible"


def test_non_edible_top1_keeps_its_class():
    assert run(probs(fomes_fomentarius=0.9, boletus_edulis=0.1)).verdict == "inedible"
    assert run(probs(morchella_esculenta=0.96, boletus_edulis=0.04)).verdict == "edible_with_caution"


def test_out_of_distribution_energy_abstains():
    safety = SafetyConfig(ood_threshold=-5.0)
    p = probs(boletus_edulis=0.99, cantharellus_cibarius=0.01)
    assert run(p, safety, energy=-10.0).verdict == "edible"
    result = run(p, safety, energy=-2.0)
    assert result.verdict == "unknown" and result.abstained
    assert run(p, safety).verdict == "edible"  # no energy given: the check cannot apply


def test_nan_probabilities_are_unknown():
    p = np.full(len(LABELS), np.nan)
    assert run(p) == VerdictResult("unknown", True, 1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        decide(np.ones(3) / 3, LABELS, edibility, SAFETY)


def test_softmax_temperature_and_energy():
    logits = np.array([[2.0, 1.0, 0.0]])
    sharp, soft = softmax(logits, 1.0), softmax(logits, 4.0)
    assert sharp.sum() == pytest.approx(1.0) and soft.sum() == pytest.approx(1.0)
    assert soft[0, 0] < sharp[0, 0]
    expected = -np.log(np.exp(logits).sum())
    assert energy_score(logits)[0] == pytest.approx(expected)
    # A flat, low-logit (unfamiliar) input has higher energy than a confident one.
    assert energy_score(np.array([0.1, 0.0, 0.0])) > energy_score(np.array([9.0, 0.0, 0.0]))


def test_safety_config_round_trip_keeps_extra_keys(tmp_path):
    config = SafetyConfig(version="v7", temperature=1.7, danger_threshold=0.02, ood_threshold=-3.5)
    config.extra["tuned_on"] = "validation split"
    path = config.save(tmp_path)
    data = json.loads(path.read_text())
    assert data["temperature"] == 1.7 and data["tuned_on"] == "validation split"
    assert SafetyConfig.load(tmp_path) == config
    assert not list(tmp_path.glob(".safety.*"))  # no temporary file left behind


def test_safety_config_defaults_and_validation(tmp_path):
    assert SafetyConfig.load(tmp_path) == SafetyConfig()  # no safety.json: conservative defaults
    with pytest.raises(ValueError):
        SafetyConfig(temperature=0)
    with pytest.raises(ValueError):
        SafetyConfig(danger_threshold=1.5)


NEVER_EDIBLE = SafetyConfig(
    version="t",
    abstain_min_probability=0.5,
    danger_threshold=0.05,
    edible_min_probability=0.9,
    allow_edible=False,
)


def test_never_edible_confident_edible_top1_is_unknown_not_an_abstention():
    result = run(probs(boletus_edulis=0.99, cantharellus_cibarius=0.01), NEVER_EDIBLE)
    assert result == VerdictResult("unknown", False, 0.0)


def test_never_edible_inedible_top1_stays_inedible():
    result = run(probs(fomes_fomentarius=0.97, boletus_edulis=0.03), NEVER_EDIBLE)
    assert result == VerdictResult("inedible", False, 0.0)


def test_never_edible_never_says_edible_with_caution():
    result = run(probs(morchella_esculenta=0.97, boletus_edulis=0.03), NEVER_EDIBLE)
    assert result == VerdictResult("unknown", False, 0.0)


def test_never_edible_keeps_the_danger_rules():
    result = run(probs(boletus_edulis=0.9, amanita_muscaria=0.1), NEVER_EDIBLE)
    assert result.verdict == "poisonous" and not result.abstained
    assert run(probs(boletus_edulis=0.9, amanita_phalloides=0.1), NEVER_EDIBLE).verdict == "deadly"
    result = run(probs(boletus_edulis=0.9, mystery_fungus=0.1), NEVER_EDIBLE)
    assert result.verdict == "unknown" and result.danger_probability == pytest.approx(0.1)


def test_never_edible_still_abstains_when_unsure_or_unfamiliar():
    unsure = probs(boletus_edulis=0.4, cantharellus_cibarius=0.3, fomes_fomentarius=0.3)
    assert run(unsure, NEVER_EDIBLE) == VerdictResult("unknown", True, 0.0)
    safety = SafetyConfig(allow_edible=False, ood_threshold=-5.0)
    result = run(probs(fomes_fomentarius=0.99, boletus_edulis=0.01), safety, energy=-2.0)
    assert result.verdict == "unknown" and result.abstained


def test_old_never_edible_safety_file_loads_as_allow_edible_false(tmp_path):
    # Written by the earlier calibration: no allow_edible, "never edible" as an OOD threshold of -1e9.
    old = {
        "version": "old",
        "temperature": 0.78,
        "abstain_min_probability": 0.98,
        "danger_threshold": 0.05,
        "edible_min_probability": 0.999,
        "ood_threshold": -1e9,
        "tuning": {"never_edible_fallback": True},
    }
    (tmp_path / "safety.json").write_text(json.dumps(old))
    config = SafetyConfig.load(tmp_path)
    assert config.allow_edible is False and config.ood_threshold is None
    assert config.temperature == 0.78 and config.extra["tuning"]["never_edible_fallback"]
    # A confident edible-looking photo is answered, not abstained on, and not called edible.
    result = run(probs(boletus_edulis=0.98, cantharellus_cibarius=0.02), config, energy=-12.0)
    assert result == VerdictResult("unknown", False, 0.0)


def test_safety_file_without_allow_edible_defaults_to_allowing_it(tmp_path):
    (tmp_path / "safety.json").write_text(json.dumps({"version": "v", "ood_threshold": -4.5}))
    config = SafetyConfig.load(tmp_path)
    assert config.allow_edible is True and config.ood_threshold == -4.5
    round_trip = SafetyConfig(allow_edible=False)
    round_trip.save(tmp_path)
    assert SafetyConfig.load(tmp_path) == round_trip
    with pytest.raises(ValueError):
        SafetyConfig(allow_edible="no")


WARNS_AT_30 = SafetyConfig(version="t", abstain_min_probability=0.5, danger_threshold=0.05,
                           warning_threshold=0.3, edible_min_probability=0.9)


@pytest.mark.parametrize("allow_edible", [True, False])
def test_between_the_danger_and_the_warning_threshold_the_verdict_is_unknown_never_reassuring(allow_edible):
    import dataclasses

    safety = dataclasses.replace(WARNS_AT_30, allow_edible=allow_edible)
    # 20 % poisonous mass under a confident edible or inedible top-1: no warning, and no "edible"/"inedible" either.
    for top in ("boletus_edulis", "fomes_fomentarius"):
        result = run(probs(**{top: 0.8, "amanita_muscaria": 0.2}), safety)
        assert result == VerdictResult("unknown", False, pytest.approx(0.2))
    # 10 % deadly: still "unknown" (the reply names the candidate); at the warning threshold it warns.
    assert run(probs(boletus_edulis=0.9, amanita_phalloides=0.1), safety).verdict == "unknown"
    assert run(probs(boletus_edulis=0.7, amanita_phalloides=0.3), safety).verdict == "deadly"
    assert run(probs(boletus_edulis=0.7, amanita_muscaria=0.2, amanita_phalloides=0.1), safety).verdict == "poisonous"
    # Below the danger threshold nothing changes: the ordinary rule decides.
    assert run(probs(fomes_fomentarius=0.97, amanita_muscaria=0.03), safety).verdict == "inedible"


def test_without_a_warning_threshold_the_danger_threshold_warns_as_before(tmp_path):
    assert SAFETY.warning_threshold is None and SAFETY.warning_level == SAFETY.danger_threshold
    # A safety.json written before the warning threshold existed reads back with the same rule.
    old = {k: v for k, v in SAFETY.to_dict().items() if k != "warning_threshold"}
    (tmp_path / "safety.json").write_text(json.dumps(old))
    loaded = SafetyConfig.load(tmp_path)
    assert loaded.warning_level == 0.05
    assert run(probs(boletus_edulis=0.9, amanita_muscaria=0.1), loaded).verdict == "poisonous"
    # A warning threshold below the danger threshold would let a warning-free "edible" through: refused.
    with pytest.raises(ValueError, match="warning_threshold"):
        SafetyConfig(danger_threshold=0.1, warning_threshold=0.05)
    WARNS_AT_30.save(tmp_path)
    assert SafetyConfig.load(tmp_path).warning_threshold == 0.3
