"""Test helpers: a tiny random-weight model directory in the release format.

`make_tiny_model_dir(path)` builds, in about a second on CPU, a Dinov2ForImageClassification
with hidden size 32 and 2 layers on 56x56 crops, its preprocessor_config.json, safety.json
and MODEL_CARD.md; every package's tests load it with `Classifier.load(path)`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from vision_model.verdict import SafetyConfig

# A few real labels covering every edibility class (as the catalog is expected to say).
DEFAULT_TINY_LABELS = (
    "amanita_phalloides",  # deadly
    "amanita_muscaria",  # poisonous
    "boletus_edulis",  # edible
    "cantharellus_cibarius",  # edible
    "hypholoma_fasciculare",  # poisonous
    "fomes_fomentarius",  # inedible
    "morchella_esculenta",  # edible with caution (must be cooked)
)

TINY_IMAGE_SIZE = 56  # 4x4 patches of 14 px
TINY_RESIZE = 64


def tiny_dinov2_config(num_hidden_layers: int, **kwargs):
    """A Dinov2Config of hidden size 32 on 56 px crops (4 x 4 patches of 14 px)."""
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=32,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=TINY_IMAGE_SIZE,
        patch_size=14,
        **kwargs,
    )


def write_tiny_preprocessor_config(path: Path) -> None:
    """preprocessor_config.json of the tiny models: the real processor's steps at 64 -> 56 px."""
    preprocessor = {
        "image_processor_type": "BitImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": TINY_RESIZE},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n", encoding="utf-8")


def make_tiny_model_dir(
    path: str | Path,
    labels: Sequence[str] | None = None,
    *,
    seed: int = 0,
    favour: str | None = None,
    safety: SafetyConfig | None = None,
) -> Path:
    """Write a tiny deterministic model directory at `path` and return it.

    `favour`: a label whose logit gets a large bias, so every photo is predicted as it with
    high confidence (handy for testing a given verdict path end to end).
    `safety`: the safety.json to write (default: conservative defaults, version "tiny-test").
    """
    import torch
    from transformers import Dinov2ForImageClassification

    labels = list(labels or DEFAULT_TINY_LABELS)
    if favour is not None and favour not in labels:
        raise ValueError(f"favour={favour!r} is not one of the labels")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    config = tiny_dinov2_config(
        num_hidden_layers=2,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Dinov2ForImageClassification(config).eval()
        # A wider head than the 0.02-std default, so the random model's predictions differ
        # from photo to photo instead of being almost uniform.
        torch.nn.init.normal_(model.classifier.weight, std=2.0)
        torch.nn.init.zeros_(model.classifier.bias)
        if favour is not None:
            with torch.no_grad():
                model.classifier.bias[labels.index(favour)] = 50.0
    model.save_pretrained(path)

    write_tiny_preprocessor_config(path)
    (safety or SafetyConfig(version="tiny-test")).save(path)
    (path / "MODEL_CARD.md").write_text(
        "# Tiny test model\n\nRandom weights, for tests only. Its predictions mean nothing.\n",
        encoding="utf-8",
    )
    return path
