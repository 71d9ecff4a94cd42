"""Replies people can trust (issue 21): one story per photo, poisonings first, six languages, short replies.

Run on the bundled catalog with a catalog-only Answerer (no index needed), plus the user-phrased
evaluation set, scored as `python -m knowledge_base evaluate` scores it.
"""

import statistics

import pytest
import yaml

from knowledge_base import phrases
from knowledge_base.answer import Answerer
from knowledge_base.answer_types import PhotoContext, gives_permission_to_eat
from knowledge_base.evaluate import USER_QUESTIONS_FILE, evaluate_user_set, first_aid_leads
from knowledge_base.triage import triage


@pytest.fixture(scope="module")
def answerer():
    return Answerer(None)


# The forager's trial: three photos of a death cap, named "grisette 86 %, death cap 2 %".
GRISETTE_OR_DEATH_CAP = PhotoContext("amanita_vaginata", 0.86, "unknown", False,
                                     [("amanita_phalloides", 0.02), ("amanita_virosa", 0.01)])
DESTROYING_ANGEL = PhotoContext("amanita_vaginata", 0.55, "deadly", False, [("amanita_virosa", 0.31)])
FUNERAL_BELL = PhotoContext("russula_emetica", 0.6, "deadly", False, [("galerina_marginata", 0.2)])


@pytest.mark.parametrize("photo, dangerous", [
    (GRISETTE_OR_DEATH_CAP, ["Amanita phalloides", "Amanita virosa"]),
    (DESTROYING_ANGEL, ["Amanita virosa"]),
    (FUNERAL_BELL, ["Galerina marginata"]),
])
def test_replies_about_a_photo_follow_its_verdict_not_the_top_guess(answerer, photo, dangerous):
    eat = answerer.ask("can I eat it?", photo=photo)
    poison = answerer.ask("is this poisonous?", photo=photo)
    for answer in (eat, poison):
        assert answer.topic == "photo" and answer.verdict == photo.verdict
        for name in dangerous:  # the candidates behind the verdict, by name, early
            assert name in answer.answer[:400], answer.answer
        # The top guess's own edibility is never stated.
        assert "edible" not in answer.full_text.lower().replace("inedible", "")
        assert not gives_permission_to_eat(answer.full_text)
    assert eat.answer.startswith("No - do not eat it.")
    assert poison.answer != eat.answer and poison.answer.split(".")[0] != eat.answer.split(".")[0]


def test_a_poisoning_after_a_photo_leads_with_first_aid_and_the_candidates_facts(answerer):
    answer = answerer.ask("I ate some an hour ago and feel sick", photo=FUNERAL_BELL)
    assert answer.first_aid and first_aid_leads(answer.answer)
    assert "Galerina marginata" in answer.answer
    # The funeral bell's amatoxin onset, not the sickener's fast gastrointestinal one.
    assert "amatoxin" in answer.full_text.lower() or "amanitin" in answer.full_text.lower()
    # The deadly candidate comes before the merely poisonous top guess.
    assert answer.full_text.index("Galerina marginata:") < answer.full_text.index("Russula emetica:")


@pytest.mark.parametrize("message, lang, pet", [
    ("ate wild mushrooms 30 min ago now sweating and drooling", "en", False),
    ("j'ai mangé des champignons il y a 10 heures et je vomis", "fr", False),
    ("mi perro comió una seta, qué hago?", "es", True),
    ("mein Kind hat an einem Fliegenpilz geleckt", "de", False),
    ("ho mangiato dei funghi ieri sera e ora ho la pelle gialla", "it", False),
    ("onze hond heeft een paddenstoel opgegeten", "nl", True),
])
def test_poisonings_get_first_aid_first_in_their_language(answerer, message, lang, pet):
    answer = answerer.ask(message)
    table = phrases.FIRST_AID_PET if pet else phrases.FIRST_AID
    assert answer.first_aid and answer.language == lang
    assert answer.answer.startswith(table[lang]), answer.answer
    assert len(table[lang]) <= 300


def test_late_symptoms_point_to_amatoxins_before_anything_else(answerer):
    answer = answerer.ask("we had mushroom soup yesterday and now we are vomiting")
    assert triage("we had mushroom soup yesterday and now we are vomiting").late
    assert answer.answer.index("amatoxins") < 500


@pytest.mark.parametrize("question", ["can I eat it raw?", "does the death cap cause vomiting?",
                                      "what do chanterelles taste like", "is it edible?"])
def test_questions_about_eating_are_not_poisonings(question):
    assert triage(question) is None


def test_is_it_poisonous_and_can_i_eat_it_differ(answerer):
    poisonous = answerer.ask("is it poisonous?", species="boletus_edulis")
    eat = answerer.ask("can I eat it?", species="boletus_edulis")
    assert poisonous.answer != eat.answer
    assert eat.answer.startswith("I can't tell you to eat it")
    safe = answerer.ask("so its safe then?", species="boletus_edulis")
    assert safe.answer.startswith("No.") and not gives_permission_to_eat(safe.full_text)


def test_genus_and_toxin_answers(answerer):
    inocybes = answerer.ask("are inocybes poisonous")
    assert inocybes.topic == "genus:inocybe" and inocybes.verdict == "deadly"
    assert "Inocybe erubescens" in inocybes.answer
    antidote = answerer.ask("is there an antidote for amanita poisoning")
    assert antidote.topic == "toxin:amatoxin" and "no antidote" in antidote.answer


def test_a_named_comparison_puts_both_species_side_by_side(answerer):
    answer = answerer.ask("how do i tell a chanterelle from a false chanterelle")
    assert answer.species == "cantharellus_cibarius"
    assert "Hygrophoropsis aurantiaca" in answer.full_text and "apart" in answer.full_text


def test_bare_follow_up_without_a_subject_asks_which_mushroom(answerer):
    for question in ("symptoms?", "is it poisonous", "what about the first one?"):
        answer = answerer.ask(question)
        assert answer.topic == "ask_which", question


@pytest.mark.parametrize("path, size", [(USER_QUESTIONS_FILE, 200),
                                        (USER_QUESTIONS_FILE.with_name("user_questions_holdout.yaml"), 100)])
def test_user_phrased_sets_score_at_least_95_percent(answerer, path, size):
    items = yaml.safe_load(path.read_text(encoding="utf-8"))
    report = evaluate_user_set(answerer, items, progress=False)
    m = report["metrics"]
    assert m["questions"] >= size
    counts = {c: v["n"] for c, v in m["by_category"].items()}
    assert counts["poisoning"] >= 25 and sum(n["n"] for lang, n in m["by_language"].items() if lang != "en") >= 39
    assert m["permission_to_eat"] == 0
    assert m["poisonings_with_first_aid_in_300_chars"] == m["poisonings"]
    assert m["score"] >= 0.95, [(f["id"], f["failures"]) for f in report["failures"]]
    assert statistics.median(r["first_reply_chars"] for r in report["rows"]) <= 500
