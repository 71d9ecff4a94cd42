"""Shared material for the bot tests: tiny real models, photos made in the test, a core factory.

The classifier is a real `vision_model.classifier.Classifier` over tiny random-weight model
directories (make_tiny_model_dir); answers come from the real `Answerer` in catalog-only mode
(no index needed); chat memory is a real SQLite file in the test's tmp_path.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from functools import cache
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from PIL import Image  # noqa: E402

from bot.core import BotCore  # noqa: E402
from bot.settings import Settings  # noqa: E402


def jpeg(color=(120, 80, 40), size=(96, 96)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def bomb_png(width=30_000, height=30_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = zlib.compress(b"\x00" * (width // 8 + 1) * 16)  # only a few rows: never decoded anyway
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@cache
def tiny_model(root: str, favour: str | None, unknown_labels: bool = False, always_abstain: bool = False) -> Path:
    """A tiny model favouring one label (every photo -> that label), cached per test session.

    unknown_labels: labels the catalog lacks (verdict "unknown"); always_abstain: a safety.json
    whose confidence bar no photo reaches (abstained=True).
    """
    from vision_model.testing import make_tiny_model_dir
    from vision_model.verdict import SafetyConfig

    name = "unknown" if unknown_labels else "abstain" if always_abstain else (favour or "random")
    labels = ["xylaria_notinthecatalog", "mycena_notinthecatalog"] if unknown_labels else None
    safety = SafetyConfig(version="tiny-test", abstain_min_probability=1.0, danger_threshold=1.0) \
        if always_abstain else None
    return make_tiny_model_dir(Path(root) / name, labels=labels, favour=favour, safety=safety)


@cache
def load_classifier(model_dir: str):
    from vision_model.classifier import Classifier

    return Classifier.load(model_dir, backend="torch")


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        "CHROMA_PATH": str(tmp_path / "chroma"),
        "GUIDES_DIR": str(tmp_path / "guides"),
        "DISCORD_HEALTH_FILE": str(tmp_path / "discord-alive"),
        "TELEGRAM_ADMIN_IDS": "1001",
        "DISCORD_ADMIN_IDS": "2001",
    }
    values.update({k: str(v) for k, v in overrides.items()})
    return Settings(**values)


def make_core(settings: Settings, model_dir: Path, **kwargs) -> BotCore:
    from knowledge_base.answer import Answerer
    from knowledge_base.catalog import default_catalog

    kwargs.setdefault("classifier", load_classifier(str(model_dir)))
    kwargs.setdefault("answerer", Answerer(None, default_catalog()))  # catalog-only: no index needed
    return BotCore(settings, **kwargs)
