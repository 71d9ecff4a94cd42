"""The examples calibration and evaluation score a model on, and the arguments that choose them.

- `HeldOutArguments`: the options calibrate and evaluate share (model, photos and split, open
  set, logits backend and cache);
- `model_logits`: the logits of photos exactly as the production Classifier computes them,
  cached under <cache_dir>/<fingerprint of the weights and the photo keys>.npy, so that
  re-calibrating after a catalog change costs a minute;
- the simulated open set, because the real held-out photos include species outside the label
  set: every photo of a few-shot species scored again with its own class removed (exactly what
  a photo of an unseen species looks like to the model), and `synthetic_images` (things that are
  not mushrooms); their truth is "unknown" (`build_tuning_set`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from vision_model import cli
from vision_model.release import BUNDLED_MODEL_DIR


@dataclass
class HeldOutArguments:
    model: str = field(default=str(BUNDLED_MODEL_DIR), metadata={"help": "model directory"})
    data_dir: list[str] = field(default_factory=list, metadata=cli.DATA_FIELD_METADATA)
    splits: str | None = field(
        default=None,
        metadata={"help": "splits.json from the training run (default: recomputed from the seed)"},
    )
    seed: int = field(default=0, metadata={"help": "split seed (when splits.json is not given)"})
    min_photos: int = 2
    synthetic_images: int = field(default=64, metadata={"help": "synthetic non-mushroom images for open set"})
    backend: str = field(default="torch", metadata={"help": "inference backend for the logits"})
    cache_dir: str = field(
        default_factory=lambda: cli.cache_dir("vision-logits"),
        metadata={"help": "cache of the logits, keyed by the weights ($VISION_CACHE_DIR/vision-logits when set)"},
    )

    def __post_init__(self):
        self.data_dir = cli.data_folders(self.data_dir)


class LearntPhotos(ValueError):
    """Photos a model learnt from, offered as held-out ones."""


def learnt_photos(
    model_dir: Path, items: Sequence[tuple[Path, str]], hashes: Sequence[str] | None = None
) -> list[Path] | None:
    """The photos among `items` whose SHA-256 (`hashes`, when the caller has them) the model learnt from
    (None: it keeps no manifest, so only its splits can tell; see vision_model.dataset)."""
    from vision_model.data import file_sha256
    from vision_model.dataset import learnt_hashes

    learnt = learnt_hashes(model_dir)
    if learnt is None:
        return None
    hashes = hashes if hashes is not None else [file_sha256(path) for path, _ in items]
    return [path for (path, _), digest in zip(items, hashes, strict=True) if digest in learnt]


def synthetic_images(n: int, seed: int = 0, size: int = 256) -> list[Image.Image]:
    """Things that are not mushrooms: noise, flat colours, gradients, stripes, blurred textures."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        kind = i % 6
        if kind == 0:  # uniform noise
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        elif kind == 1:  # flat colour
            arr = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size, size, 3)).copy()
        elif kind == 2:  # linear gradient between two colours
            a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            t = np.linspace(0, 1, size)[:, None, None]
            arr = np.broadcast_to(a * (1 - t) + b * t, (size, size, 3)).astype(np.uint8)
        elif kind == 3:  # stripes / checks
            period = int(rng.integers(4, 40))
            x = (np.arange(size) // period) % 2
            grid = (
                (x[:, None] ^ x[None, :]) if rng.random() < 0.5 else np.broadcast_to(x[None, :], (size, size))
            )
            a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            arr = np.where(grid[..., None] == 1, a, b).astype(np.uint8)
        elif kind == 4:  # sky-like: blue-ish gradient with soft blotches
            base = np.array([90, 140, 210]) + rng.integers(-30, 30, 3)
            noise = np.asarray(
                Image.fromarray(rng.integers(0, 256, (size // 16, size // 16), dtype=np.uint8)).resize(
                    (size, size), Image.BICUBIC
                ),
                dtype=np.float64,
            )[..., None]
            arr = np.clip(base + (noise - 128) * 0.4, 0, 255).astype(np.uint8)
        else:  # bark-like: vertically stretched brown noise
            noise = rng.integers(0, 256, (size, size // 8), dtype=np.uint8)
            img = (
                Image.fromarray(noise)
                .resize((size, size), Image.BILINEAR)
                .filter(ImageFilter.GaussianBlur(1))
            )
            shade = np.asarray(img, dtype=np.float64)[..., None] / 255.0
            arr = (np.array([110, 80, 50]) * (0.5 + shade)).clip(0, 255).astype(np.uint8)
        images.append(Image.fromarray(np.ascontiguousarray(arr), mode="RGB"))
    return images


def _fingerprint(model_dir: Path, items: Sequence[str], backend: str = "torch") -> str:
    from vision_model.classifier import CHECKED_BACKENDS  # their logits depend on the calibration too

    h = hashlib.sha256()
    files = ("model.safetensors", "config.json", "preprocessor_config.json")
    for name in files + (("safety.json",) if backend in CHECKED_BACKENDS else ()):
        path = model_dir / name
        if path.exists():
            st = path.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update("\n".join(items).encode())
    return h.hexdigest()[:16]


def model_logits(
    model_dir: Path, images: Sequence, keys: Sequence[str], cache_dir: Path | None, backend: str = "torch"
) -> np.ndarray:
    """Logits exactly as the production Classifier computes them (cached by weights + keys; no
    cache when cache_dir is None)."""
    cache_path = None
    if cache_dir is not None:  # one file per backend: int8 logits are not float32's
        suffix = "" if backend == "torch" else f"-{backend}"
        cache_path = Path(cache_dir) / f"{_fingerprint(model_dir, list(keys), backend)}{suffix}.npy"
        if cache_path.exists():
            return np.load(cache_path)
    from tqdm.auto import tqdm

    from vision_model.classifier import Classifier

    # The catalog's edibility: a checked fast backend (openvino-bf16) decides by the verdict's lines which
    # photos to run again in float32.
    clf = Classifier.load(model_dir, backend=backend)
    chunks = []
    step = 32
    for start in tqdm(range(0, len(images), step), desc="logits", unit="batch", leave=False):
        chunks.append(clf.logits(list(images[start : start + step])))
    logits = np.concatenate(chunks) if chunks else np.zeros((0, len(clf.labels)), dtype=np.float32)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_path, logits)
    return logits


def photo_logits(
    model_dir: Path, items: Sequence[tuple[Path, str]], cache_dir: Path | None, backend: str
) -> np.ndarray:
    """float64 logits of (path, label) photos, cached."""
    paths = [path for path, _ in items]
    return model_logits(model_dir, paths, [str(p) for p in paths], cache_dir, backend).astype(np.float64)


def synthetic_logits(model_dir: Path, n: int, seed: int, cache_dir: Path | None, backend: str) -> np.ndarray:
    """float64 logits of `synthetic_images(n, seed)`, cached."""
    images = synthetic_images(n, seed=seed)
    keys = [f"synthetic:{seed}:{i}" for i in range(len(images))]
    return model_logits(model_dir, images, keys, cache_dir, backend).astype(np.float64)


@dataclass
class TuningSet:
    """Examples for threshold tuning: logits over `labels` (masked classes = -inf) and true edibility."""

    logits: np.ndarray  # (N, C)
    truth: list[str]  # edibility class of the true species ("unknown" for open-set examples)
    kind: list[str]  # "val", "open_set_species", "synthetic"
    target: np.ndarray  # index of the true label (-1 for open-set examples)
    # What the photo really shows, for the danger figures: the species' own edibility class, also for an
    # open-set example (a rare species scored with its class removed is still, say, a deadly mushroom);
    # "unknown" for synthetic images.
    species_truth: list[str] = field(default_factory=list)
    # "main" / "rare" (val photos of a main or a few-shot species), "open_set", "synthetic".
    group: list[str] = field(default_factory=list)


def build_tuning_set(
    val_logits: np.ndarray,
    val_labels: Sequence[str],
    labels: Sequence[str],
    edibility: Callable[[str], str],
    fewshot: set[str],
    synthetic_logits: np.ndarray,
) -> TuningSet:
    index = {label: i for i, label in enumerate(labels)}
    rows, truth, kind = [val_logits], [edibility(lab) for lab in val_labels], ["val"] * len(val_labels)
    target = [index[lab] for lab in val_labels]
    species_truth = list(truth)
    group = ["rare" if lab in fewshot else "main" for lab in val_labels]
    masked = []
    for logit, lab in zip(val_logits, val_labels, strict=True):
        if lab in fewshot:
            row = logit.astype(np.float64).copy()
            row[index[lab]] = -np.inf  # the species is "not in the label set"
            masked.append(row)
            species_truth.append(edibility(lab))
    if masked:
        rows.append(np.stack(masked))
        truth += ["unknown"] * len(masked)
        kind += ["open_set_species"] * len(masked)
        group += ["open_set"] * len(masked)
    if len(synthetic_logits):
        rows.append(synthetic_logits)
        truth += ["unknown"] * len(synthetic_logits)
        kind += ["synthetic"] * len(synthetic_logits)
        species_truth += ["unknown"] * len(synthetic_logits)
        group += ["synthetic"] * len(synthetic_logits)
    target += [-1] * (len(truth) - len(target))
    return TuningSet(
        np.concatenate([r.astype(np.float64) for r in rows]), truth, kind, np.array(target, dtype=int),
        species_truth, group,
    )
