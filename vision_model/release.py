"""Where the bundled model lives, and small helpers about model directories.

The release itself (weights, preprocessor_config.json, safety.json, MODEL_CARD.md) is the
folder `vision_model/release/`, written by the training pipeline. That folder must stay a
plain data folder (no __init__.py), so `import vision_model.release` finds this module.
"""

from __future__ import annotations

import json
from pathlib import Path

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "release"
MAX_RELEASE_BYTES = 50 * 1024 * 1024  # the committed release must stay within 50 MB

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


# What a model directory derived from another (a soup, a blended head) takes over from it unchanged.
DERIVED_COPIES = ("config.json", "preprocessor_config.json")


class ModelNotFound(FileNotFoundError):
    """The model directory is missing or incomplete; the message says what to do."""


def resolve_model_dir(model_dir: str | Path | None = None) -> Path:
    """None -> the bundled release. Checks that the directory holds a loadable model."""
    path = Path(model_dir) if model_dir is not None else BUNDLED_MODEL_DIR
    if not (path / "config.json").is_file():
        hint = (
            "the bundled release has not been built yet (train one with `python -m vision_model train`)"
            if model_dir is None
            else "expected config.json from save_pretrained"
        )
        raise ModelNotFound(f"No vision model found at {path}: {hint}.")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelNotFound(f"No model weights ({' or '.join(WEIGHT_FILES)}) in {path}.")
    return path


def bundled_model_available() -> bool:
    try:
        resolve_model_dir(None)
    except ModelNotFound:
        return False
    return True


def read_labels(model_dir: str | Path) -> list[str]:
    """The class labels in logit order, from config.json's id2label."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def _read_json(model_dir: str | Path, name: str) -> dict:
    path = Path(model_dir) / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def read_train_info(model_dir: str | Path) -> dict:
    """train_info.json of a model directory (how it was trained), or {} when it has none."""
    return _read_json(model_dir, "train_info.json")


def trained_splits(info: dict) -> set[str]:
    """The splits a model's weights learnt from, by its train_info.json (a soup: its first run's):
    a refit learns from the validation photos too, a final fit (--include_test) from all three."""
    splits = {"train"}
    if info.get("refit"):
        splits.add("val")
    if info.get("include_test"):
        splits.add("test")
    return splits


def read_preprocessor_config(model_dir: str | Path) -> dict:
    """preprocessor_config.json of a model directory (the input size it was trained at), or {}."""
    return _read_json(model_dir, "preprocessor_config.json")


def release_size_bytes(model_dir: str | Path = BUNDLED_MODEL_DIR) -> int:
    """Total size of the files in a model directory (what the 50 MB budget counts)."""
    return sum(p.stat().st_size for p in Path(model_dir).rglob("*") if p.is_file())


def write_derived_model(out: Path, weights: dict, src: Path, info: dict, copied=DERIVED_COPIES) -> None:
    """A model directory made from `src`'s: new `weights` (a safetensors state dict), src's `copied` files
    (those it has) and `info` as train_info.json. Any safety.json there goes: new weights need calibrating."""
    import shutil

    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / "safety.json").unlink(missing_ok=True)  # a stale calibration must not survive
    save_file(weights, str(out / WEIGHT_FILES[0]), metadata={"format": "pt"})
    for name in copied:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    (out / "train_info.json").write_text(json.dumps(info, indent=2))
