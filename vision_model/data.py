"""Image-folder data for training: listing, deterministic stratified splits, decoding, augmentation.

Layout: `<root>/<label>/*.jpg` (labels are genus_species), optionally `<root>/CLASSES.csv`
(only its `genus` column is read here; its edibility column is NOT a source of truth -
edibility always comes from knowledge_base.catalog).

Splits are drawn per class from a seeded RNG, so the same seed and files always give the same
split regardless of listing order or of which other classes exist. Small classes:

- 1 photo   -> dropped by the default min_photos=2 filter (nothing to validate on);
- 2 photos  -> 1 train + 1 held out; the held-out photo goes to val or test, alternating
               over the small classes in label order (so both splits see few-shot species);
- 3 photos  -> 2 train + 1 held out (same alternation);
- 4-7       -> 1 val, 1 test, the rest train;
- >= 8      -> round(val_fraction * n) val and round(test_fraction * n) test (at least 1 each).

Every class therefore keeps at least one training photo.

Several folders (`train --data A --data B`, e.g. the shared pool and accepted users' feedback):
the first folder is split exactly as above, so adding a folder never moves its photos between
splits. A photo of a later folder goes to val or test by its content hash (`val_fraction` and
`test_fraction` of the hash space), so it too keeps its split when more photos arrive; a class
whose photos all landed in val/test gets one back in train. A photo whose SHA-256 already
appeared in an earlier folder is skipped as a duplicate (the same photo in train and test would
be a leak).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from vision_model.images import ImageError, decode_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MAIN_CLASS_MIN_PHOTOS = 50  # classes with at least this many photos are the "main" classes
SPLITS_FILE = "splits.json"


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    sha256: str = ""  # of the file's bytes: the photo's identity in dataset manifests
    root: int = 0  # index of the data folder it came from


@dataclass
class SkippedFile:
    path: Path
    reason: str


@dataclass
class ImageFolder:
    root: Path
    samples: list[Sample]
    labels: list[str]  # sorted, after the min-photos filter
    dropped_classes: dict[str, int] = field(default_factory=dict)  # label -> photo count (below the minimum)
    skipped: list[SkippedFile] = field(default_factory=list)  # unreadable / not an image
    genus: dict[str, str] = field(default_factory=dict)  # label -> genus
    roots: list[Path] = field(default_factory=list)  # every folder, in the order given (root == roots[0])

    def counts(self) -> Counter:
        return Counter(s.label for s in self.samples)

    def report(self) -> str:
        where = ", ".join(str(r) for r in self.roots or [self.root])
        lines = [f"{len(self.samples)} photos in {len(self.labels)} classes under {where}"]
        if self.dropped_classes:
            lines.append(
                f"dropped {len(self.dropped_classes)} classes below the minimum photo count: "
                + ", ".join(f"{k} ({v})" for k, v in sorted(self.dropped_classes.items()))
            )
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable files:")
            lines.extend(f"  {s.path}: {s.reason}" for s in self.skipped)
        return "\n".join(lines)


def main_classes(folder: ImageFolder) -> list[str]:
    counts = folder.counts()
    return sorted(label for label in folder.labels if counts[label] >= MAIN_CLASS_MIN_PHOTOS)


def genus_of(label: str) -> str:
    return label.split("_", 1)[0]


def read_classes_csv(root: Path) -> dict[str, str]:
    """label -> genus from CLASSES.csv when present (else derived from the label)."""
    path = root / "CLASSES.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["label"]: row.get("genus") or genus_of(row["label"]) for row in csv.DictReader(fh)}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def scan_image_folder(root: str | Path, *, min_photos: int = 2, verify: bool = True) -> ImageFolder:
    """One folder: see scan_image_folders."""
    return scan_image_folders([root], min_photos=min_photos, verify=verify)


def _list_folder(root: Path, index: int, verify: bool) -> tuple[dict[str, list[Sample]], list[SkippedFile]]:
    by_label: dict[str, list[Sample]] = {}
    skipped: list[SkippedFile] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(SkippedFile(path, f"not an image file suffix ({path.suffix or 'none'})"))
                continue
            if verify:
                try:
                    decode_image(path)
                except ImageError as exc:
                    skipped.append(SkippedFile(path, f"{exc.reason}: {exc}"))
                    continue
            by_label.setdefault(class_dir.name, []).append(Sample(path, class_dir.name, file_sha256(path), index))
    return by_label, skipped


def scan_image_folders(
    roots: str | Path | list[str | Path], *, min_photos: int = 2, verify: bool = True
) -> ImageFolder:
    """List `<root>/<label>/*` photos of every folder; drop classes with fewer than `min_photos`.

    With `verify`, every file is decoded once through images.decode_image, so unreadable files
    are reported here (not half-way through training). Every file is hashed (SHA-256; about 1 s
    for the 82 MB pool); a later folder's copy of a photo already listed is skipped.
    """
    roots = [Path(r) for r in ([roots] if isinstance(roots, str | Path) else roots)]
    if not roots:
        raise ValueError("no image folder given")
    by_label: dict[str, list[Sample]] = {}
    skipped: list[SkippedFile] = []
    seen: dict[str, Path] = {}
    for index, root in enumerate(roots):
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        listed, bad = _list_folder(root, index, verify)
        skipped += bad
        for label, samples in listed.items():
            for sample in samples:
                if index > 0 and sample.sha256 in seen:
                    skipped.append(SkippedFile(sample.path, f"duplicate of {seen[sample.sha256]}"))
                    continue
                seen.setdefault(sample.sha256, sample.path)
                by_label.setdefault(label, []).append(sample)
    dropped = {label: len(items) for label, items in by_label.items() if len(items) < min_photos}
    kept = sorted(label for label in by_label if label not in dropped)
    samples = [s for label in kept for s in by_label[label]]
    genus = {label: genus_of(label) for label in kept}
    for root in reversed(roots):  # the first folder's CLASSES.csv wins
        genus.update({k: v for k, v in read_classes_csv(root).items() if k in genus})
    for s in skipped:
        log.warning("skipped %s: %s", s.path, s.reason)
    return ImageFolder(roots[0], samples, kept, dropped, skipped, genus, roots)


def _class_rng(seed: int, label: str) -> random.Random:
    # Per-class RNG: a class's split does not depend on which other classes exist.
    digest = hashlib.sha256(f"{seed}:{label}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


@dataclass
class Splits:
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]

    def as_dict(self) -> dict[str, list[Sample]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def split_samples(
    samples: list[Sample], *, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> Splits:
    """Deterministic stratified split (see the module docstring for the small-class rules)."""
    by_label: dict[str, list[Sample]] = {}
    later = [s for s in samples if s.root > 0]
    for s in samples:
        if s.root == 0:
            by_label.setdefault(s.label, []).append(s)
    train: list[Sample] = []
    val: list[Sample] = []
    test: list[Sample] = []
    small_index = 0  # alternates the single held-out photo of 2-3 photo classes between val and test
    for label in sorted(by_label):
        items = sorted(by_label[label], key=lambda s: s.path.name)
        _class_rng(seed, label).shuffle(items)
        n = len(items)
        if n == 1:
            train += items
            continue
        if n <= 3:
            held, rest = items[:1], items[1:]
            (val if small_index % 2 == 0 else test).extend(held)
            small_index += 1
            train += rest
            continue
        if n <= 7:
            n_val = n_test = 1
        else:
            n_val = max(1, round(val_fraction * n))
            n_test = max(1, round(test_fraction * n))
        val += items[:n_val]
        test += items[n_val : n_val + n_test]
        train += items[n_val + n_test :]
    if later:
        _split_by_hash(later, seed, val_fraction, test_fraction, train, val, test)
    return Splits(train, val, test)


def _split_by_hash(
    samples: list[Sample], seed: int, val_fraction: float, test_fraction: float,
    train: list[Sample], val: list[Sample], test: list[Sample],
) -> None:
    """Later folders' photos: val / test / train by where the hash of (seed, content) falls, so a
    photo keeps its split whatever else is added; every class keeps one training photo."""
    has_train = {s.label for s in train}
    held: dict[str, list[tuple[Sample, list[Sample]]]] = {}
    for sample in sorted(samples, key=lambda s: s.sha256):
        u = int(hashlib.sha256(f"{seed}:{sample.sha256}".encode()).hexdigest()[:15], 16) / 16**15
        target = val if u < val_fraction else test if u < val_fraction + test_fraction else train
        if target is train:
            has_train.add(sample.label)
        else:
            held.setdefault(sample.label, []).append((sample, target))
        target.append(sample)
    for label, items in held.items():
        if label not in has_train:
            sample, target = items[0]
            target.remove(sample)
            train.append(sample)


def write_splits(folder: ImageFolder, splits: Splits, out_dir: Path) -> None:
    """<out_dir>/splits.json: each split's [path relative to the folder, label], what was left out."""
    roots = folder.roots or [folder.root]

    def entry(s: Sample) -> list:
        rel = [str(s.path.relative_to(roots[s.root])), s.label]
        return rel + [s.root] if s.root else rel  # one folder: the same file as before several

    data = {name: [entry(s) for s in items] for name, items in splits.as_dict().items()}
    data["roots"] = [str(r) for r in roots]
    data["dropped_classes"] = folder.dropped_classes
    data["skipped"] = [[str(s.path), s.reason] for s in folder.skipped]
    (out_dir / SPLITS_FILE).write_text(json.dumps(data, indent=1))


