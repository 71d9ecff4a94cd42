"""What the vision tests share: a small catalog, tiny photo folders, a tiny backbone, caches off the checkout.

Import it as `from vision_support import ...` (pytest puts tests/ on sys.path). The fixture
`vision_caches_outside_the_checkout` is autouse: a test module that imports it gets the
training caches (`$VISION_CACHE_DIR`: frozen-block tokens, validation logits) and the ONNX
cache (`$VISION_ONNX_CACHE`) in a temporary folder, so no test writes under var/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vision_model.cli import CACHE_ENV
from vision_model.testing import tiny_dinov2_config, write_tiny_preprocessor_config

# The tests' own small catalog: label -> edibility class; anything else is "unknown".
EDIBILITY = {
    "amanita_phalloides": "deadly",
    "amanita_muscaria": "poisonous",
    "boletus_edulis": "edible",
    "cantharellus_cibarius": "edible",
    "fomes_fomentarius": "inedible",
    "morchella_esculenta": "edible_with_caution",
}

# A tiny photo folder for training runs: 5 photos a species -> 3 train, 1 val, 1 test each.
TINY_PHOTOS = {"amanita_phalloides": 5, "boletus_edulis": 5, "cantharellus_cibarius": 5, "amanita_muscaria": 5}


def edibility(label: str) -> str:
    return EDIBILITY.get(label, "unknown")


@pytest.fixture(scope="session", autouse=True)
def vision_caches_outside_the_checkout(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        base = tmp_path_factory.mktemp("vision-caches")
        patch.setenv(CACHE_ENV, str(base / "training"))
        patch.setenv("VISION_ONNX_CACHE", str(base / "onnx"))
        yield base


def shape_image(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    """An 80 x 64 JPEG: a coloured ellipse on a dark random background."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (80, 64), tuple(int(c) for c in rng.integers(0, 80, 3)))
    draw = ImageDraw.Draw(img)
    x, y = (int(v) for v in rng.integers(5, 30, 2))
    draw.ellipse((x, y, x + 30, y + 25), fill=colour)
    img.save(path, quality=90)


def make_folder(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """<root>/<label>/<label>_<i>.jpg, `counts[label]` photos each, one ellipse colour per label
    (another `seed`: other photos, for a second folder)."""
    colours = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 220, 40), (200, 40, 200)]
    for k, (label, n) in enumerate(counts.items()):
        (root / label).mkdir(parents=True)
        for i in range(n):
            shape_image(root / label / f"{label}_{i}.jpg", colours[k % len(colours)], seed=10_000 * seed + 100 * k + i)
    return root


def tiny_backbone(path: Path) -> Path:
    """A random 3-block Dinov2Model (hidden size 32, 56 px crops) saved like the real backbone."""
    import torch
    from transformers import Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(tiny_dinov2_config(num_hidden_layers=3)).save_pretrained(path)
    write_tiny_preprocessor_config(path)
    return path
