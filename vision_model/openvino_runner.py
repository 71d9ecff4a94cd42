"""The classifier's ONNX graph served by OpenVINO, in float32 or in bfloat16 checked against float32.

Why: on the 2-core AVX-512 machine here OpenVINO runs the float32 graph in 61 ms a photo against ONNX
Runtime's 88 ms, with the same logits to 1e-5, and in 40 ms where the CPU has bfloat16 units (AVX512-BF16,
AMX). bfloat16 moves a photo's calibrated probabilities a little (half the L1 distance: median 7e-5, at
most 0.018 over 1,465 photos), so a photo that sits on one of the verdict's lines could get another reply.
`Classifier` therefore checks each bfloat16 answer (verdict.decision_margin) and runs float32 again for
the few photos within FAST_PROBABILITY_BOUND / FAST_ENERGY_BOUND of a line: the replies are float32's.

OpenVINO's CPU plugin picks bfloat16 by itself on such CPUs; here the precision is always set explicitly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from config import onnx_files

# How far bfloat16 may move what the verdict reads, as used by the check: 1.7x and 2.8x the largest changes
# measured on 1,465 photos of the pool with the bundled release (half the L1 distance between the calibrated
# distributions at most 0.0177, 99.9th percentile 0.011; energy at most 0.054), 2-3x on 400 photos of a second
# model (0.016; 0.061). Must stay below the smallest line (the 5 % danger threshold).
FAST_PROBABILITY_BOUND = 0.03
FAST_ENERGY_BOUND = 0.15


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 itself (OpenVINO reports BF16 only for AVX512-BF16 or AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoRunner:
    """pixel_values (N, 3, H, W) -> logits (N, n_labels) from the batch-of-one ONNX graph, one photo at a time.
    Used under the Classifier's lock (an infer request is not for concurrent use)."""

    def __init__(self, onnx_path: Path, threads: int, precision: str = "f32", *, lazy: bool = False) -> None:
        """`lazy`: compile on the first call instead (the float32 check, which about 1 photo in 20 needs,
        then adds nothing to start-up: 0.2 s from OpenVINO's kernel cache)."""
        if precision not in ("f32", "bf16"):
            raise ValueError(f"precision must be f32 or bf16, got {precision!r}")
        self.name = "openvino" if precision == "f32" else "openvino-bf16"
        self.path = onnx_path
        self._threads, self._precision = threads, precision
        self._request = None if lazy else self._compile()

    def _compile(self):
        return onnx_files.openvino_request(self.path, self._threads, self._precision)

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        if self._request is None:
            self._request = self._compile()
        return np.concatenate([self._request.infer({0: pixel_values[i : i + 1]})[0].copy()
                               for i in range(len(pixel_values))])
