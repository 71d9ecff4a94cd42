"""Optional LLM rewording: the guard keeps catalog facts, with LangChain's fake chat models."""

import json

import httpx
import pytest
from kb_support import make_catalog
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage

from knowledge_base.answer import Answerer
from knowledge_base.answer_types import gives_permission_to_eat
from knowledge_base.llm import OpenAICompatibleChat, Rephraser, guard_rewording


@pytest.fixture(scope="module")
def catalog():
    return make_catalog()


def plain(catalog, question, species=None):
    return Answerer(None, catalog).ask(question, species=species)


def test_faithful_rewording_is_used(catalog):
    original = plain(catalog, "Is the death cap poisonous?")
    reworded = ("Careful: Amanita phalloides, the death cap, is deadly. It contains alpha-amanitin. "
                "If anyone may have eaten it, call a poison centre or emergency number now and do not wait "
                "for symptoms; keep a sample of the mushroom.")
    model = FakeListChatModel(responses=[reworded])
    answerer = Answerer(None, catalog, rephraser=Rephraser(model))
    answer = answerer.ask("Is the death cap poisonous?")
    assert answer.answer == reworded
    assert (answer.species, answer.verdict, answer.citations) == (original.species, original.verdict,
                                                                 original.citations)


@pytest.mark.parametrize("bad", [
    "The death cap (Amanita phalloides) is edible and delicious when cooked. Enjoy!",
    "Amanita phalloides is mildly toxic; if eaten, call a poison centre, keep a sample, do not wait.",  # drops "deadly"
    "Amanita phalloides is deadly. Don't worry about eating a little.",  # drops first aid
    "Yes, you can eat Amanita phalloides; it is deadly only raw. Call a poison centre, keep a sample, do not wait.",
])
def test_contradicting_rewording_is_replaced_by_plain_answer(catalog, bad):
    original = plain(catalog, "Is the death cap poisonous?")
    model = GenericFakeChatModel(messages=iter([AIMessage(content=bad)]))
    answer = Answerer(None, catalog, rephraser=Rephraser(model)).ask("Is the death cap poisonous?")
    assert answer.answer == original.answer
    assert guard_rewording(original, bad) is not None


def test_edible_rewording_may_not_grant_permission(catalog):
    original = plain(catalog, "Is porcini edible?")
    assert guard_rewording(original, "Boletus edulis is edible - go ahead and eat it, an expert is not needed.")
    assert guard_rewording(original, "Boletus edulis (porcini) is a known edible, but only eat it if an "
                                     "expert has identified it in person. Watch for Rubroboletus satanas.") is None


def test_failing_model_falls_back(catalog):
    original = plain(catalog, "Is the fly agaric poisonous?")
    model = FakeListChatModel(responses=[])  # raises when asked
    answer = Answerer(None, catalog, rephraser=Rephraser(model)).ask("Is the fly agaric poisonous?")
    assert answer.answer == original.answer and not gives_permission_to_eat(answer.answer)


def test_abstentions_are_not_reworded(catalog):
    model = FakeListChatModel(responses=["Sure, the weather will be sunny!"])
    answer = Answerer(None, catalog, rephraser=Rephraser(model)).ask("What is the weather tomorrow?")
    assert answer.abstained and "sunny" not in answer.answer


def test_openai_compatible_chat_posts_chat_completions(monkeypatch):
    # Network edge faked: the HTTP call itself.
    seen = {}

    def fake_post(url, json=None, headers=None, timeout=None):
        seen.update(url=url, body=json, headers=headers)
        return httpx.Response(200, json={"choices": [{"message": {"content": "reworded"}}]},
                              request=httpx.Request("POST", url))

    monkeypatch.setattr(httpx, "post", fake_post)
    model = OpenAICompatibleChat(base_url="http://llm:11434", model="tiny", api_key="sk-test-secret-123")
    assert model.invoke("hello").content == "reworded"
    assert seen["url"] == "http://llm:11434/v1/chat/completions"
    assert seen["body"]["model"] == "tiny" and seen["body"]["messages"][-1]["content"] == "hello"
    assert seen["headers"]["Authorization"] == "Bearer sk-test-secret-123"
    assert "sk-test-secret-123" not in json.dumps(repr(model))  # the key stays a SecretStr
