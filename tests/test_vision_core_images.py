"""decode_image: every kind of photo a user may send, good and bad, made in the test."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vision_model.images import ImageError, decode_image


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def two_colour_image(size=(60, 40)) -> Image.Image:
    """Left half red, right half blue: orientation changes are visible in the pixels."""
    w, h = size
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height, with a tiny IDAT (a 'bomb' header)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def assert_friendly(err: ImageError) -> None:
    message = str(err)
    assert message[0].isupper() and message.rstrip().endswith("."), message
    assert "Traceback" not in message and "PIL" not in message


# --- good photos ----------------------------------------------------------------------


def test_plain_jpeg_bytes_path_and_file_object(tmp_path):
    data = encode(two_colour_image(), "JPEG", quality=95)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    for source in (data, path, str(path), io.BytesIO(data)):
        img = decode_image(source)
        assert img.mode == "RGB" and img.size == (60, 40)


def test_exif_rotated_jpeg_is_turned_upright():
    img = two_colour_image((60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    decoded = decode_image(encode(img, "JPEG", quality=95, exif=exif.tobytes()))
    assert decoded.size == (40, 60)  # width and height swapped
    arr = np.asarray(decoded).astype(int)
    # After a 90-degree clockwise turn, the left (red) half is at the top.
    assert arr[5, 20, 0] > 200 and arr[5, 20, 2] < 60
    assert arr[55, 20, 2] > 200 and arr[55, 20, 0] < 60


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode_image(encode(cmyk, "JPEG", quality=95))
    assert decoded.mode == "RGB"
    r, g, b = decoded.getpixel((16, 16))
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_png_is_composited_on_white(mode):
    img = Image.new(mode, (20, 20), (0, 0) if mode == "LA" else (0, 0, 0, 0))  # fully transparent black
    decoded = decode_image(encode(img, "PNG"))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((10, 10)) == (255, 255, 255)


def test_palette_png_with_transparency():
    img = Image.new("P", (20, 20), 0)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((5, 5), 1)
    decoded = decode_image(encode(img, "PNG", transparency=0))
    assert decoded.getpixel((0, 0)) == (255, 255, 255)  # transparent index -> white
    assert decoded.getpixel((5, 5)) == (0, 255, 0)


def test_greyscale_and_16bit_png():
    grey = decode_image(encode(Image.new("L", (10, 10), 128), "PNG"))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (128, 128, 128)
    arr16 = np.tile(np.arange(10, dtype=np.uint16) * 6000, (10, 1))
    deep = decode_image(encode(Image.fromarray(arr16), "PNG"))
    assert deep.mode == "RGB"
    assert deep.getpixel((0, 0))[0] < deep.getpixel((9, 0))[0]  # a gradient, not flat white


def test_webp():
    decoded = decode_image(encode(two_colour_image(), "WEBP", lossless=True))
    assert decoded.mode == "RGB" and decoded.size == (60, 40)
    assert decoded.getpixel((5, 5)) == (255, 0, 0)


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    decoded = decode_image(data)
    r, g, b = decoded.getpixel((8, 8))
    assert decoded.mode == "RGB" and r > 200 and b < 60


# --- bad input ------------------------------------------------------------------------


def test_truncated_jpeg():
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageError) as info:
        decode_image(data[: len(data) // 2])
    assert info.value.reason == "corrupt"
    assert_friendly(info.value)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (os.urandom(4096), "not_an_image"),
        (b"Amanita phalloides: deadly. This is a text file, not a photo.\n" * 10, "not_an_image"),
        (b"%PDF-1.7\n" + b"0" * 500, "not_an_image"),
    ],
    ids=["empty", "random-bytes", "text", "pdf"],
)
def test_not_a_photo(data, reason):
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)
    assert_friendly(info.value)


def test_text_file_on_disk_and_missing_file(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not really a jpeg", encoding="utf-8")
    with pytest.raises(ImageError, match="photo"):
        decode_image(text)
    with pytest.raises(ImageError) as info:
        decode_image(tmp_path / "missing.jpg")
    assert info.value.reason == "not_found"
    with pytest.raises(ImageError):
        decode_image(tmp_path)  # a folder


def test_decompression_bomb_header_is_refused_before_decoding():
    bomb = png_header_only(50_000, 50_000)  # 2.5 gigapixels claimed in a ~100-byte file
    assert len(bomb) < 200
    with pytest.raises(ImageError) as info:
        decode_image(bomb)
    assert info.value.reason == "too_many_pixels"
    assert_friendly(info.value)


def test_pixel_cap_is_ours_not_only_pils():
    header = png_header_only(3000, 3000)  # 9 MP: under PIL's own bomb limit
    with pytest.raises(ImageError) as info:
        decode_image(header, max_pixels=1_000_000)
    assert info.value.reason == "too_many_pixels" and "3000x3000" in str(info.value)
    with pytest.raises(ImageError) as info:  # under our cap: then it is just a broken PNG
        decode_image(header, max_pixels=None)
    assert info.value.reason == "corrupt"


def test_pil_decompression_bomb_warning_becomes_error():
    # 10000 x 10000 = 100 MP, above PIL's MAX_IMAGE_PIXELS (89 MP): PIL only warns; we refuse.
    with pytest.raises(ImageError) as info:
        decode_image(png_header_only(10_000, 10_000), max_pixels=None)
    assert info.value.reason == "too_many_pixels"


def test_too_many_bytes(tmp_path):
    data = encode(two_colour_image(), "PNG")
    path = tmp_path / "big.png"
    path.write_bytes(data)
    for source in (data, path, io.BytesIO(data)):
        with pytest.raises(ImageError) as info:
            decode_image(source, max_bytes=len(data) - 1)
        assert info.value.reason == "too_many_bytes"
        assert_friendly(info.value)
    assert decode_image(data, max_bytes=len(data)).size == (60, 40)


def test_wrong_argument_type_is_a_programming_error():
    with pytest.raises(TypeError):
        decode_image(12345)  # type: ignore[arg-type]
