"""What the benchmark scripts share: paths, arguments, photos, the model under test, percentiles, the
machine they ran on and the JSON result.

The scripts run as `python benchmarks/bench_x.py` (or `python -m benchmarks.bench_x` from the
repository root); each puts the repository root on sys.path first, then imports this module as
`benchmarks.support`. Importing it keeps Hugging Face offline (HF_HUB_OFFLINE=1 unless set): every
model a benchmark loads is a local directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import platform
import statistics
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
IMAGES = SHARED / "images"  # <species>/*.jpg
RESULTS = ROOT / "benchmarks" / "results"

T = TypeVar("T")

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# --- arguments ----------------------------------------------------------------------------------------------


def option(default: Any, help: str | None = None) -> Any:
    """A BenchArgs field with the help text of its command-line option."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class PhotoArgs:
    """The options of every benchmark that runs the classifier on photos (a base of their BenchArgs)."""

    model: str | None = option(None, "model directory (default: the bundled release, else a tiny random model)")
    images: str = option(str(IMAGES), "folder of <label>/*.jpg photos")


def parse_args(cls: type[T], argv: Sequence[str] | None = None, doc: str | None = None) -> T:
    """The dataclass `cls` filled from the command line: one option per field.

    A field `batch_size` is `--batch-size` and `--batch_size` alike; a bool field defaulting to False
    is a flag; a field typed `X | None` takes an X. `doc` (the script's docstring) is the --help text.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        flags = dict.fromkeys([f"--{field.name.replace('_', '-')}", f"--{field.name}"])
        kind = _value_type(hints[field.name])
        help_text = field.metadata.get("help") or ""
        if field.default not in (None, False) and "default" not in help_text:
            help_text = f"{help_text} (default: %(default)s)".lstrip()
        if kind is bool:
            action = "store_true" if field.default is False else argparse.BooleanOptionalAction
            parser.add_argument(*flags, dest=field.name, action=action, default=field.default, help=help_text)
        else:
            parser.add_argument(*flags, dest=field.name, type=kind, default=field.default, help=help_text)
    return cls(**vars(parser.parse_args(argv)))


def _value_type(hint: Any) -> Callable[[str], Any]:
    """int for `int` and `int | None`; the same for str, float, Path, bool."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        [hint] = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint


# --- photos and the model -----------------------------------------------------------------------------------


def photo_paths(folder: Path, count: int) -> list[Path]:
    """`count` photo files spread evenly over the species folders (repeated when there are fewer); [] if none."""
    paths = sorted(folder.glob("*/*.jpg")) if folder.is_dir() else []
    if not paths:
        return []
    spread = paths[:: max(1, len(paths) // count)]
    return (spread * math.ceil(count / len(spread)))[:count]


def load_photos(folder: Path, count: int) -> tuple[list[bytes], str]:
    """`count` photos as JPEG bytes: the real ones under `folder` when there are any, else generated noise."""
    paths = photo_paths(folder, count)
    if paths:
        return [path.read_bytes() for path in paths], f"real photos from {folder}"
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=85)
        photos.append(buffer.getvalue())
    return photos, "generated 320x256 noise JPEGs"


def choose_model(model: str | None) -> tuple[Path | None, str]:
    """The model directory to measure: `model` when given, else the bundled release; (None, "") if neither."""
    from vision_model.release import BUNDLED_MODEL_DIR, bundled_model_available

    if model:
        return Path(model), f"model at {model}"
    if bundled_model_available():
        return BUNDLED_MODEL_DIR, "bundled release"
    return None, ""


def load_classifier(model: str | None, tmp: Path):
    """(Classifier, where its model came from): `choose_model`'s, else a tiny random model built in `tmp`
    (the figures then measure the overhead around a near-free model, which the note says)."""
    from vision_model.classifier import Classifier

    model_dir, note = choose_model(model)
    if model_dir is not None:
        return Classifier.load(model_dir), note
    from vision_model.testing import make_tiny_model_dir

    tiny = make_tiny_model_dir(tmp / "tiny-model")
    return Classifier.load(tiny, cache_dir=tmp / "onnx"), "TINY random model (no bundled release yet)"


# --- figures ------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, interpolated between the two nearest ranks (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95 and mean of latencies given in seconds, in milliseconds."""
    return {
        "p50_ms": round(1000 * percentile(seconds, 0.50), 2),
        "p95_ms": round(1000 * percentile(seconds, 0.95), 2),
        "mean_ms": round(1000 * statistics.fmean(seconds), 2),
    }


def median_by(runs: Sequence[T], key: Callable[[T], float]) -> T:
    """The run in the middle when sorted by `key` (of an even number, the upper one)."""
    return sorted(runs, key=key)[len(runs) // 2]


# --- the machine and the result -----------------------------------------------------------------------------


def cpu_info() -> dict:
    """CPU model and the vector extensions that change ratios several-fold between machines."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    # VNNI (int8 dot products) and bfloat16 units decide the int8 and --bf16 ratios as much as the vector width.
    return {"model": model, "avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}), "avx512_bf16": "avx512_bf16" in flags,
            "amx": "amx_tile" in flags}


def machine(**extra: Any) -> dict:
    """What the figures depend on: CPUs visible, Python, CPU model and extensions; plus `extra` (load...)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "cpu": cpu_info(), **extra}


def write_result(out: str | Path, result: dict, echo: bool = True) -> Path:
    """Write `result` as indented JSON to `out` (folders made as needed); print it too when `echo`."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    path.write_text(text + "\n", encoding="utf-8")
    if echo:
        print(text)
    return path
