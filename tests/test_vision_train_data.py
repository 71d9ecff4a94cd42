"""vision_model.data: listing, min-photos filter, unreadable files, deterministic stratified splits."""

from collections import Counter

import numpy as np
import pytest
from PIL import Image
from vision_support import make_folder, shape_image

from vision_model.data import Preprocess, scan_image_folder, split_samples


def test_min_photos_filter_and_unreadable_files_are_reported(tmp_path):
    root = make_folder(tmp_path / "img", {"boletus_edulis": 4, "amanita_muscaria": 3, "russula_rara": 1})
    (root / "boletus_edulis" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "boletus_edulis" / "notes.txt").write_text("not a photo")

    folder = scan_image_folder(root, min_photos=2)

    assert folder.labels == ["amanita_muscaria", "boletus_edulis"]
    assert folder.dropped_classes == {"russula_rara": 1}
    skipped = {s.path.name: s.reason for s in folder.skipped}
    assert set(skipped) == {"broken.jpg", "notes.txt"}
    assert "corrupt" in skipped["broken.jpg"] or "not_an_image" in skipped["broken.jpg"]
    assert folder.counts() == Counter({"boletus_edulis": 4, "amanita_muscaria": 3})
    report = folder.report()
    assert "broken.jpg" in report and "russula_rara (1)" in report


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        scan_image_folder(tmp_path / "nope")


def test_splits_are_deterministic_stratified_and_keep_a_training_photo(tmp_path):
    counts = {"a_big": 20, "b_mid": 6, "c_two": 2, "d_three": 3, "e_two": 2}
    folder = scan_image_folder(make_folder(tmp_path / "img", counts), min_photos=2, verify=False)

    first = split_samples(folder.samples, seed=3)
    again = split_samples(list(reversed(folder.samples)), seed=3)  # listing order must not matter
    other = split_samples(folder.samples, seed=4)

    assert [s.path for s in first.train] == [s.path for s in again.train]
    assert [s.path for s in first.val] == [s.path for s in again.val]
    assert {s.path for s in first.test} != {s.path for s in other.test}  # the seed matters

    everything = first.train + first.val + first.test
    assert sorted(s.path for s in everything) == sorted(s.path for s in folder.samples)  # a partition
    train, val, test = (Counter(s.label for s in part) for part in (first.train, first.val, first.test))
    for label, n in counts.items():
        assert train[label] >= 1, label
        assert train[label] + val[label] + test[label] == n
    assert val["a_big"] == test["a_big"] == 3  # 15 % of 20 each
    assert val["b_mid"] == test["b_mid"] == 1
    # Classes of 2-3 photos hold out exactly one photo, alternating between val and test.
    held = {label: (val[label], test[label]) for label in ("c_two", "d_three", "e_two")}
    assert all(sum(v) == 1 for v in held.values())
    assert {v for v in held.values()} == {(1, 0), (0, 1)}


def test_preprocess_shapes_and_augmentation_is_seeded(tmp_path):
    import random

    path = tmp_path / "x.jpg"
    shape_image(path, (200, 50, 50), seed=1)
    img = Image.open(path).convert("RGB")
    pre = Preprocess(resize=64, crop=56)
    assert pre.centre(img).shape == (3, 56, 56)
    a = pre.augmented(img, random.Random(5))
    b = pre.augmented(img, random.Random(5))
    assert a.shape == (3, 56, 56) and np.array_equal(a, b)
