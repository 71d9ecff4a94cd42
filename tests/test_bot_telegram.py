"""The Telegram front door: a real python-telegram-bot Application over a recording BaseRequest.

No network: every Bot API call goes to bot_support.FakeTelegram.do_request, which records it and
returns canned Bot API JSON (and the photo bytes for file downloads). Updates are fed with
Application.process_update, as the polling loop would.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from bot_support import FakeTelegram, assert_no_raw_user_id, jpeg, make_core, make_settings, tiny_model
from telegram import Update

from bot.telegram_adapter import TelegramFrontDoor


@pytest.fixture(scope="session")
def deadly_model(tmp_path_factory):
    return tiny_model(str(tmp_path_factory.mktemp("tg-models")), "amanita_phalloides")


@pytest.fixture
async def telegram(tmp_path, deadly_model):
    settings = make_settings(tmp_path, PHOTO_RATE_LIMIT=3, MAX_IMAGE_BYTES=200_000)
    door = TelegramFrontDoor(make_core(settings, deadly_model), settings, album_wait_s=0.2)
    fake = FakeTelegram()
    app = door.build_application(FakeTelegram.TOKEN, request=fake)
    await app.initialize()
    await door._post_init(app)
    ids = itertools.count(1)

    async def send(message: dict | None = None, *, user=FakeTelegram.USER, callback: str | None = None, **fields):
        if callback is not None:
            chat, sender = FakeTelegram.chat(user)
            data = {"update_id": next(ids), "callback_query": {
                "id": str(next(ids)), "from": sender, "chat_instance": "x", "data": callback,
                "message": {"message_id": 1, "date": 0, "chat": chat, "from": FakeTelegram.BOT_USER,
                            "text": "earlier reply"}}}
        else:
            data = FakeTelegram.message_update(next(ids), next(ids), user, **(message or {}), **fields)
        await app.process_update(Update.de_json(data, app.bot))
        await door.drain()

    yield fake, send, fake.photo
    await door.drain()
    await app.shutdown()
    door.core.close()


async def test_menu_is_set_at_start(telegram):
    fake, _, _ = telegram
    everyone, admin = fake.sent("setMyCommands")
    assert {"identify", "ask", "lookalikes", "sources", "more", "new", "about", "help", "correct", "consent",
            "forget"} == {
        c["command"] for c in everyone["commands"]}
    assert {"status", "reingest", "review"} <= {c["command"] for c in admin["commands"]}
    assert admin["scope"] == {"type": "chat", "chat_id": FakeTelegram.ADMIN}


async def test_photo_then_follow_up_question_then_button(telegram):
    fake, send, photo = telegram
    await send(photo("p1", jpeg()))
    [reply] = fake.sent()
    assert "Amanita phalloides" in reply["text"] and "<b>DEADLY - can kill</b>" in reply["text"]
    assert reply["parse_mode"] == "HTML"
    buttons = reply["reply_markup"]["inline_keyboard"][0]
    assert [b["text"] for b in buttons] == ["More", "Is it poisonous?", "Lookalikes", "Sources"]
    assert {"chat_id": FakeTelegram.USER, "action": "upload_photo"}.items() <= fake.sent("sendChatAction")[0].items()

    await send(text="is it poisonous?")
    answer = fake.sent()[-1]
    assert answer["text"].startswith("Amanita phalloides (death cap) is DEADLY poisonous")  # about the photo
    more = next(b["callback_data"] for b in answer["reply_markup"]["inline_keyboard"][0] if b["text"] == "More")
    await send(callback=more)
    assert "Sources:" in fake.sent()[-1]["text"] and "Species catalog" in fake.sent()[-1]["text"]

    # A poisoning in any wording, any language: first aid before anything else.
    await send(text="mein Hund hat davon gefressen")
    assert fake.sent()[-1]["text"].startswith("⚠️ Ihr Tier könnte vergiftet sein: JETZT den Tierarzt")

    lookalikes = next(b["callback_data"] for b in buttons if b["text"] == "Lookalikes")
    await send(callback=lookalikes)
    assert len(fake.sent("answerCallbackQuery")) == 2  # every button press is acknowledged
    assert "Lookalikes of Amanita phalloides" in fake.sent()[-1]["text"]


async def test_album_is_one_observation(telegram):
    fake, send, photo = telegram
    await asyncio.gather(
        send(photo("a1", jpeg((200, 10, 10))), media_group_id="album-1"),
        send(photo("a2", jpeg((10, 200, 10))), media_group_id="album-1"),
    )
    replies = fake.sent()
    assert len(replies) == 1
    assert "2 photos, one observation" in replies[0]["text"]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("corrupt", "damaged"),
        ("oversized", "too large"),
        ("sticker", "A sticker isn't something I can identify"),
        ("pdf", "A PDF file isn't something I can identify"),
    ],
)
async def test_bad_input_gets_a_friendly_reply(telegram, message, expected):
    fake, send, photo = telegram
    if message == "corrupt":
        await send(photo("c1", jpeg()[:150]))
    elif message == "oversized":
        await send(photo("big", b"x" * 10, size=5_000_000))
    elif message == "sticker":
        await send(sticker={"file_id": "s", "file_unique_id": "s", "width": 512, "height": 512,
                            "is_animated": False, "is_video": False, "type": "regular"})
    else:
        await send(document={"file_id": "d", "file_unique_id": "d", "file_name": "guide.pdf",
                             "mime_type": "application/pdf"})
    [reply] = fake.sent()
    assert expected in reply["text"]
    if message == "oversized":
        assert not fake.sent("getFile")  # refused before downloading


async def test_image_document_is_identified(telegram):
    fake, send, _ = telegram
    fake.files["doc1"] = jpeg()
    await send(document={"file_id": "doc1", "file_unique_id": "doc1", "file_name": "IMG_1.JPG",
                         "mime_type": "image/jpeg", "file_size": len(fake.files["doc1"])})
    assert "Amanita phalloides" in fake.sent()[-1]["text"]


async def test_admin_commands(telegram):
    fake, send, _ = telegram
    await send(text="/reingest")
    await send(text="/status", user=FakeTelegram.ADMIN)
    await send(text="/frobnicate")
    refused, status, unknown = (m["text"] for m in fake.sent())
    assert "only the bot's administrators can use /reingest" in refused
    assert "Model: tiny-test" in status
    assert "/frobnicate" in unknown


async def test_rate_limit_tells_the_user_to_wait(telegram):
    fake, send, photo = telegram
    for i in range(4):
        await send(photo(f"r{i}", jpeg((i * 40, 50, 50))))
    texts = [m["text"] for m in fake.sent()]
    assert sum("Amanita phalloides" in t for t in texts) == 3
    assert "please wait" in texts[-1]


async def test_empty_ask_and_long_replies_fit_telegram(telegram):
    fake, send, _ = telegram
    await send(text="/ask")
    await send(text="/ask what are the lookalikes of the death cap and how do I tell them apart?")
    empty, answer = fake.sent()[0]["text"], fake.sent()[-1]["text"]
    assert "What would you like to know?" in empty
    assert all(len(m["text"]) <= 4096 for m in fake.sent())
    assert "Amanita phalloides" in answer


async def test_feedback_is_recorded_with_the_model_version_and_forget_leaves_nothing(telegram, tmp_path):
    """Right / Wrong / Not sure under every identification, /correct, /consent, /forget (issue 27)."""
    import json

    from sqlalchemy import create_engine, text

    fake, send, photo = telegram
    db = create_engine(f"sqlite:///{tmp_path / 'bot.sqlite3'}")

    def rows(sql):
        with db.connect() as conn:
            return [dict(r) for r in conn.execute(text(sql)).mappings()]

    await send(photo("p1", jpeg()))
    feedback_row = fake.sent()[-1]["reply_markup"]["inline_keyboard"][1]
    assert [b["text"] for b in feedback_row] == ["Right", "Wrong", "Not sure"]
    await send(callback=feedback_row[0]["callback_data"])
    said = fake.sent()[-1]["text"]
    assert "noted that the identification was right" in said and "/consent on" in said  # asked once
    [vote] = rows("SELECT * FROM bot_feedback")
    assert vote["vote"] == "right" and vote["model_version"] and vote["verdict"] == "deadly"
    assert json.loads(vote["labels"])[0] == "amanita_phalloides" and len(json.loads(vote["photo_sha256"])) == 1
    assert_no_raw_user_id(vote, FakeTelegram.USER)  # a salted hash, never the user id
    assert not vote["photos_kept"]

    await send(callback=feedback_row[1]["callback_data"])  # a second vote replaces the first, and says so
    assert "Which species is it?" in fake.sent()[-1]["text"]
    await send(text="/correct Chanterelle")
    assert "your photo shows Cantharellus cibarius" in fake.sent()[-1]["text"]
    [vote] = rows("SELECT vote, user_label FROM bot_feedback")
    assert vote == {"vote": "wrong", "user_label": "cantharellus_cibarius"}
    await send(text="/correct Boletus imaginarius")
    assert "I don't know a species called" in fake.sent()[-1]["text"]
    assert rows("SELECT user_label FROM bot_feedback") == [{"user_label": "cantharellus_cibarius"}]
    await send(callback="fb:999999:right")  # not an identification of this chat: nothing stored
    assert "no longer remember that photo" in fake.sent()[-1]["text"]
    assert len(rows("SELECT * FROM bot_feedback")) == 1
    assert not (tmp_path / "feedback-photos").exists()  # no consent: no photo kept

    await send(text="/consent on")
    await send(photo("p2", jpeg((10, 200, 10))))
    kept = [p for p in (tmp_path / "feedback-photos").rglob("*.jpg")]
    assert len(kept) == 1 and rows("SELECT count(*) AS n FROM bot_kept_photos") == [{"n": 1}]

    await send(text="/forget")
    assert "deleted this conversation, your 1 feedback answer(s) and 1 kept photo(s)" in fake.sent()[-1]["text"]
    for table in ("bot_feedback", "bot_consent", "bot_kept_photos", "bot_identifications", "bot_history"):
        assert rows(f"SELECT * FROM {table}") == [], table
    assert not [p for p in (tmp_path / "feedback-photos").rglob("*") if p.is_file()]


async def test_admins_review_feedback_from_the_chat(telegram):
    fake, send, photo = telegram
    await send(photo("p1", jpeg()))
    wrong = next(b["callback_data"] for b in fake.sent()[-1]["reply_markup"]["inline_keyboard"][1]
                 if b["text"] == "Wrong")
    await send(callback=wrong)
    await send(text="/review")
    assert "only the bot's administrators can use /review" in fake.sent()[-1]["text"]
    await send(text="/review", user=FakeTelegram.ADMIN)
    listing = fake.sent()[-1]["text"]
    assert "1 feedback item(s) to review" in listing and "#1: model amanita_phalloides (deadly)" in listing
    await send(text="/review accept 1", user=FakeTelegram.ADMIN)  # "wrong" without a species: refused
    assert "needs a species" in fake.sent()[-1]["text"]
    await send(text="/review accept 1 Boletus imaginarius", user=FakeTelegram.ADMIN)
    assert "I don't know a species called" in fake.sent()[-1]["text"]
    await send(text="/review accept 1 amanita citrina", user=FakeTelegram.ADMIN)
    assert fake.sent()[-1]["text"] == "Item #1 accepted as amanita_citrina."
    await send(text="/review reject 42", user=FakeTelegram.ADMIN)
    assert "There is no feedback item 42." in fake.sent()[-1]["text"]
    await send(text="/review", user=FakeTelegram.ADMIN)
    assert "No feedback waiting for review." in fake.sent()[-1]["text"]
