"""Grounded answers: catalog facts (authoritative) + cited field-guide passages (supporting text).

The answer is composed from templates, not generated, so the safety rules hold whatever the
question or the documents say: no permission to eat, first aid on every dangerous answer,
"unknown" treated as possibly deadly, deadly lookalikes named, outdated guides called outdated.
An optional LLM (knowledge_base.llm) may reword the composed text; a guard falls back to the
plain text when the rewording drifts.
"""

from __future__ import annotations

import logging
import re

from knowledge_base import phrases
from knowledge_base.answer_types import UNSURE_BELOW, Answer, Citation, PhotoContext
from knowledge_base.catalog import DANGEROUS, SEVERITY, Catalog, SpeciesProfile, default_catalog
from knowledge_base.language import clean_text
from knowledge_base.phrases import say
from knowledge_base.resolve import (
    ALCOHOL,
    CAN_EAT,
    COOKING,
    FEATURES,
    GENERAL,
    HABITAT,
    INJECTION,
    LOOKALIKES,
    SYMPTOMS,
    TOXICITY,
    TREATMENT,
    Resolution,
    SpeciesResolver,
)
from knowledge_base.resolve import (
    FIRST_AID as FIRST_AID_INTENT,
)
from knowledge_base.retrieval import HybridRetriever, Passage, tokenize
from knowledge_base.topics import TOXINS, Toxin, genus_species, species_with_toxin
from knowledge_base.triage import Triage, mentions_child_or_pet

log = logging.getLogger(__name__)

# --- fixed safety sentences (the rules nothing overrides) -----------------------------------------
FIRST_AID_ADVICE = (
    "If anyone may have eaten it: call your poison centre or emergency number now (112 in Europe, 911 in "
    "North America; for a pet, your vet or an animal poison line). Do not wait for symptoms - with the most "
    "dangerous species they start only hours later, when the damage is already under way. Keep a sample of "
    "the mushroom (leftovers, peelings or a photo) for identification and bring it along."
)
EXPERT_RULE = (
    "Eat a wild mushroom only if an expert has identified it with certainty in person - never on the "
    "strength of a photo, a bot or a book."
)
UNKNOWN_RULE = "Treat it as possibly deadly: do not eat it."
INJECTION_REPLY = "I can't change my safety rules, whatever a message asks."
OFF_TOPIC = (
    "I can only answer questions about mushrooms and other fungi (identification, toxicity, lookalikes, "
    "habitat, what to do after eating one). Please ask me about a mushroom."
)
EMPTY_QUESTION = "Please type a question about a mushroom, for example: \"Is the fly agaric poisonous?\""
ASK_WHICH = (
    "Which mushroom do you mean? Tell me its name (Latin or common) or send a photo first, and I'll "
    "answer from my species catalog."
)
WEAK_EVIDENCE = (
    "I don't have reliable information on that in my sources, so I won't guess."
)

VERDICT_PHRASES = {
    "deadly": "DEADLY poisonous",
    "poisonous": "poisonous",
    "inedible": "not edible (inedible)",
    "edible_with_caution": "edible only with caution (experts only, never on a photo)",
    "edible": "classed as edible (only once an expert has checked it in person)",
    "unknown": "of unknown edibility - treat it as possibly deadly",
}

# An 1903-style species heading: "=Paxillus involutus= (Batsch.) Fr. =Edible.=" - the guide's own verdict.
_GUIDE_HEADING = re.compile(r"=([A-Z][a-z]+)(?: \([A-Za-z]+\))? ([a-z]+)=[^=\n]{0,60}=([^=\n]{1,40})=")
_HISTORICAL_EDIBLE = re.compile(r"\b(edible|esculent|eaten|eating it|good to eat|recommended|wholesome|"
                                r"without harm|harmless|food)\b", re.I)
_HISTORICAL_AGREES = re.compile(r"\b(they are right|already called it|correctly|rightly|never a recognised food|"
                                r"(mistake|mistaken|confused) (it )?(for|with) an edible)\b", re.I)
# "so it's safe then?", "so I can eat it": a conclusion the bot must never confirm.
_SO_SAFE = re.compile(r"\b(so|then|ok so|alright so)\b.{0,25}\b(safe|eat|edible|fine|ok|okay|good)\b"
                      r"|\b(also|dann)\b.{0,25}\b(sicher|essbar|essen|unbedenklich)\b|\bdonc\b.{0,25}\b(sur|comestible|manger)\b"
                      r"|\bentonces\b.{0,25}\b(segur|comestible|comer)|\bquindi\b.{0,25}\b(sicur|commestibile|mangiar)"
                      r"|\bdus\b.{0,25}\b(veilig|eetbaar|eten)\b", re.I)
# The first reply a phone shows without scrolling (about 500 characters, of which the bots use a line
# for the short disclaimer); the rest goes behind "More".
FIRST_REPLY_CHARS = 440
# Catalog fields an intent's answer is built from (cited by name).
_FIELD_OF_INTENT = {SYMPTOMS: "symptoms", FEATURES: "features", LOOKALIKES: "lookalikes", HABITAT: "habitat",
                    TREATMENT: "toxins", ALCOHOL: "toxins", FIRST_AID_INTENT: "symptoms"}
# A passage counts as evidence for a question without a species when it is this similar (cosine)
# and contains this share of the question's content words.
MIN_EVIDENCE_SIMILARITY = 0.45
MIN_EVIDENCE_COVERAGE = 0.5
_GENERIC_WORDS = frozenset(tokenize("mushroom mushrooms fungus fungi toadstool toadstools wild kind kinds type "
                                    "types species thing things good best tell know explain"))
