"""Mushroom photo identification: safe image decoding, the species classifier and its safety verdict.

Heavy modules (torch, transformers, onnxruntime) are imported only when used, so
`import vision_model` and `python -m vision_model --help` stay fast.

    from vision_model import Classifier
    result = Classifier.load().identify(["cap.jpg", "gills.jpg"])   # one mushroom, two photos
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Classifier",
    "Identification",
    "ImageError",
    "Prediction",
    "SafetyConfig",
    "decide",
    "decode_image",
]

_WHERE = {
    "Classifier": "vision_model.classifier",
    "Identification": "vision_model.classifier",
    "Prediction": "vision_model.classifier",
    "ImageError": "vision_model.images",
    "decode_image": "vision_model.images",
    "SafetyConfig": "vision_model.verdict",
    "decide": "vision_model.verdict",
}

if TYPE_CHECKING:
    from vision_model.classifier import Classifier, Identification, Prediction
    from vision_model.images import ImageError, decode_image
    from vision_model.verdict import SafetyConfig, decide


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vision_model' has no attribute {name!r}")
