"""One core, every front door: the same photos (one of them unreadable) sent through the console, the
HTTP API and Telegram give the same species, the same verdict and the same note on the skipped photo.
Also: the one decoding rule reduces a big phone JPEG instead of refusing it."""

from __future__ import annotations

import asyncio
import io
import itertools

import numpy as np
import pytest
from bot_support import FakeTelegram, load_classifier, make_core, make_settings, tiny_model
from fastapi.testclient import TestClient
from PIL import Image
from telegram import Update

from bot.api import create_app
from bot.console import line_to_event
from bot.telegram_adapter import TelegramFrontDoor
from knowledge_base.answer import Answerer
from knowledge_base.catalog import default_catalog
from vision_model.images import decode_image


def photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((160, 120))
    buf = io.BytesIO()
    small.save(buf, "JPEG")
    return buf.getvalue()


GOOD = [photo(1), photo(2)]
DAMAGED = photo(3)[:200]  # a JPEG cut off after its header


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(str(tmp_path_factory.mktemp("doors")), None)  # random weights: the photos decide


def via_api(tmp_path, model) -> tuple[str, str, list[str]]:
    app = create_app(make_settings(tmp_path), classifier=load_classifier(str(model)),
                     answerer=Answerer(None, default_catalog()))
    with TestClient(app) as client:
        files = [("image", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate([GOOD[0], DAMAGED, GOOD[1]])]
        body = client.post("/v1/identify", files=files).json()
    return body["top_k"][0]["label"], body["verdict"], body["notes"]


async def via_console(tmp_path, model) -> tuple[str, str, str]:
    paths = []
    for i, data in enumerate([GOOD[0], DAMAGED, GOOD[1]]):
        paths.append(tmp_path / f"p{i}.jpg")
        paths[-1].write_bytes(data)
    settings = make_settings(tmp_path)
    core = make_core(settings, model)
    event = line_to_event("/identify " + " ".join(map(str, paths)), settings, "tester")
    [reply] = await core.handle(event)
    [ident] = core.memory.recent_identifications("console", event.chat_id)
    core.close()
    return ident.top_label, ident.verdict, reply.text


async def via_telegram(tmp_path, model) -> tuple[str, str, str]:
    settings = make_settings(tmp_path)
    door = TelegramFrontDoor(make_core(settings, model), settings, album_wait_s=0.3)
    fake = FakeTelegram()
    app = door.build_application(FakeTelegram.TOKEN, request=fake)
    await app.initialize()
    ids = itertools.count(1)

    async def send(file_id: str, data: bytes) -> None:
        update = FakeTelegram.message_update(next(ids), next(ids), media_group_id="album",
                                             **fake.photo(file_id, data))
        await app.process_update(Update.de_json(update, app.bot))

    for i, data in enumerate([GOOD[0], DAMAGED, GOOD[1]]):  # in order, as Telegram delivers an album
        await send(f"f{i}", data)
    await asyncio.sleep(0.4)
    await door.drain()
    [reply] = fake.sent()
    [ident] = door.core.memory.recent_identifications("telegram", str(FakeTelegram.USER))
    await app.shutdown()
    door.core.close()
    return ident.top_label, ident.verdict, reply["text"]


async def test_console_api_and_telegram_agree(tmp_path, model):
    (tmp_path / "api").mkdir()
    label, verdict, notes = via_api(tmp_path / "api", model)
    assert notes and notes[0].startswith("I skipped photo 2: That photo seems damaged")
    expected = load_classifier(str(model)).identify([decode_image(GOOD[0]), decode_image(GOOD[1])])
    assert (label, verdict) == (expected.top_k[0].label, expected.verdict)

    for door in (via_console, via_telegram):
        (tmp_path / door.__name__).mkdir()
        door_label, door_verdict, text = await door(tmp_path / door.__name__, model)
        assert (door_label, door_verdict) == (label, verdict), door.__name__
        assert notes[0].replace("'", "&#x27;") in text or notes[0] in text, (door.__name__, text)


def test_a_48_megapixel_phone_jpeg_is_decoded_reduced_and_a_bomb_is_still_refused():
    from api_support import bomb_png

    from vision_model.images import ImageError

    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).resize((8000, 6000))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=70)
    assert len(buf.getvalue()) < 10 * 2**20  # a 2 MB upload that used to be refused as "8000x6000 pixels"
    image = decode_image(buf.getvalue(), max_bytes=10 * 2**20, max_pixels=40_000_000)
    assert image.size == (4000, 3000) and image.mode == "RGB"
    png = io.BytesIO()
    big.save(png, "PNG")  # no reduced decoding for PNG: refused with its real size
    with pytest.raises(ImageError, match="8000x6000"):
        decode_image(png.getvalue(), max_pixels=40_000_000)
    with pytest.raises(ImageError) as bomb:
        decode_image(bomb_png(), max_pixels=40_000_000)
    assert bomb.value.reason == "too_many_pixels"
