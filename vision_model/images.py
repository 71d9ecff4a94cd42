"""Safe image decoding, shared by training and inference.

Every photo a user sends goes through `decode_image` before the model sees it. It turns
anything odd (empty upload, a PDF, a truncated JPEG, a 50000x50000 "decompression bomb",
an animated GIF, a CMYK scan, a transparent PNG, a phone photo stored sideways) into either
a plain RGB `PIL.Image` the right way up, or an `ImageError` whose message can be shown to
the user as it is.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
_WARNINGS_LOCK = threading.Lock()

ImageSource = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO


class ImageError(ValueError):
    """A photo that cannot be used. `str(error)` is a friendly sentence for the user.

    `reason` is a short machine-readable code: "empty", "not_found", "unreadable",
    "too_many_bytes", "not_an_image", "too_many_pixels", "corrupt".
    """

    def __init__(self, message: str, reason: str = "unreadable") -> None:
        super().__init__(message)
        self.reason = reason


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def too_large(size: int | None, max_bytes: int, name: str | None = None) -> str:
    """The one "too large" sentence of every front door: the real size when it is known (a caller
    that read only max_bytes + 1 bytes, to refuse early, knows just that it is over the limit)."""
    photo = f"The photo '{name}'" if name else "That photo"
    if size is None or size == max_bytes + 1:
        what = f"{photo} is larger than the limit of {_megabytes(max_bytes)}."
    else:
        what = f"{photo} is too large ({_megabytes(size)}); the limit is {_megabytes(max_bytes)}."
    return f"{what} Please send a smaller or more compressed photo."


def _too_many_bytes(size: int | None, max_bytes: int) -> ImageError:
    return ImageError(too_large(size, max_bytes), reason="too_many_bytes")


def _read_bytes(source: ImageSource, max_bytes: int | None) -> bytes:
    """Read the raw bytes, refusing early (before reading everything) when they exceed max_bytes."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            size = path.stat().st_size
            if max_bytes is not None and size > max_bytes:
                raise _too_many_bytes(size, max_bytes)
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"I couldn't find the photo '{path.name}'.", reason="not_found") from None
        except IsADirectoryError:
            raise ImageError(f"'{path.name}' is a folder, not a photo.", reason="not_an_image") from None
        except OSError:
            raise ImageError(f"I couldn't open the photo '{path.name}'.", reason="unreadable") from None
    elif hasattr(source, "read"):
        try:
            data = source.read(-1 if max_bytes is None else max_bytes + 1)
        except OSError:
            raise ImageError("I couldn't read that photo. Please try sending it again.") from None
        if isinstance(data, str):
            raise ImageError(
                "That is text, not a photo. Please send a photo of the mushroom.", "not_an_image"
            )
        data = bytes(data)
    else:
        raise TypeError(f"decode_image expects bytes, a path or a binary file, got {type(source).__name__}")

    if not data:
        raise ImageError(
            "The photo is empty (0 bytes), so there is nothing to look at. Please send it again.",
            reason="empty",
        )
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_many_bytes(None if hasattr(source, "read") else len(data), max_bytes)
    return data


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparent pixels become white (as a photo viewer would show them)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        # Palette images may carry transparency in info; RGBA keeps it for the composite below.
        img = img.convert("RGBA")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit/float greyscale: scale to 8 bits rather than clipping everything to white.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(scaled.astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(
    source: ImageSource,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode a photo into an upright RGB image, or raise ImageError with a user-facing message.

    - `source`: raw bytes, a file path, or a binary file object.
    - `max_bytes`: refuse larger uploads before decoding (None: no limit).
    - `max_pixels`: refuse images whose *header* declares more pixels, checked before the
      pixel data is decoded, so a decompression bomb never allocates its memory.
    Animated GIF/WebP: the first frame. EXIF orientation is applied.
    """
    data = _read_bytes(source, max_bytes)
    not_an_image = ImageError(
        "That doesn't look like a photo I can read. Please send a JPEG, PNG, WebP or GIF photo of the mushroom.",
        reason="not_an_image",
    )
    corrupt = ImageError(
        "That photo seems damaged or incomplete, so I can't read it. Please try sending it again.",
        reason="corrupt",
    )
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            # PIL only *warns* between MAX_IMAGE_PIXELS and twice that; we treat it as an error.
            # warnings.catch_warnings is process-global, hence the lock (header parsing is fast).
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
        width, height = img.size
        if width <= 0 or height <= 0:
            raise corrupt
        if max_pixels is not None and width * height > max_pixels:
            _reduce_on_decode(img, max_pixels)  # a big phone JPEG: decoded at 1/2, 1/4 or 1/8 size
            if img.size[0] * img.size[1] > max_pixels:
                raise _too_many_pixels(width, height, max_pixels)
        img.load()
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # a broken EXIF block should not lose the photo
            pass
        return to_rgb(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(None, None, max_pixels) from None
    except UnidentifiedImageError:
        raise not_an_image from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error):
        # Truncated data, bad Huffman tables, broken chunks: PIL raises any of these.
        raise corrupt from None
    except MemoryError:
        raise _too_many_pixels(None, None, max_pixels) from None


def _reduce_on_decode(img: Image.Image, max_pixels: int) -> None:
    """Ask a JPEG decoder for the smallest of 1/2, 1/4, 1/8 scale that brings the image within
    max_pixels (Pillow's draft mode: the DCT is decoded reduced, so the full-size pixels are never
    allocated). A 48-megapixel phone photo becomes 12 megapixels, more than the model needs. Other
    formats cannot decode reduced and keep their size (and are refused when it is too big)."""
    if img.format != "JPEG":
        return
    width, height = img.size
    for scale in (2, 4, 8):
        if (width // scale) * (height // scale) <= max_pixels:
            img.draft("RGB", (-(-width // scale), -(-height // scale)))
            return


def _too_many_pixels(width: int | None, height: int | None, max_pixels: int | None) -> ImageError:
    size = f" ({width}x{height} pixels)" if width and height else ""
    limit = f"; the limit is {max_pixels / 1e6:.0f} megapixels" if max_pixels else ""
    return ImageError(
        f"That photo is too big{size}{limit}. Please send a smaller photo.",
        reason="too_many_pixels",
    )
