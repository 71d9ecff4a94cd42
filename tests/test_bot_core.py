"""The conversation core with a real tiny classifier, the real catalog-only Answerer and SQLite memory."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from bot_support import bomb_png, jpeg, make_core, make_settings, tiny_model

from bot.memory import ChatMemory
from bot.messages import Event


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bot-models"))
    return {
        "deadly": tiny_model(root, "amanita_phalloides"),
        "edible": tiny_model(root, "boletus_edulis"),
        "unknown": tiny_model(root, None, unknown_labels=True),
        "abstain": tiny_model(root, None, always_abstain=True),
        "random": tiny_model(root, None),
    }


def photo_event(chat="1", user="7", n=1, **kw):
    return Event(platform="test", chat_id=chat, user_id=user, photos=[jpeg((30 * i, 90, 60)) for i in range(n)], **kw)


def text_event(text, chat="1", user="7", **kw):
    return Event(platform="test", chat_id=chat, user_id=user, text=text, **kw)


async def test_photo_reply_has_top3_verdict_features_lookalikes_and_buttons(tmp_path, models, caplog):
    core = make_core(make_settings(tmp_path), models["deadly"])
    with caplog.at_level(logging.INFO, logger="bot.handled"):
        [reply] = await core.handle(photo_event(n=2))
    core.close()
    text = reply.text
    assert text.startswith("☠️ **DEADLY - can kill**. Do not eat it.")  # verdict and action first
    assert "Amanita phalloides" in text and "death cap" in text
    assert "2 photos, one observation" in text
    assert text.count("%") >= 3  # top 3 with percentages
    assert len(text) <= 500
    assert [b.label for b in reply.buttons] == ["More", "Is it poisonous?", "Lookalikes", "Sources",
                                                "Right", "Wrong", "Not sure"]
    core = make_core(make_settings(tmp_path), models["deadly"])
    [more] = await core.handle(Event(platform="test", chat_id="1", user_id="7", button=reply.buttons[0].payload))
    core.close()
    assert "volva" in more.text.lower()  # the field feature to check for Amanita
    assert "Tricholoma equestre" in more.text  # a dangerous lookalike from the catalog
    assert "never eat a wild mushroom on the word of an app" in more.text.lower()
    line = next(r.getMessage() for r in caplog.records if r.name == "bot.handled")
    assert "platform=test" in line and "kind=photo" in line and "outcome=ok" in line
    assert "chat=1 " not in line  # the chat id is hashed


async def test_edible_is_never_permission_to_eat(tmp_path, models):
    core = make_core(make_settings(tmp_path), models["edible"])
    [reply] = await core.handle(photo_event())
    core.close()
    assert "Boletus edulis" in reply.text
    assert "reportedly edible - never eat on the word of an app" in reply.text.lower()


@pytest.mark.parametrize("model", ["unknown", "abstain"])
async def test_unknown_or_abstained_says_treat_as_poisonous_with_photo_tips(tmp_path, models, model):
    core = make_core(make_settings(tmp_path), models[model])
    [reply] = await core.handle(photo_event())
    [more] = await core.handle(Event(platform="test", chat_id="1", user_id="7", command="more"))
    [answer] = await core.handle(text_event("is it edible?"))
    core.close()
    if model == "abstain":
        assert "I can't identify this reliably" in reply.text
    else:  # a species the catalog lacks: it cannot be ruled out as dangerous
        assert "I can't identify this reliably" not in reply.text
    assert reply.text.startswith("❓ **UNKNOWN - treat it as poisonous**. ")
    assert "treat it as poisonous" in answer.text and answer.text.startswith("No - do not eat it.")
    assert "stem" in more.text or "size reference" in more.text  # /more: the rest of the last answer
    assert "reportedly edible" not in reply.text.lower() + answer.text.lower()
    if model == "abstain":
        assert "not reliable" in reply.text and "reliably" in answer.text  # no answer about a guess


async def test_follow_ups_resolve_to_the_right_photo_across_a_restart(tmp_path, models):
    settings = make_settings(tmp_path)
    first = make_core(settings, models["deadly"])
    await first.handle(photo_event())
    first.close()
    # A new core (a restart) over the same SQLite file, with a model that sees a porcini.
    second = make_core(settings, models["edible"])
    await second.handle(photo_event())
    [last] = await second.handle(text_event("is it poisonous?"))
    [earlier] = await second.handle(text_event("what about the first one?"))
    [lookalikes] = await second.handle(text_event("lookalikes?"))
    [sources] = await second.handle(Event("test", "1", "7", command="sources"))
    second.close()
    assert "Boletus edulis" in last.text.split("\n")[0]
    assert "Sources" in [b.label for b in last.buttons]  # answers carry their citations
    assert "Amanita phalloides" in earlier.text.split("\n")[0] and "DEADLY" in earlier.text
    # The conversation is now about the first photo: a bare follow-up stays on it.
    assert "Amanita phalloides" in lookalikes.text.split("\n")[0]
    assert "Tricholoma equestre" in lookalikes.text
    assert "Boletus edulis" in sources.text
    memory = ChatMemory(settings.database_url)
    assert [i.top_label for i in memory.recent_identifications("test", "1")] == [
        "amanita_phalloides", "boletus_edulis"]
    memory.close()


async def test_questions_without_a_photo(tmp_path, models):
    core = make_core(make_settings(tmp_path), models["deadly"])
    [named] = await core.handle(text_event("Is the fly agaric poisonous?", chat="9"))
    [vague] = await core.handle(text_event("is it edible?", chat="9"))
    [ordinal] = await core.handle(text_event("what about the second one?", chat="9"))
    [empty] = await core.handle(Event("test", "9", "7", command="ask"))
    [fresh] = await core.handle(text_event("is it edible?", chat="10"))
    core.close()
    assert "Amanita muscaria" in named.text and "poisonous" in named.text.lower()
    # "it" is the chat's subject: the species of the last answer.
    assert "Amanita muscaria" in vague.text and vague.text.startswith("No - do not eat it.")
    assert "photo" in fresh.text.lower() and "which mushroom" in fresh.text.lower()
    assert "haven't seen a photo" in ordinal.text
    assert "What would you like to know?" in empty.text


async def test_buttons_resolve_to_their_own_photo(tmp_path, models):
    core = make_core(make_settings(tmp_path), models["deadly"])
    [reply] = await core.handle(photo_event())
    presses = {b.label: b.payload for b in reply.buttons}
    [poison] = await core.handle(Event("test", "1", "7", button=presses["Is it poisonous?"]))
    [looks] = await core.handle(Event("test", "1", "7", button=presses["Lookalikes"]))
    [other_chat] = await core.handle(Event("test", "2", "7", button=presses["Lookalikes"]))
    core.close()
    assert "DEADLY" in poison.text and "Amanita phalloides" in poison.text
    assert "Lookalikes of Amanita phalloides" in looks.text
    assert "no longer remember" in other_chat.text  # another chat cannot read this chat's photo


@pytest.mark.parametrize(
    ("photo", "overrides", "expected"),
    [
        (b"this is not an image", {}, "doesn't look like a photo"),
        (jpeg()[:200], {}, "damaged"),
        (jpeg(size=(400, 400)), {"MAX_IMAGE_BYTES": 500}, "too large"),
        (bomb_png(), {}, "too big"),
    ],
    ids=["not-an-image", "corrupt", "oversized", "decompression-bomb"],
)
async def test_bad_photos_get_a_friendly_reply(tmp_path, models, photo, overrides, expected):
    core = make_core(make_settings(tmp_path, **overrides), models["deadly"])
    [reply] = await core.handle(Event("test", "1", "7", photos=[photo]))
    core.close()
    assert expected in reply.text
    assert not reply.buttons


async def test_one_bad_photo_in_an_album_is_skipped(tmp_path, models):
    core = make_core(make_settings(tmp_path), models["deadly"])
    [reply] = await core.handle(Event("test", "1", "7", photos=[jpeg(), b"junk"]))
    core.close()
    assert "Amanita phalloides" in reply.text and "skipped photo 2" in reply.text


async def test_commands_stickers_and_admin_rights(tmp_path, models):
    core = make_core(make_settings(tmp_path), models["deadly"])
    replies = {}
    for name, event in {
        "sticker": Event("test", "1", "7", unsupported="a sticker"),
        "unknown": Event("test", "1", "7", command="frobnicate"),
        "reingest": Event("test", "1", "7", command="reingest"),
        "status_user": Event("test", "1", "7", command="status"),
        "status_admin": Event("test", "1", "7", command="status", is_admin=True),
        "about": Event("test", "1", "7", command="about"),
        "help": Event("test", "1", "7", command="help"),
        "identify": Event("test", "1", "7", command="identify"),
        "empty": Event("test", "1", "7", text="   "),
    }.items():
        [reply] = await core.handle(event)
        replies[name] = reply.text
    core.close()
    assert "A sticker isn't something I can identify" in replies["sticker"]
    assert "/frobnicate" in replies["unknown"] and "/identify" in replies["unknown"]
    assert "only the bot's administrators" in replies["reingest"]
    assert "only the bot's administrators" in replies["status_user"]
    assert "Model: tiny-test" in replies["status_admin"] and "Uptime" in replies["status_admin"]
    assert "tiny-test" in replies["about"] and "7 species" in replies["about"]
    assert "/reingest" not in replies["help"]  # admin commands are not advertised to users
    assert "Send me the photo" in replies["identify"]
    assert "What would you like to know?" in replies["empty"]


async def test_photo_rate_limit_and_per_observation_cap(tmp_path, models):
    core = make_core(make_settings(tmp_path, PHOTO_RATE_LIMIT=3, MAX_IMAGES_PER_OBSERVATION=2), models["deadly"])
    [capped] = await core.handle(photo_event(n=3))  # 2 photos used and counted
    [ok] = await core.handle(photo_event())
    [limited] = await core.handle(photo_event())
    [other_user] = await core.handle(photo_event(user="8"))
    core.close()
    assert "first 2 of your 3 photos" in capped.text
    assert "Amanita phalloides" in ok.text
    assert "please wait" in limited.text and " s " in limited.text
    assert "Amanita phalloides" in other_user.text


class BlockingClassifier:
    """The real classifier behind a gate: identify() waits until the test opens it."""

    def __init__(self, inner):
        self.inner, self.gate = inner, threading.Event()
        self.version, self.labels = inner.version, inner.labels

    def identify(self, images):
        assert self.gate.wait(10), "the gate was never opened"
        return self.inner.identify(images)

    def identify_each(self, images):
        assert self.gate.wait(10), "the gate was never opened"
        return self.inner.identify_each(images)


async def test_a_slow_photo_does_not_block_other_chats(tmp_path, models):
    from bot_support import load_classifier

    slow = BlockingClassifier(load_classifier(str(models["deadly"])))
    core = make_core(make_settings(tmp_path), models["deadly"], classifier=slow)
    photo_task = asyncio.create_task(core.handle(photo_event(chat="slow")))
    await asyncio.sleep(0.05)
    [answer] = await asyncio.wait_for(core.handle(text_event("is the death cap deadly?", chat="fast")), 5)
    assert not photo_task.done()  # the photo is still being identified...
    assert "Amanita phalloides" in answer.text  # ...while the other chat got its answer
    slow.gate.set()
    [photo_reply] = await asyncio.wait_for(photo_task, 10)
    core.close()
    assert "DEADLY" in photo_reply.text


async def test_admin_reingest_runs_in_the_background_and_reports(tmp_path, models):
    from ingest.pipeline import reingest
    from ingest.testing import tiny_catalog, write_tiny_guides

    guides = write_tiny_guides(tmp_path / "guides")
    settings = make_settings(tmp_path)

    def small_reingest(settings, *, progress):  # the real pipeline, on a 4-species catalog
        return reingest(settings, sources=[guides], catalog=tiny_catalog(), progress=progress)

    core = make_core(settings, models["deadly"], reingest=small_reingest)
    later = []

    async def send_later(reply):
        later.append(reply.text)

    [started] = await core.handle(Event("test", "1", "1001", command="reingest", is_admin=True,
                                        send_later=send_later))
    [busy] = await core.handle(Event("test", "1", "1001", command="reingest", is_admin=True))
    [answer] = await asyncio.wait_for(core.handle(text_event("is the death cap deadly?", chat="2")), 10)
    await asyncio.wait_for(core._reingest_task, 120)
    [status] = await core.handle(Event("test", "1", "1001", command="status", is_admin=True))
    core.close()
    assert "Re-ingest started" in started.text
    assert "already running" in busy.text
    assert "Amanita phalloides" in answer.text  # the bot kept answering meanwhile
    assert any(t.startswith("Re-ingest: ") for t in later)  # progress reported in the chat
    assert later[-1].startswith("Re-ingest finished. Built"), later[-1]
    assert "Index: version 1" in status.text


async def test_concurrent_single_photos_are_batched_but_each_gets_its_own_result(tmp_path, models):
    from bot_support import load_classifier

    from bot.memory import ChatMemory

    classifier = load_classifier(str(models["random"]))
    photos = [jpeg((40 * i, 255 - 30 * i, (90 * i) % 256), size=(80 + 8 * i, 96)) for i in range(6)]
    expected = [classifier.identify([p]).top_k[0].label for p in photos]
    assert len(set(expected)) > 1  # the photos really are told apart by the random model
    core = make_core(make_settings(tmp_path), models["random"])
    await asyncio.gather(*(core.handle(Event("test", f"chat{i}", f"user{i}", photos=[p]))
                           for i, p in enumerate(photos)))
    core.close()
    memory = ChatMemory(make_settings(tmp_path).database_url)
    got = [memory.recent_identifications("test", f"chat{i}")[0].top_label for i in range(len(photos))]
    memory.close()
    assert got == expected


async def test_local_bot_follows_a_reingest_run_by_another_process(tmp_path, models, monkeypatch):
    """`python -m ingest run` (or the Kubernetes Job) moves the alias; a running bot must follow it."""
    from bot import engine as engine_module
    from ingest.pipeline import reingest
    from ingest.testing import tiny_catalog, write_tiny_guides
    from knowledge_base.vectorstore import get_client, read_alias

    monkeypatch.setattr(engine_module, "INDEX_CHECK_S", 0.0)
    guides = write_tiny_guides(tmp_path / "guides")
    settings = make_settings(tmp_path)
    assert reingest(settings, sources=[guides], catalog=tiny_catalog()).ok
    from knowledge_base.answer import Answerer

    core = make_core(settings, models["deadly"], answerer=None,
                     answerer_factory=lambda: Answerer.from_settings(settings))
    [first] = await core.handle(text_event("is the death cap deadly?"))
    opened = core.engine.answerer
    assert core.engine.index_info["collection"] == read_alias(get_client(settings)).current == "guides_v1"

    (guides / "extra.md").write_text("# Amanita phalloides\n\nA new passage on the death cap's volva.\n")
    assert reingest(settings, sources=[guides], catalog=tiny_catalog()).ok  # another process, same store
    [second] = await core.handle(text_event("is the death cap deadly?"))
    core.close()
    assert "Amanita phalloides" in first.text and "Amanita phalloides" in second.text
    assert core.engine.answerer is not opened  # reopened on the new version
    assert core.engine.index_info["collection"] == "guides_v2"


def test_a_weak_top_guess_with_a_danger_verdict_is_not_called_most_likely():
    from bot import replies as say
    from knowledge_base.catalog import default_catalog

    text, _ = say.identification_text(
        ["amanita_vaginata", "amanita_phalloides", "boletus_edulis"], [0.21, 0.17, 0.08],
        verdict="poisonous", abstained=False, danger_probability=0.17, photo_count=1, catalog=default_catalog(),
        dangerous=[("amanita_phalloides", 0.17)],
    )
    assert "My best guesses - not reliable" in text and "Most likely" not in text
    assert "POISONOUS" in text and "Amanita phalloides" in text


async def test_a_photo_captioned_with_a_poisoning_gets_first_aid_before_the_identification(tmp_path, models):
    core = make_core(make_settings(tmp_path), models["deadly"])
    first_aid, identification = await core.handle(photo_event(text="my daughter ate one of these"))
    unreadable = await core.handle(Event(platform="test", chat_id="2", user_id="7", photos=[b"not a photo"],
                                         text="we ate these an hour ago"))
    core.close()
    assert first_aid.text.startswith("⚠️ Possible poisoning: call a poison centre")
    assert "Amanita phalloides" in first_aid.text  # about this photo
    assert identification.text.startswith("☠️ **DEADLY - can kill**")
    # An unreadable photo still gets first aid first, and the reason the photo failed.
    assert unreadable[0].text.startswith("⚠️ Possible poisoning") and len(unreadable) == 2


async def test_first_replies_fit_a_phone_screen(tmp_path, models):
    """The user-phrased set through the core, each item in its own chat: the median first reply
    (answer, header and the short disclaimer) is at most 500 characters; details wait behind More."""
    import statistics

    import yaml

    from knowledge_base.evaluate import USER_QUESTIONS_FILE

    items = [i for i in yaml.safe_load(USER_QUESTIONS_FILE.read_text(encoding="utf-8")) if i.get("q")]
    core = make_core(make_settings(tmp_path), models["deadly"])
    lengths = []
    for n, item in enumerate(items):
        [reply] = await core.handle(text_event(item["q"], chat=f"screen-{n}", user=f"u{n}"))
        lengths.append(len(reply.text))
    core.close()
    assert len(lengths) >= 200
    assert statistics.median(lengths) <= 500 and max(lengths) <= 600, (statistics.median(lengths), max(lengths))


async def test_questions_and_buttons_are_rate_limited_but_first_aid_never(tmp_path, models):
    core = make_core(make_settings(tmp_path, MESSAGE_RATE_LIMIT=3), models["deadly"])
    replies = [(await core.handle(text_event("is the death cap deadly?", user="flood")))[0] for _ in range(3)]
    [limited] = await core.handle(text_event("is the fly agaric poisonous?", user="flood"))
    [button] = await core.handle(Event("test", "1", "flood", button="more:last"))
    [first_aid] = await core.handle(text_event("my son ate one of them", user="flood"))
    [other_user] = await core.handle(text_event("is the fly agaric poisonous?", user="calm"))
    core.close()
    assert all("Amanita phalloides" in r.text for r in replies)
    assert "sending messages quickly" in limited.text and "sending messages quickly" in button.text
    assert first_aid.text.startswith("⚠️ Possible poisoning: call a poison centre")
    assert "Amanita muscaria" in other_user.text
