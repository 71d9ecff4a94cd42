"""Property-based: any text or bytes a user can send gets a reply, never a crash (Hypothesis).

Fed to the knowledge base, the conversation core (as the chat adapters build its events) and the
HTTP API: lone surrogates, control characters, emoji, right-to-left marks, enormous strings.
"""

from __future__ import annotations

import asyncio

import pytest
from api_support import api_settings
from bot_support import make_settings
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import replies as say
from bot.api import create_app
from bot.core import BotCore
from bot.limits import PhotoRateLimiter
from bot.messages import Event
from knowledge_base.answer import Answerer
from knowledge_base.language import clean_text

# Text as users (and attackers) send it: any code point, surrogates included, plus some words that
# reach deeper code paths (species names, poisoning words, languages).
WORDS = st.sampled_from(["death cap", "ate", "comió", "Knollenblätterpilz", "symptoms?", "/more", "it",
                         "amanita", "false", "\ud800", "\x00", "\u202e", "🍄", "vs", "orellanine"])
TEXT = st.one_of(
    st.text(st.characters(codec=None), max_size=300),
    st.lists(st.one_of(WORDS, st.text(max_size=12)), max_size=20).map(" ".join),
    st.text(max_size=50).map(lambda t: t * 200),  # long
)
PROPERTY = settings(max_examples=120, deadline=None, database=None,  # no example database in the checkout
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def answerer():
    return Answerer(None)


@PROPERTY
@given(TEXT)
def test_clean_text_is_valid_bounded_unicode(text):
    cleaned = clean_text(text)
    cleaned.encode("utf-8")  # no lone surrogates left
    assert len(cleaned) <= 2000 and "\x00" not in cleaned


@PROPERTY
@given(st.binary(max_size=400))
def test_clean_text_accepts_bytes(data):
    clean_text(data).encode("utf-8")


@PROPERTY
@given(text=TEXT, species=st.one_of(st.none(), st.text(max_size=40), st.just("amanita_phalloides")))
def test_the_knowledge_base_always_answers(answerer, text, species):
    answer = answerer.ask(text, species=species)
    assert answer.answer.strip()
    answer.answer.encode("utf-8")


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("never-crash")
    # No message rate limit here: every example must reach the code under test.
    bot = BotCore(make_settings(tmp), answerer=Answerer(None), message_limiter=PhotoRateLimiter(0, 60))
    yield bot
    bot.close()


BUTTONS = st.one_of(st.none(), st.text(max_size=80),
                    st.tuples(st.sampled_from(["poison", "look", "src", "looks", "more", "srcs"]),
                              st.one_of(st.integers(min_value=-10**30, max_value=10**40).map(str),
                                        st.text(max_size=30))).map(":".join))


@PROPERTY
@given(text=TEXT, as_command=st.booleans(), button=BUTTONS)
def test_the_core_always_replies(core, text, as_command, button):
    if button is not None:
        event = Event("test", "chat", "user", button=button)
    elif as_command:
        event = Event("test", "chat", "user", command=text.split(" ")[0][:20] or "x", args=text)
    else:
        event = Event("test", "chat", "user", text=text)
    replies = asyncio.run(core.handle(event))
    assert replies and all(r.text.strip() for r in replies)
    assert all(r.text != say.SOMETHING_WENT_WRONG for r in replies), text  # no exception behind a reply


@pytest.fixture(scope="module")
def client(tmp_path_factory, answerer):
    app = create_app(api_settings(tmp_path_factory.mktemp("never-crash-api")), classifier=None,
                     answerer=answerer)
    with TestClient(app) as test_client:
        yield test_client


@PROPERTY
@given(question=TEXT, species=st.one_of(st.none(), st.text(max_size=40)))
def test_the_api_answers_or_refuses_but_never_fails(client, question, species):
    import json

    body = json.dumps({"question": question, "species": species})  # lone surrogates travel as \ud800
    response = client.post("/v1/ask", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code in (200, 413, 422), response.text  # 413: over the 32 KB of a JSON request
    assert response.json()


@PROPERTY
@given(st.binary(max_size=300))
def test_the_api_refuses_garbage_bodies_cleanly(client, data):
    response = client.post("/v1/ask", content=data, headers={"Content-Type": "application/json"})
    assert response.status_code in (200, 400, 422), response.text  # a client error with a reason, never a 5xx
    assert response.json()["detail"]
