"""Dataset versions (issue 27): which photos a model learnt from, content-addressed, tracked in MLflow.

A dataset version is the digest of its manifest: the sorted, distinct (SHA-256 of the photo's
bytes, label) pairs of every photo a training run read, in all splits. Moving or renaming files
changes nothing; adding, removing or editing a photo, or relabelling one, changes it.

- The model directory keeps the manifest (`dataset_manifest.csv`: sha256, label, split, folder,
  path), so evaluation can refuse photos the model learnt from whatever their path or folder
  (`learnt_hashes`), and train_info.json / the model card carry the version.
- With tracking on, the same manifest is the MLflow run's input dataset (`mlflow_dataset`):
  `mlflow ui` shows which data each run learnt from, and runs can be searched by its digest.
  MLflow's own pandas digest hashes only the first 10,000 rows into 8 hex digits, so the
  digest given to MLflow is this module's (docs/TRAINING.md: why MLflow's datasets, not DVC).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from pathlib import Path

from vision_model.data import ImageFolder, Splits
from vision_model.release import read_train_info, trained_splits

MANIFEST_FILE = "dataset_manifest.csv"
FIELDS = ["sha256", "label", "split", "folder", "path"]
DATASET_NAME = "mushroom-photos"


def dataset_version(pairs: Iterable[tuple[str, str]]) -> str:
    """Digest of the distinct (sha256, label) pairs: the same photos and labels, the same version."""
    lines = sorted({f"{sha},{label}" for sha, label in pairs})
    return "ds-" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def manifest_rows(folder: ImageFolder, splits: Splits) -> list[dict]:
    roots = folder.roots or [folder.root]
    rows = [
        {"sha256": s.sha256, "label": s.label, "split": name, "folder": s.root,
         "path": str(s.path.relative_to(roots[s.root]))}
        for name, items in splits.as_dict().items()
        for s in items
    ]
    return sorted(rows, key=lambda r: (r["label"], r["sha256"]))


def summary(folder: ImageFolder, rows: list[dict]) -> dict:
    """What train_info.json and the model card record of a run's data."""
    roots = folder.roots or [folder.root]
    return {
        "version": dataset_version((r["sha256"], r["label"]) for r in rows),
        "photos": len(rows),
        "labels": len({r["label"] for r in rows}),
        "folders": [
            {"path": str(root), "photos": sum(r["folder"] == i for r in rows)} for i, root in enumerate(roots)
        ],
    }


def write_manifest(directory: Path, rows: list[dict]) -> Path:
    path = Path(directory) / MANIFEST_FILE
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_manifest(model_dir: str | Path) -> list[dict] | None:
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def learnt_hashes(model_dir: str | Path) -> set[str] | None:
    """SHA-256 of every photo the model's weights learnt from (None: the model has no manifest)."""
    rows = read_manifest(model_dir)
    if rows is None:
        return None
    learnt = trained_splits(read_train_info(model_dir))
    return {r["sha256"] for r in rows if r["split"] in learnt}


def mlflow_dataset(rows: list[dict], version: str, source: str):
    """The manifest (`source`: where its CSV is) as an MLflow dataset (imports mlflow and pandas: only when tracking is on)."""
    import warnings

    import mlflow
    import pandas as pd

    frame = pd.DataFrame(rows, columns=FIELDS).astype(str)
    with warnings.catch_warnings():
        # MLflow registers its local-file source twice and says it cannot choose between the two.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return mlflow.data.from_pandas(frame, source=source, name=DATASET_NAME, digest=version, targets="label")
