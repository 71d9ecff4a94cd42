"""Shared helpers for the API tests: photos made on the fly, settings pointing at tmp dirs."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from bot.settings import Settings


def photo_bytes(seed: int, size: tuple[int, int] = (96, 80), fmt: str = "JPEG") -> bytes:
    """A small random-colour photo; different seeds give different model outputs."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    noise = rng.integers(-40, 40, size=(size[1], size[0], 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few hundred bytes whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(
        b"IEND", b""
    )


def api_settings(tmp: Path, **env: object) -> Settings:
    """Settings with every piece of runtime state under `tmp` and no .env file read."""
    values = {"CHROMA_PATH": str(tmp / "chroma"), "DATABASE_URL": f"sqlite:///{tmp / 'bot.sqlite3'}"}
    values.update({key: value for key, value in env.items()})
    return Settings(_env_file=None, **values)


def files(*blobs: bytes, name: str = "photo.jpg") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (f"{i}-{name}", blob, "image/jpeg")) for i, blob in enumerate(blobs)]