def load_splits(
    data_dir: str | Path | list[str | Path], splits_path: str | Path | None, seed: int, min_photos: int
) -> dict[str, list[tuple[Path, str]]]:
    """(path, label) of each split: from a training run's splits.json, else recomputed from the seed.

    The folders given replace those recorded in splits.json in order (the same run read on
    another machine); folders not given are read where the run found them."""
    given = [Path(d) for d in ([data_dir] if isinstance(data_dir, str | Path) else data_dir)]
    if splits_path and Path(splits_path).exists():
        data = json.loads(Path(splits_path).read_text())
        roots = given + [Path(r) for r in data.get("roots", [])[len(given) :]]
        return {
            name: [(roots[entry[2] if len(entry) > 2 else 0] / entry[0], entry[1]) for entry in data[name]]
            for name in ("train", "val", "test")
        }
    folder = scan_image_folders(given, min_photos=min_photos, verify=False)
    return {
        name: [(s.path, s.label) for s in items]
        for name, items in split_samples(folder.samples, seed=seed).as_dict().items()
    }


# --- preprocessing and augmentation (PIL + numpy; no torchvision) -------------------------------


@dataclass
class Preprocess:
    """Resize shortest edge, centre-crop, normalise: the same steps as the model's image processor."""

    resize: int = 256
    crop: int = 224
    mean: np.ndarray = field(default_factory=lambda: IMAGENET_MEAN.copy())
    std: np.ndarray = field(default_factory=lambda: IMAGENET_STD.copy())

    @classmethod
    def from_processor(cls, processor) -> Preprocess:
        size = getattr(processor, "size", {}) or {}
        crop = getattr(processor, "crop_size", {}) or {}
        return cls(
            resize=int(size.get("shortest_edge", 256)),
            crop=int(crop.get("height", 224)),
            mean=np.asarray(getattr(processor, "image_mean", IMAGENET_MEAN), dtype=np.float32),
            std=np.asarray(getattr(processor, "image_std", IMAGENET_STD), dtype=np.float32),
        )

    def to_array(self, img: Image.Image) -> np.ndarray:
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        return ((arr - self.mean) / self.std).transpose(2, 0, 1)

    def centre(self, img: Image.Image) -> np.ndarray:
        w, h = img.size
        scale = self.resize / min(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - self.crop) // 2, (h - self.crop) // 2
        return self.to_array(img.crop((left, top, left + self.crop, top + self.crop)))

    def augmented(self, img: Image.Image, rng: random.Random) -> np.ndarray:
        """Random resized crop (35-100 % of the area), horizontal flip, mild colour jitter.

        Colour jitter stays mild on purpose: cap colour separates some species.
        """
        w, h = img.size
        area = w * h
        for _ in range(10):
            target = area * rng.uniform(0.35, 1.0)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = round((target * ratio) ** 0.5), round((target / ratio) ** 0.5)
            if 0 < cw <= w and 0 < ch <= h:
                left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
                break
        else:
            cw = ch = min(w, h)
            left, top = (w - cw) // 2, (h - ch) // 2
        img = img.crop((left, top, left + cw, top + ch)).resize((self.crop, self.crop), Image.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
        img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.85, 1.15))
        return self.to_array(img)


def load_rgb(path: Path) -> Image.Image:
    return decode_image(path)
