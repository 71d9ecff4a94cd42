"""Shared helpers for the API tests: photos made on the fly, settings pointing at tmp dirs."""

from __future__ import annotations

import io
import socket
import struct
import subprocess
import time
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Until `url` answers 200 (a server started by the test); AssertionError with the server's stderr when it
    died, or after `timeout` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise AssertionError(f"the server exited ({process.returncode}): {err[-2000:]}")
        time.sleep(0.3)
    if process is not None:
        process.kill()
    raise AssertionError(f"nothing answered at {url} within {timeout:.0f} s")