_WHICH_ARE_DEADLY = re.compile(r"\b(which|what|list|name)\b.{0,20}\b(mushrooms|species|fungi|ones|toadstools)\b"
                               r".{0,30}\b(deadly|lethal|fatal|kill|most dangerous)", re.I)


def edibility_words(edibility: str) -> str:
    """An edibility class for a list, with its caveat wherever it says "edible"."""
    return {"edible": "edible, experts only", "edible_with_caution": "edible with caution, experts only"}.get(
        edibility, edibility.replace("_", " "))


def lexical_coverage(question: str, passage: str) -> float:
    """Share of the question's content words (minus generic fungus words) found in the passage."""
    words = set(tokenize(question)) - _GENERIC_WORDS
    if not words:
        return 0.0
    return len(words & set(tokenize(passage))) / len(words)


# A dangerous species the model gives this much probability is a candidate in its own right; below it,
# one is named only when nothing else points at a danger.
CANDIDATE_MIN_PROBABILITY = 0.005


def photo_candidates(photo: PhotoContext, catalog: Catalog, limit: int = 3) -> list[str]:
    """The dangerous species behind a photo's verdict, the worst first - the one list that the
    identification reply and every answer about the photo name, so they tell one story:
    1. the model's deadly and poisonous candidates (>= 0.5 %; the top guess too when it is one),
       deadly before poisonous, then by probability;
    2. when fewer than two: the top guess's dangerous lookalikes from the catalog;
    3. when still none: the model's most probable dangerous species, however small."""
    def dangerous(label: str) -> bool:
        return catalog.edibility(label) in DANGEROUS

    ranked = [(lab, p) for lab, p in photo.dangerous if dangerous(lab)]
    if photo.top and dangerous(photo.top) and photo.top not in dict(ranked):
        ranked.append((photo.top, photo.probability))
    strong = sorted((x for x in ranked if x[1] >= CANDIDATE_MIN_PROBABILITY or x[0] == photo.top),
                    key=lambda x: (SEVERITY[catalog.edibility(x[0])], -x[1]))
    found = [lab for lab, _ in strong]
    if len(found) < 2 and photo.top and not dangerous(photo.top):
        profile = catalog.get(photo.top)
        lookalikes = sorted((lk for lk in (profile.lookalikes if profile else []) if lk.edibility in DANGEROUS),
                            key=lambda lk: SEVERITY[lk.edibility])
        found += [lk.species for lk in lookalikes if lk.species not in found]
    if not found:
        found = [lab for lab, _ in sorted(ranked, key=lambda x: -x[1])[:2]]
    return found[:limit]


def candidates_sentence(photo: PhotoContext, candidates: list[str], names: str, lang: str) -> str:
    """"It could be X or Y" when the model itself points at them; "a photo can't rule out its
    dangerous lookalikes" when they come from the catalog only (no overstated evidence)."""
    if not candidates:
        return ""
    from_model = any(lab in dict(photo.dangerous) or lab == photo.top for lab in candidates)
    return say(phrases.COULD_BE if from_model else phrases.LOOKALIKES_NOT_RULED_OUT, lang, candidates=names)


def pack(parts: list[str], limit: int = FIRST_REPLY_CHARS) -> tuple[str, str]:
    """Parts in priority order -> (first reply of at most `limit` chars, the rest).

    The first part always goes first (it carries the verdict or the first aid); later parts follow
    in order while they fit, and the rest keeps its order behind "More".
    """
    parts = [p.strip() for p in parts if p and p.strip()]
    first: list[str] = []
    for i, part in enumerate(parts):
        if first and len(" ".join([*first, part])) > limit:
            return " ".join(first), " ".join(parts[i:])
        first.append(part)
    return " ".join(first), ""


# --- small text helpers ---------------------------------------------------------------------------
def _clean(text: str) -> str:
    """Guide markup (=bold=, _italics_) and line breaks out, for short quotations."""
    text = re.sub(r"\[Illustration[^\]]*\]", " ", text)
    text = text.replace("=", "").replace("_", "")
    return " ".join(text.split())


def excerpt(text: str, names: list[str] | tuple[str, ...] = (), width: int = 260) -> str:
    """A short quotation, starting at the sentence that names the species where there is one."""
    clean = _clean(text)
    start = 0
    lowered = clean.lower()
    for name in names:
        pos = lowered.find(name.lower()) if name else -1
        if pos >= 0:
            start = lowered.rfind(". ", 0, pos) + 2 if lowered.rfind(". ", 0, pos) >= 0 else 0
            break
    else:
        # Chunks often begin mid-sentence: start at the first full sentence if one begins early.
        if clean[:1].islower():
            boundary = clean.find(". ", 0, 160)
            if boundary >= 0:
                start = boundary + 2
    piece = clean[start:start + width]
    if start + width < len(clean):
        piece = piece.rsplit(" ", 1)[0] + " ..."
    return ("... " if start > 0 else "") + piece


def short_title(title: str, limit: int = 60) -> str:
    """'Studies of American Fungi. Mushrooms, Edible, ... (2nd ed.; ...)' -> 'Studies of American Fungi'."""
    short = re.split(r"\s\(|\. ", title, maxsplit=1)[0].strip()
    return short if len(short) <= limit else short[:limit].rsplit(" ", 1)[0] + " ..."


def _join(items: list[str]) -> str:
    return "; ".join(i for i in items if i)


