"""Static int8 MiniLM for OpenVINO: the plain ONNX graph quantised once by NNCF, then served by OpenVINO.

Why: ONNX Runtime's dynamic int8 (int8 weights, float activations) ran the embedding at 1.9-2.7x
sentence-transformers' float32 encode on the 2-core machines here; the same model quantised statically
(activations too, with SmoothQuant and bias correction, NNCF's transformer recipe) runs at 3.7-4.7x in
OpenVINO (3.2-3.6x for a whole first build) on an AVX-512 VNNI CPU, with vectors at least as close to
float32's (benchmarks/results/ingest.json, docs/KNOWLEDGE_BASE.md; not yet measured on an AVX2-only CPU).

Static quantisation needs calibration text. It is a fixed file in the repository (`int8_calibration.txt`,
378 lines written from the species catalog: single sections and whole profiles, short and long), never
the passages being indexed: the vectors must be the same on every machine and for every set of guides, or
a shared index would mix two embeddings. Changing the file, the recipe or the library versions names a new
cached graph (`recipe()`); changing what the vectors are needs a new embedding id in embeddings.py.

No torch and no NNCF at query time: the quantised graph is cached as OpenVINO IR (.xml + .bin) and only
`openvino` is imported to serve it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path

import numpy as np

CALIBRATION_FILE = Path(__file__).with_name("int8_calibration.txt")
# NNCF's defaults for transformers (MIXED preset: symmetric weights, asymmetric activations; SmoothQuant).
QUANTIZE_RECIPE = "nncf-transformer-mixed-smoothquant-v1"


def calibration_texts() -> list[str]:
    return [line for line in CALIBRATION_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def recipe() -> str:
    """What the quantised graph depends on besides the weights: the recipe, the calibration text, the tools."""
    text = hashlib.sha256(CALIBRATION_FILE.read_bytes()).hexdigest()[:16]
    return f"{QUANTIZE_RECIPE}|calibration:{text}|openvino{version('openvino')}|nncf{version('nncf')}"


def quantize(plain_onnx: Path, out_xml: Path, feeds: Iterable[dict[str, np.ndarray]]) -> Path:
    """Quantise `plain_onnx` (unfused float32 graph) to static int8 calibrated on `feeds` (one input dict per
    passage); writes `out_xml` and its `.bin` so that a reader sees either no graph or a whole one."""
    # NNCF reports usage to Google Analytics unless it believes it runs in CI; nothing may leave this machine.
    os.environ.setdefault("NNCF_CI", "1")
    import nncf
    import openvino as ov
    import rich

    feeds = list(feeds)
    # NNCF draws its own progress bars (rich, on the shared console) and logs at INFO: in the console bot they
    # would cut through the conversation. The build's "preparing the embedding model" stage already shows
    # this wait, so both are kept quiet while it runs.
    console, level = rich.get_console(), nncf.common.logging.nncf_logger.level
    quiet, console.quiet = console.quiet, True
    nncf.set_log_level(logging.WARNING)
    try:
        model = nncf.quantize(ov.Core().read_model(str(plain_onnx)), nncf.Dataset(feeds),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds))
    finally:
        console.quiet = quiet
        nncf.set_log_level(level)
    with tempfile.TemporaryDirectory(dir=out_xml.parent, prefix=f".{out_xml.stem}.") as tmp:
        tmp_xml = Path(tmp) / out_xml.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        for path in (tmp_xml.with_suffix(".bin"), tmp_xml):
            os.chmod(path, 0o644)
        # The .bin first: the .xml is what readers look for, so once it is there the weights are too.
        os.replace(tmp_xml.with_suffix(".bin"), out_xml.with_suffix(".bin"))
        os.replace(tmp_xml, out_xml)
    return out_xml
