"""The bundled release (vision_model/release) and the real-data split it was trained on."""

import json
from pathlib import Path

import pytest

from vision_model.release import BUNDLED_MODEL_DIR, MAX_RELEASE_BYTES, read_labels, release_size_bytes

ROOT = Path(__file__).resolve().parent.parent
LABELS_GE2 = [
    line.strip()
    for line in (ROOT / "docs" / "vision_labels_ge2.txt").read_text().splitlines()
    if line.strip()
]

needs_release = pytest.mark.skipif(
    not (BUNDLED_MODEL_DIR / "config.json").is_file(), reason="the bundled release has not been built"
)


@needs_release
def test_release_covers_every_species_with_two_photos_and_fits_the_budget():
    assert sorted(read_labels(BUNDLED_MODEL_DIR)) == sorted(LABELS_GE2)
    assert release_size_bytes(BUNDLED_MODEL_DIR) <= MAX_RELEASE_BYTES
    for name in (
        "model.safetensors",
        "preprocessor_config.json",
        "safety.json",
        "MODEL_CARD.md",
        "metrics.json",
    ):
        assert (BUNDLED_MODEL_DIR / name).is_file(), name


@needs_release
def test_release_safety_was_tuned_with_zero_dangerous_errors_and_card_states_the_licence():
    safety = json.loads((BUNDLED_MODEL_DIR / "safety.json").read_text())
    assert safety["temperature"] > 0
    assert safety["tuning"]["dangerous_errors"] == 0
    assert safety["tuning"]["dangerous_errors_at_T_over_1.5"] == 0
    card = (BUNDLED_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert "non-commercial" in card and "python -m vision_model train" in card


@pytest.mark.shared
def test_real_photo_split_is_deterministic_and_keeps_every_label(shared_data):
    from knowledge_base.catalog import default_catalog
    from vision_model.data import scan_image_folder, split_samples

    folder = scan_image_folder(shared_data / "images", min_photos=2, verify=False)
    # The pool grew and six duplicate folders were merged under current names (shared/README.md,
    # 2026-12-03) after the release was trained: every species of the pool is one the release knows,
    # under its label or under the older label of the same species (same accepted Latin name).
    catalog = default_catalog()
    released_species = {catalog.get(label).scientific_name for label in LABELS_GE2}
    assert all(label in LABELS_GE2 or catalog.get(label).scientific_name in released_species
               for label in folder.labels)
    a, b = split_samples(folder.samples, seed=0), split_samples(folder.samples, seed=0)
    assert [s.path for s in a.test] == [s.path for s in b.test]
    assert {s.label for s in a.train} == set(folder.labels)  # every species has a training photo


@needs_release
def test_the_training_defaults_are_the_released_recipe():
    """The model card's Reproduce line is the default command: the defaults must be what shipped."""
    import dataclasses

    from vision_model.release import read_train_info
    from vision_model.train import TrainArguments

    shipped = read_train_info(BUNDLED_MODEL_DIR)["args"]
    recipe = {
        "mode", "num_hidden_layers", "frozen_layers", "augmented_views", "epochs", "batch_size",
        "learning_rate", "head_learning_rate", "weight_decay", "label_smoothing", "balance_power",
        "seed", "head_init", "layer_decay", "token_keep", "cutmix", "average_last", "min_photos",
        "val_fraction", "test_fraction",
    }  # fmt: skip
    defaults = {f.name: f.default for f in dataclasses.fields(TrainArguments) if f.name in recipe}
    assert {k: shipped[k] for k in recipe} == defaults