class Answerer:
    """Answer mushroom questions from the catalog, citing passages of the serving collection."""

    def __init__(self, store=None, catalog: Catalog | None = None, *, rephraser=None, k: int = 5):
        """`store` is a HybridRetriever, a LangChain Chroma store (wrapped here), or None (catalog only)."""
        self.catalog = catalog if catalog is not None else default_catalog()
        if store is None or isinstance(store, HybridRetriever):
            self.retriever = store
        else:
            self.retriever = HybridRetriever(store)
        self.resolver = SpeciesResolver(self.catalog)
        self.rephraser = rephraser
        self.k = k

    @classmethod
    def from_settings(cls, settings=None) -> Answerer:
        """Open the serving collection (catalog-only answers when there is no index yet)."""
        from config import get_settings

        settings = settings or get_settings()
        retriever = None
        try:
            from knowledge_base.vectorstore import lexical_cache_file, open_serving

            store = open_serving(settings)
            retriever = HybridRetriever(store, cache_file=lexical_cache_file(settings, store))
        except Exception as exc:  # no index yet, Chroma server down: answers still come from the catalog
            log.warning("knowledge base: no serving index (%s); answering from the catalog only", exc)
        rephraser = None
        if settings.llm_base_url:
            from knowledge_base.llm import Rephraser, chat_model_from_settings

            rephraser = Rephraser(chat_model_from_settings(settings))
        return cls(retriever, default_catalog(), rephraser=rephraser)

    # --- public API -----------------------------------------------------------------------------
    def ask(self, question: str, species: str | None = None, photo: PhotoContext | None = None,
            poisoning: bool = False) -> Answer:
        return self.answer_with_passages(question, species, photo, poisoning)[0]

    def answer_with_passages(self, question: str, species: str | None = None, photo: PhotoContext | None = None,
                             poisoning: bool = False) -> tuple[Answer, list[Passage]]:
        """The answer plus the passages retrieved for it (the evaluation scores those).

        `species`: the chat's subject (a label), used when the question names none. `photo`: the
        chat's last photo, when the question is about it ("can I eat it?"): the answer then follows
        the photo's verdict and its dangerous candidates, never the top guess's edibility.
        `poisoning`: the chat is about a possible poisoning (an earlier message said someone ate a
        mushroom), so a follow-up on symptoms or treatment leads with first aid again.
        """
        question = clean_text(question).strip()
        if not question:
            return Answer(EMPTY_QUESTION, None, None, [], True, topic="ask_which"), []
        if photo is not None and photo.top and not species:
            species = photo.top
        res = self.resolver.resolve(question, clean_text(species, 200) if species else None)
        if poisoning and res.triage is None and res.on_topic and res.intent in (
                SYMPTOMS, TREATMENT, FIRST_AID_INTENT, TOXICITY, GENERAL):
            res.triage = Triage(ingested=True, symptoms=False, pet=False, child=False, hours=None)
        answer, passages = self._compose(res, photo)
        if self.rephraser is not None and not answer.abstained and answer.language == "en":
            answer = self.rephraser.rephrase(answer)
        return answer, passages

    def retrieve(self, question: str, species: str | None = None) -> list[Passage]:
        """Passages for a question, filtered by species where one is known."""
        if self.retriever is None or len(self.retriever) == 0:
            return []
        profile = self.catalog.get(species) if species else None
        names = [profile.scientific_name, *profile.synonyms] if profile else []
        passages = self.retriever.search(question, species=species, k=self.k, names=names)
        # Documents cannot smuggle instructions into an answer: such passages are never used.
        return [p for p in passages if not INJECTION.search(p.text)]

    # --- composition ---------------------------------------------------------------------------
    def _compose(self, res: Resolution, photo: PhotoContext | None) -> tuple[Answer, list[Passage]]:
        lang = res.language
        prefix = [INJECTION_REPLY] if res.injection else []
        # Say how a misspelt name was read, so a wrong guess is visible to the user.
        prefix += [f"(I read \"{m.text}\" as {self._name_of(m.label)}.)" for m in res.mentions if m.score < 100]
        named = bool(res.mentions or res.genus or res.toxin or res.unknown_names)
        # About the photo: nothing else named, or the photo's own top guess named ("so it's a grisette?").
        top_genus = photo.top.split("_", 1)[0] if photo is not None and photo.top else None
        on_photo = photo is not None and photo.top is not None and (
            (not named and res.species_from_caller)
            or (bool(res.mentions) and (photo.top in {m.label for m in res.mentions} or res.refers_back))
            or (res.genus is not None and (res.genus == top_genus or res.refers_back)))
        if res.triage is not None:
            return self._poisoning(res, res.triage, photo if on_photo else None, prefix), []
        if not res.on_topic:
            return Answer(" ".join([*prefix, say(phrases.OFF_TOPIC, lang)]), None, None, [], True, language=lang,
                          topic="off_topic"), []
        if on_photo and not self._photo_agrees(photo):
            return self._photo_answer(res, photo, prefix), []
        also = ""
        if on_photo:  # the photo's verdict is its top guess's own class: the species answer, about the top
            res.species, res.other_species, res.genus = photo.top, [], None
            others = [c for c in photo_candidates(photo, self.catalog) if c != photo.top]
            if others:  # the photo's other dangerous candidates are named right after the verdict
                also = say(phrases.COULD_BE, res.language, candidates=self._name_list([photo.top, *others],
                                                                                      res.language))
        if res.toxin is not None:
            return self._toxin_answer(res, res.toxin, prefix), []
        if res.genus is not None:
            return self._genus_answer(res, res.genus, prefix), []
        if res.species is None:
            return self._without_species(res, prefix)
        profile = self.catalog.get(res.species)
        passages = self.retrieve(res.question, res.species)
        if profile is None:
            # A label the caller gave (e.g. from a photo) that the catalog lacks.
            name = res.species.replace("_", " ").capitalize()
            parts = prefix + [f"I have no verified profile for {name}, so I can't say whether it is edible.",
                              UNKNOWN_RULE, say(phrases.EXPERT_RULE, lang)]
            if res.intent == FIRST_AID_INTENT:
                parts.insert(len(prefix), FIRST_AID_ADVICE)
            first, more = pack(parts)
            return Answer(first, res.species, "unknown", self._citations(passages, []), True, more=more,
                          language=lang), passages
        others = [self.catalog.get(o) for o in res.other_species]
        parts, guide = self._species_parts(res, profile, [o for o in others if o is not None], passages, also)
        first, more = pack(prefix + parts)
        cites = [self._catalog_citation(profile, _FIELD_OF_INTENT.get(res.intent, "edibility_note"))]
        cites += self._citations(guide, [profile.scientific_name, *profile.synonyms])
        candidates = [profile.label] if profile.edibility in DANGEROUS else []
        return Answer(first, profile.label, profile.edibility, cites, False, more=more, language=lang,
                      candidates=candidates), passages

    # --- poisonings ------------------------------------------------------------------------------
    def _poisoning(self, res: Resolution, triage: Triage, photo: PhotoContext | None, prefix: list[str]) -> Answer:
        """First aid first, in the user's language; then what is known about what was eaten."""
        lang = res.language
        parts = [say(phrases.FIRST_AID_PET if triage.pet else phrases.FIRST_AID, lang)]
        delayed = say(phrases.DELAYED, lang)
        if triage.late:
            parts.append(delayed)
        species, verdict, candidates, cites = None, None, [], []
        suspects: list[SpeciesProfile] = []
        if photo is not None:
            candidates = self._photo_candidates(photo)
            verdict = "unknown" if photo.abstained else photo.verdict
            species = photo.top
            suspects = [self.catalog.get(c) for c in candidates if self.catalog.get(c)]
            if candidates:
                parts.append(candidates_sentence(photo, candidates, self._name_list(candidates, lang), lang))
            if photo.top and photo.top not in candidates:
                parts.append(say(phrases.LOOKS_LIKE, lang, name=self._local_name(photo.top, lang)))
        elif res.toxin is not None:
            suspects = species_with_toxin(res.toxin, self.catalog)[:3]
            parts.append(self._toxin_facts(res.toxin))
        elif res.genus is not None:
            suspects = [p for p in genus_species(res.genus, self.catalog) if p.edibility in DANGEROUS][:3]
        elif res.species is not None:
            named = [self.catalog.get(lab) for lab in [res.species, *res.other_species]]
            suspects = sorted((p for p in named if p is not None), key=lambda p: SEVERITY[p.edibility])
            if suspects:
                profile = suspects[0]
                species, verdict = profile.label, profile.edibility
                parts.append(say(phrases.SPECIES_IS, lang, name=self._local_name(profile.label, lang),
                                 verdict=phrases.VERDICT.get(lang, phrases.VERDICT["en"])[profile.edibility]))
        if not triage.late:
            parts.append(delayed)
        if lang != "en" and suspects:
            parts.append(say(phrases.IN_ENGLISH, lang))
        for p in suspects:
            parts.append(f"{p.scientific_name}: {self._poisoning_facts(p)}")
            cites.append(self._catalog_citation(p, "symptoms"))
        if not suspects and photo is None:
            parts.append(say(phrases.ASK_WHICH, lang).split("?")[0] + "? "
                         + ("Tell me its name or send a photo: I'll add what is known about it."
                            if lang == "en" else ""))
        first, more = pack(prefix + parts)
        return Answer(first, species, verdict, cites, False, more=more, language=lang, topic="first_aid",
                      candidates=candidates or [p.label for p in suspects if p.edibility in DANGEROUS],
                      first_aid=True)

    # --- photos ----------------------------------------------------------------------------------
    def _photo_agrees(self, photo: PhotoContext) -> bool:
        """True when the photo's verdict is simply its top guess's own class (a confident poisonous
        fly agaric, an inedible bracket): then the species answer tells the same story. A verdict that
        differs (dangerous mass, "unknown") is the photo's own story, told by _photo_answer."""
        if photo.abstained or not photo.top or photo.top not in self.catalog or photo.probability < UNSURE_BELOW:
            return False  # an unsure top guess is no species to describe: the photo's story instead
        return photo.verdict == self.catalog.edibility(photo.top)

    def _photo_candidates(self, photo: PhotoContext) -> list[str]:
        return photo_candidates(photo, self.catalog)

    def _photo_answer(self, res: Resolution, photo: PhotoContext, prefix: list[str]) -> Answer:
        lang = res.language
        verdict = "unknown" if photo.abstained else photo.verdict
        candidates = self._photo_candidates(photo)
        verdict_words = phrases.VERDICT.get(lang, phrases.VERDICT["en"])
        photo_line = say(phrases.PHOTO_VERDICT, lang, verdict=verdict_words.get(verdict, verdict_words["unknown"]))
        if photo.abstained:
            photo_line += " " + say(phrases.NOT_RELIABLE, lang)
        could_be = candidates_sentence(photo, candidates, self._name_list(candidates, lang), lang)
        looks = (say(phrases.LOOKS_LIKE, lang, name=self._local_name(photo.top, lang))
                 if photo.top and photo.top not in candidates else "")
        direct = {"deadly": "yes_deadly", "poisonous": "yes"}.get(verdict, "maybe")
        if res.intent == CAN_EAT or res.intent in (COOKING, ALCOHOL):
            lead = [say(phrases.SAFE_THEN, lang) if _SO_SAFE.search(res.question) else say(phrases.NO_EAT, lang),
                    photo_line, could_be]
        elif res.intent == TOXICITY:
            lead = [say(phrases.IS_POISONOUS, lang)[direct] if isinstance(phrases.IS_POISONOUS.get(lang), dict)
                    else phrases.IS_POISONOUS["en"][direct], photo_line, could_be]
        else:
            lead = [photo_line, could_be]
        suspects = [p for p in (self.catalog.get(c) for c in candidates) if p is not None]
        if res.intent == SYMPTOMS and suspects:
            lead += [f"{p.scientific_name}: onset {p.onset}." for p in suspects[:2] if p.onset]
        if suspects:
            lead.append(say(phrases.IF_EATEN, lang))
        body = [looks]
        if lang != "en" and (suspects or res.intent in (FEATURES, LOOKALIKES, HABITAT)):
            body.append(say(phrases.IN_ENGLISH, lang))
        top = self.catalog.get(photo.top) if photo.top else None
        if res.intent in (FEATURES, HABITAT, LOOKALIKES) and top is not None:
            detail = {FEATURES: self._features, HABITAT: self._habitat}.get(res.intent)
            if detail is not None:
                body.append(detail(top))
        for p in suspects:
            tell = self._how_to_tell(top, p) if top is not None and top.label != p.label else None
            facts = self._poisoning_facts(p) if res.intent != LOOKALIKES else ""
            body.append(" ".join(x for x in (f"{p.scientific_name}:", facts,
                                              f"How to tell it from {top.scientific_name}: {tell}." if tell else "")
                                 if x))
        body += [FIRST_AID_ADVICE if suspects else "", say(phrases.EXPERT_RULE, lang)]
        first, more = pack(prefix + lead + body)
        cites = [self._catalog_citation(p, "symptoms" if res.intent != LOOKALIKES else "lookalikes")
                 for p in suspects[:3]]
        return Answer(first, photo.top, verdict, cites, False, more=more, language=lang, topic="photo",
                      candidates=candidates)

    # --- toxins and genera -----------------------------------------------------------------------
    def _toxin_facts(self, toxin: Toxin) -> str:
        return f"{toxin.name[0].upper()}{toxin.name[1:]}: onset {toxin.onset}; {toxin.effects}."

    def _toxin_answer(self, res: Resolution, toxin: Toxin, prefix: list[str]) -> Answer:
        lang = res.language
        carriers = species_with_toxin(toxin, self.catalog)
        worst = carriers[0].edibility if carriers else None
        name = toxin.name[0].upper() + toxin.name[1:]
        found_in = (f"Found in: {', '.join(p.display_name for p in carriers[:5])}." if carriers else
                    f"My catalog lists no species with {toxin.name}.")
        if res.intent == TREATMENT:
            lead = [f"Treatment ({toxin.name}): {toxin.treatment}.",
                    f"{name}: onset {toxin.onset}; {toxin.effects}."]
        else:
            lead = [f"{name}: onset {toxin.onset}; {toxin.effects}.", f"Treatment: {toxin.treatment}."]
        parts = [*prefix, say(phrases.IF_EATEN, lang), *lead, found_in]
        if lang != "en":
            parts.insert(len(prefix) + 1, say(phrases.IN_ENGLISH, lang))
        parts += [FIRST_AID_ADVICE, say(phrases.EXPERT_RULE, lang)]
        first, more = pack(parts)
        cites = [Citation("knowledge_base/topics.py", f"Toxin facts: {toxin.name}", toxin.source)]
        cites += [self._catalog_citation(p, "toxins") for p in carriers[:2]]
        return Answer(first, None, worst, cites, False, more=more, language=lang, topic=f"toxin:{toxin.key}",
                      candidates=[p.label for p in carriers[:5] if p.edibility in DANGEROUS])

    def _genus_answer(self, res: Resolution, genus: str, prefix: list[str]) -> Answer:
        lang = res.language
        members = genus_species(genus, self.catalog)
        worst = members[0].edibility
        words = phrases.VERDICT.get(lang, phrases.VERDICT["en"])
        head = say(phrases.SPECIES_IS, lang, name=genus.capitalize(), verdict=words[worst])
        listed = "; ".join(f"{p.display_name} - {edibility_words(p.edibility)}" for p in members[:6])
        more_count = f" and {len(members) - 6} more" if len(members) > 6 else ""
        lead = [head]
        if res.intent == CAN_EAT or _SO_SAFE.search(res.question):
            lead.insert(0, say(phrases.NO_EAT, lang) if worst in DANGEROUS else say(phrases.NOT_FROM_ME, lang))
        parts = [*prefix, *lead]
        if lang != "en":
            parts.append(say(phrases.IN_ENGLISH, lang))
        parts += [f"The worst species of {genus.capitalize()} in my catalog is {VERDICT_PHRASES[worst]}; species: "
                  f"{listed}{more_count}.",
                  "Telling species of one genus apart from a photo is unreliable: treat any of them as the worst.",
                  FIRST_AID_ADVICE if worst in DANGEROUS else "", say(phrases.EXPERT_RULE, lang)]
        first, more = pack(parts)
        cites = [self._catalog_citation(p, "edibility_note") for p in members[:3]]
        return Answer(first, None, worst, cites, False, more=more, language=lang, topic=f"genus:{genus}",
                      candidates=[p.label for p in members if p.edibility in DANGEROUS][:5])

    # --- no species ------------------------------------------------------------------------------
    def _without_species(self, res: Resolution, prefix: list[str]) -> tuple[Answer, list[Passage]]:
        lang = res.language
        if res.unknown_names:
            name = res.unknown_names[0]
            parts = [f"{name} is not in my species catalog, so I can't tell you anything reliable about it.",
                     UNKNOWN_RULE, say(phrases.EXPERT_RULE, lang)]
            if res.intent == FIRST_AID_INTENT:
                parts.insert(0, FIRST_AID_ADVICE)
            first, more = pack(prefix + parts)
            return Answer(first, None, None, [], True, more=more, language=lang), []
        if res.intent == FIRST_AID_INTENT:
            parts = prefix + [say(phrases.FIRST_AID, lang), say(phrases.DELAYED, lang),
                              "Treat any unidentified mushroom as possibly deadly.",
                              "If you know which mushroom it was, tell me its name and I'll tell you what is known "
                              "about its poisoning."]
            first, more = pack(parts)
            return Answer(first, None, None, [], False, more=more, language=lang, topic="first_aid",
                          first_aid=True), []
        if res.intent == TOXICITY and _WHICH_ARE_DEADLY.search(res.question):
            deadly = sorted((p for p in self.catalog.profiles.values() if p.edibility == "deadly"),
                            key=lambda p: p.scientific_name)
            names = ", ".join(p.display_name for p in deadly[:8])
            first, more = pack(prefix + [f"Deadly species in my catalog include: {names}"
                                         + (f" and {len(deadly) - 8} more." if len(deadly) > 8 else "."),
                                         "Treat any mushroom you cannot identify with certainty as possibly deadly.",
                                         EXPERT_RULE])
            return Answer(first, None, None, [], False, more=more, language=lang), []
        needs_subject = res.intent in (TOXICITY, CAN_EAT, SYMPTOMS, LOOKALIKES, TREATMENT, ALCOHOL, COOKING)
        if needs_subject or res.refers_back or (res.intent != GENERAL and len(res.question.split()) <= 3):
            lead = [say(phrases.SAFE_THEN, lang)] if _SO_SAFE.search(res.question) or res.intent == CAN_EAT else []
            first, more = pack(prefix + lead + [say(phrases.ASK_WHICH, lang), say(phrases.EXPERT_RULE, lang)])
            return Answer(first, None, None, [], True, more=more, language=lang, topic="ask_which"), []
        # A general question about fungi: answer from the guides if they clearly cover it.
        passages = self.retrieve(res.question)
        guide = [p for p in passages if p.kind != "catalog"] or passages
        # Every mushroom sentence is fairly close to every other one in embedding space, so evidence
        # also needs the question's own content words in the passage.
        strong = [p for p in guide if (p.similarity or 0.0) >= MIN_EVIDENCE_SIMILARITY
                  and lexical_coverage(res.question, p.text) >= MIN_EVIDENCE_COVERAGE]
        if not strong:
            first, more = pack(prefix + [WEAK_EVIDENCE, say(phrases.ASK_WHICH, lang)])
            return Answer(first, None, None, [], True, more=more, language=lang, topic="ask_which"), passages
        quotes = [f"\"{excerpt(p.text, width=200)}\" ({short_title(p.title)})" for p in strong[:2]]
        first, more = pack(prefix + ["From the field guides in my library (old texts: their edibility advice can be "
                                     "outdated):", *quotes, EXPERT_RULE])
        return Answer(first, None, None, self._citations(strong[:2], [], include_catalog=True), False, more=more,
                      language=lang), passages

    # --- one species -----------------------------------------------------------------------------
    def _species_parts(self, res: Resolution, p: SpeciesProfile, others: list[SpeciesProfile],
                       passages: list[Passage], also: str = "") -> tuple[list[str], list[Passage]]:
        """Parts of the answer in priority order (verdict and action first) and the guide passages used.
        `also`: a sentence that follows the verdict (a photo's other dangerous candidates)."""
        lang = res.language
        name = p.display_name
        words = phrases.VERDICT.get(lang, phrases.VERDICT["en"])
        dangerous = p.edibility in DANGEROUS
        intent = res.intent
        verdict = (f"{name} is {VERDICT_PHRASES[p.edibility]}." if lang == "en" else
                   say(phrases.SPECIES_IS, lang, name=self._local_name(p.label, lang), verdict=words[p.edibility]))
        lead = [verdict, also] if also else [verdict]
        if _SO_SAFE.search(res.question) or (intent == CAN_EAT and res.refers_back and not dangerous
                                             and re.search(r"\bso\b|\bthen\b", res.question, re.I)):
            lead.insert(0, say(phrases.SAFE_THEN, lang))
        elif intent == CAN_EAT:
            lead.insert(0, say(phrases.NO_EAT, lang) if p.edibility != "edible" else say(phrases.NOT_FROM_ME, lang))
        elif intent == TOXICITY and lang != "en":
            key = "yes_deadly" if p.edibility == "deadly" else "yes" if dangerous else "not_listed"
            lead.insert(0, phrases.IS_POISONOUS.get(lang, phrases.IS_POISONOUS["en"])[key])
        if intent == LOOKALIKES and p.lookalikes and not others:
            # The names first (deadly first); how to tell each apart follows behind "More".
            ordered = sorted(p.lookalikes, key=lambda lk: SEVERITY.get(lk.edibility, 99))
            lead.append("Lookalikes: " + ", ".join(
                f"{self._name_of(lk.species)} ({edibility_words(lk.edibility)})" for lk in ordered) + ".")
        elif intent == SYMPTOMS and p.onset:
            lead.append(f"Onset: {p.onset}.")
        if dangerous and intent != FIRST_AID_INTENT:
            lead.append(say(phrases.IF_EATEN, lang))
        caution = "" if dangerous else self._edible_caveat(p, with_lookalikes=intent not in (LOOKALIKES, FEATURES))
        body: list[str] = []
        if intent == SYMPTOMS:
            body = [self._poisoning_facts(p) or f"The catalog lists no poisoning syndrome for {p.scientific_name}."]
        elif intent == LOOKALIKES:
            body = [self._lookalikes(p, others)]
        elif intent == FEATURES:
            body = [self._features(p), self._lookalikes(p, [], dangerous_only=True)]
        elif intent == HABITAT:
            body = [self._habitat(p)]
        elif intent == TREATMENT:
            body = [self._treatment(p)]
        elif intent == ALCOHOL:
            body = [self._alcohol(p)]
        elif intent == COOKING:
            body = [self._cooking(p)]
        elif intent == FIRST_AID_INTENT:
            lead.insert(0, FIRST_AID_ADVICE)
            body = [self._poisoning_facts(p), p.edibility_note]
        elif intent in (TOXICITY, CAN_EAT):
            body = [p.edibility_note, self._toxins(p)]
        else:  # GENERAL
            body = [p.edibility_note, self._toxins(p), self._features(p), self._habitat(p),
                    self._lookalikes(p, [], dangerous_only=True)]
        if mentions_child_or_pet(res.question):
            body.insert(0, say(phrases.CHILDREN_PETS, lang))
        outdated, guide = self._outdated_note(p, passages)
        warned = bool(outdated)
        if warned:  # the warning in the first reply, the story of the old advice behind "More"
            warning, _, story = outdated.partition(" wrong.")
            lead.append(warning + " wrong.")
            outdated = story.strip()
        quote = "" if warned else self._guide_quote(p, passages)
        if lang != "en":
            body.insert(0, say(phrases.IN_ENGLISH, lang))
        safety = [FIRST_AID_ADVICE if dangerous and intent != FIRST_AID_INTENT else caution]
        if lang != "en":
            safety.append(say(phrases.EXPERT_RULE, lang))
        used = guide or [q for q in passages if q.kind == "guide" and quote and q.text and excerpt(q.text, [
            p.scientific_name, *p.synonyms], width=200) in quote][:1]
        return [*lead, outdated, *body, *safety, quote], used

    # --- pieces ----------------------------------------------------------------------------------
    def _name_of(self, label_or_name: str) -> str:
        p = self.catalog.get(label_or_name)
        return p.display_name if p else label_or_name.replace("_", " ").capitalize()

    def _local_name(self, label: str, lang: str) -> str:
        """'Amanita phalloides (Grüner Knollenblätterpilz)': the Latin name and the common name in `lang`."""
        p = self.catalog.get(label)
        if p is None:
            return label.replace("_", " ").capitalize()
        common = p.common_name(lang)
        return f"{p.scientific_name} ({common})" if common else p.scientific_name

    def _name_list(self, labels: list[str], lang: str) -> str:
        """'Amanita phalloides (death cap, DEADLY) or Amanita virosa (destroying angel, DEADLY)'."""
        words = phrases.VERDICT.get(lang, phrases.VERDICT["en"])
        items = []
        for lab in labels:
            p = self.catalog.get(lab)
            if p is None:
                items.append(lab.replace("_", " ").capitalize())
                continue
            common = p.common_name(lang)
            items.append(f"{p.scientific_name} ({common + ', ' if common else ''}{words[p.edibility]})")
        if len(items) <= 1:
            return items[0] if items else ""
        return ", ".join(items[:-1]) + f" {say(phrases.OR, lang)} {items[-1]}"

    def _how_to_tell(self, a: SpeciesProfile, b: SpeciesProfile) -> str | None:
        return next((lk.how_to_tell for lk in a.lookalikes if lk.species == b.label), None) or next(
            (lk.how_to_tell for lk in b.lookalikes if lk.species == a.label), None)

    def _edible_caveat(self, p: SpeciesProfile, with_lookalikes: bool = True) -> str:
        if p.edibility == "inedible":
            return "Do not eat it. " + EXPERT_RULE
        bad = [lk for lk in p.lookalikes if lk.edibility in DANGEROUS]
        text = (f"It is edible ONLY when identified with certainty by an expert in person; "
                f"this is not permission to eat it. {EXPERT_RULE}")
        if not with_lookalikes:
            return text
        if bad:
            text += " Dangerous lookalikes: " + _join(
                [f"{self._name_of(lk.species)} ({lk.edibility.upper()}) - {lk.how_to_tell}" for lk in bad]) + "."
        else:
            text += " Poisonous mushrooms can look similar, so an in-person check is essential."
        return text

    def _toxins(self, p: SpeciesProfile) -> str:
        bits = []
        if p.toxins:
            bits.append("Toxins: " + ", ".join(p.toxins) + ".")
        if p.syndrome:
            bits.append(f"Poisoning: {p.syndrome}.")
        return " ".join(bits)

    def _poisoning_facts(self, p: SpeciesProfile) -> str:
        bits = [self._toxins(p)]
        if p.onset:
            bits.append(f"Onset: {p.onset}.")
        if p.organs_affected:
            bits.append("Organs affected: " + ", ".join(p.organs_affected) + ".")
        if p.symptoms:
            bits.append(f"Symptoms: {p.symptoms.strip()}")
        return " ".join(b for b in bits if b)

    def _treatment(self, p: SpeciesProfile) -> str:
        toxin = next((t for t in _toxins_of(p)), None)
        if toxin is not None:
            return f"Treatment: {toxin.treatment}. {self._poisoning_facts(p)}"
        return ("There is no home antidote: treatment is in hospital and depends on the toxin and the symptoms. "
                + self._poisoning_facts(p))

    def _alcohol(self, p: SpeciesProfile) -> str:
        if any("coprine" in t.lower() or "aldehyde dehydrogenase" in t.lower() for t in p.toxins):
            return (f"With alcohol, {p.scientific_name} causes a coprine reaction: flushing, racing heart, nausea - "
                    "from the first drink up to about 3 days after the meal. Avoid all alcohol for 3 days.")
        return (f"The catalog records no alcohol reaction for {p.scientific_name}; alcohol does not make any "
                "mushroom safer. " + p.edibility_note)

    def _cooking(self, p: SpeciesProfile) -> str:
        note = p.edibility_note.strip()
        if p.edibility in DANGEROUS:
            return (f"Cooking, drying or boiling does not make {p.scientific_name} safe unless the catalog says "
                    f"otherwise: {note}")
        return (f"{note} Many edible wild mushrooms upset the stomach raw: cook them thoroughly - and eat none "
                "that an expert has not checked.")

    def _features(self, p: SpeciesProfile) -> str:
        f = p.features
        items = [("cap", f.cap), ("gills/pores", f.gills_or_pores), ("stem", f.stem), ("ring", f.ring),
                 ("volva", f.volva), ("spore print", f.spore_print), ("smell", f.smell), ("flesh", f.flesh)]
        return f"How to recognise {p.scientific_name}: " + _join([f"{k}: {v}" for k, v in items if v]) + "."

    def _habitat(self, p: SpeciesProfile) -> str:
        where = f" Regions: {', '.join(p.regions)}." if p.regions else ""
        return f"Habitat: {p.habitat}. Season: {p.season}.{where}"

    def _lookalikes(self, p: SpeciesProfile, others: list[SpeciesProfile], dangerous_only: bool = False) -> str:
        lines = []
        for other in others:
            # "How do I tell it from X": use the catalog's how-to-tell in either direction, else compare.
            tell = self._how_to_tell(p, other)
            header = f"{other.display_name} is {VERDICT_PHRASES[other.edibility]}."
            if tell:
                lines.append(f"{header} How to tell {p.scientific_name} and {other.scientific_name} apart: {tell}.")
            else:
                lines.append(f"{header} Compare: {p.scientific_name} - gills {p.features.gills_or_pores}, "
                             f"ring {p.features.ring or 'none'}, volva {p.features.volva or 'none'}; "
                             f"{other.scientific_name} - gills {other.features.gills_or_pores}, ring "
                             f"{other.features.ring or 'none'}, volva {other.features.volva or 'none'}.")
            if other.edibility in DANGEROUS:
                lines.append(f"Because {other.scientific_name} is {other.edibility}, "
                             "any doubt means: do not eat either.")
        listed = [lk for lk in p.lookalikes if not dangerous_only or lk.edibility in DANGEROUS]
        listed = [lk for lk in listed if lk.species not in {o.label for o in others}]
        if listed:
            label = "Dangerous lookalikes" if dangerous_only else "Lookalikes"
            lines.append(f"{label}: " + _join(
                [f"{self._name_of(lk.species)} ({edibility_words(lk.edibility)}) - {lk.how_to_tell}"
                 for lk in listed]) + ".")
        elif not others and not dangerous_only:
            lines.append(f"The catalog lists no common lookalikes for {p.scientific_name}.")
        return " ".join(lines)

    def _outdated_note(self, p: SpeciesProfile, passages: list[Passage]) -> tuple[str, list[Passage]]:
        """Say so when an old guide's own heading for this species (or the profile's historical note)
        calls a species edible that is not; returns the note and the guide passages it rests on."""
        if p.edibility not in DANGEROUS | {"inedible"}:
            return "", []
        names = {p.scientific_name.lower(), *(s.lower() for s in p.synonyms)}
        used = [q for q in passages if q.kind == "guide" and any(
            f"{g} {e}".lower() in names and re.search(r"edible|esculent", verdict, re.I)
            and not re.search(r"poison|deadly|not edible|unwholesome|suspected", verdict, re.I)
            for g, e, verdict in _GUIDE_HEADING.findall(q.text))]
        note = p.historical_note or ""
        note_says_edible = bool(_HISTORICAL_EDIBLE.search(note)) and not _HISTORICAL_AGREES.search(note)
        if not (used or note_says_edible):
            return "", []
        detail = f" {note.strip()}" if note_says_edible else ""
        return (f"Old field guides call it edible: that advice is outdated and wrong.{detail}"), used[:1]

    def _guide_quote(self, p: SpeciesProfile, passages: list[Passage]) -> str:
        """A short quotation from a field guide about this species, when one was retrieved."""
        names = [p.scientific_name, *p.synonyms]
        for q in passages:
            if q.kind == "guide" and (q.species == p.label or any(n.lower() in q.text.lower() for n in names)):
                return (f"From an old field guide in my library ({short_title(q.title)}; the current facts above "
                        f"take precedence): \"{excerpt(q.text, names, width=200)}\"")
        return ""

    def _catalog_citation(self, p: SpeciesProfile, field_name: str = "edibility_note") -> Citation:
        """The catalog as a source, naming the field the answer used and quoting it."""
        if field_name == "symptoms":
            text = " ".join(x for x in (p.onset and f"Onset: {p.onset}.", p.symptoms) if x) or p.edibility_note
        elif field_name == "features":
            text = self._features(p)
        elif field_name == "lookalikes":
            text = "; ".join(f"{lk.species}: {lk.how_to_tell}" for lk in p.lookalikes) or p.edibility_note
        elif field_name == "habitat":
            text = f"{p.habitat}; {p.season}"
        elif field_name == "toxins":
            text = self._toxins(p) or p.edibility_note
        else:
            field_name, text = "edibility_note", p.edibility_note
        refs = "; ".join(r.title for r in p.references[:2])
        return Citation(source=f"knowledge_base/catalog/{p.label}.yaml#{field_name}",
                        title=f"Species catalog: {p.display_name}, {field_name.replace('_', ' ')} (from {refs})",
                        excerpt=" ".join(text.split())[:300])

    def _citations(self, passages: list[Passage], names: list[str], include_catalog: bool = False) -> list[Citation]:
        out, seen = [], set()
        for p in passages:
            if (p.kind == "catalog" and not include_catalog) or p.key in seen:
                continue  # catalog facts are cited once, from the profile itself
            seen.add(p.key)
            out.append(Citation(source=p.source, title=p.title, excerpt=excerpt(p.text, names)))
        return out[:3]


def _toxins_of(p: SpeciesProfile):
    for toxin in TOXINS:
        if any(term in t.lower() for t in p.toxins for term in toxin.catalog_terms):
            yield toxin
