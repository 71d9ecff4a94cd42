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
from dataclasses import asdict, dataclass, field

from knowledge_base.catalog import DANGEROUS, Catalog, SpeciesProfile, default_catalog
from knowledge_base.resolve import (
    FEATURES,
    GENERAL,
    HABITAT,
    INJECTION,
    LOOKALIKES,
    SYMPTOMS,
    TOXICITY,
    Resolution,
    SpeciesResolver,
)
from knowledge_base.resolve import (
    FIRST_AID as FIRST_AID_INTENT,
)
from knowledge_base.retrieval import HybridRetriever, Passage, tokenize

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
    "edible_with_caution": "edible only with caution",
    "edible": "classed as edible",
    "unknown": "of unknown edibility - treat it as possibly deadly",
}

# Old-guide wording that calls a species fit to eat.
_GUIDE_SAYS_EDIBLE = re.compile(r"=\s*edible|\besculent\b|\bgood to eat\b|\bexcellent (for|eating|food)\b"
                                r"|\bdelicious\b|\bwholesome\b|\bedible\b", re.I)
_HISTORICAL_EDIBLE = re.compile(r"\b(edible|esculent|eaten|eating it|good to eat|recommended|wholesome|"
                                r"without harm|harmless|food)\b", re.I)
_HISTORICAL_AGREES = re.compile(r"\b(they are right|already called it|correctly|rightly|never a recognised food|"
                                r"(mistake|mistaken|confused) (it )?(for|with) an edible)\b", re.I)
# A passage counts as evidence for a question without a species when it is this similar (cosine)
# and contains this share of the question's content words.
MIN_EVIDENCE_SIMILARITY = 0.45
MIN_EVIDENCE_COVERAGE = 0.5
_GENERIC_WORDS = frozenset(tokenize("mushroom mushrooms fungus fungi toadstool toadstools wild kind kinds type "
                                    "types species thing things good best tell know explain"))
_WHICH_ARE_DEADLY = re.compile(r"\b(which|what|list|name)\b.{0,20}\b(mushrooms|species|fungi|ones|toadstools)\b"
                               r".{0,30}\b(deadly|lethal|fatal|kill|most dangerous)", re.I)


def lexical_coverage(question: str, passage: str) -> float:
    """Share of the question's content words (minus generic fungus words) found in the passage."""
    words = set(tokenize(question)) - _GENERIC_WORDS
    if not words:
        return 0.0
    return len(words & set(tokenize(passage))) / len(words)


@dataclass
class Citation:
    source: str
    title: str
    excerpt: str


@dataclass
class Answer:
    answer: str
    species: str | None
    verdict: str | None
    citations: list[Citation] = field(default_factory=list)
    abstained: bool = False

    def to_dict(self) -> dict:
        return {
            "answer": self.answer,
            "species": self.species,
            "verdict": self.verdict,
            "citations": [asdict(c) for c in self.citations],
            "abstained": self.abstained,
        }


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
        from bot.settings import get_settings

        settings = settings or get_settings()
        retriever = None
        try:
            from ingest.store import open_serving

            store = open_serving(settings)
            retriever = HybridRetriever(store) if store is not None else None
        except Exception as exc:  # no index yet, Chroma server down: answers still come from the catalog
            log.warning("knowledge base: no serving index (%s); answering from the catalog only", exc)
        rephraser = None
        if settings.llm_base_url:
            from knowledge_base.llm import Rephraser, chat_model_from_settings

            rephraser = Rephraser(chat_model_from_settings(settings))
        return cls(retriever, default_catalog(), rephraser=rephraser)

    # --- public API -----------------------------------------------------------------------------
    def ask(self, question: str, species: str | None = None) -> Answer:
        return self.answer_with_passages(question, species)[0]

    def answer_with_passages(self, question: str, species: str | None = None) -> tuple[Answer, list[Passage]]:
        """The answer plus the passages retrieved for it (the evaluation scores those)."""
        question = (question or "").strip()
        if not question:
            return Answer(EMPTY_QUESTION, None, None, [], True), []
        res = self.resolver.resolve(question[:2000], species)
        answer, passages = self._compose(res)
        if self.rephraser is not None and not answer.abstained:
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
    def _compose(self, res: Resolution) -> tuple[Answer, list[Passage]]:
        prefix = [INJECTION_REPLY] if res.injection else []
        # Say how a misspelt name was read, so a wrong guess is visible to the user.
        prefix += [f"(I read \"{m.text}\" as {self._name_of(m.label)}.)" for m in res.mentions if m.score < 100]
        if not res.on_topic:
            return Answer(" ".join(prefix + [OFF_TOPIC]), None, None, [], True), []
        if res.species is None:
            return self._without_species(res, prefix)
        profile = self.catalog.get(res.species)
        passages = self.retrieve(res.question, res.species)
        if profile is None:
            # A label the caller gave (e.g. from a photo) that the catalog lacks.
            name = res.species.replace("_", " ").capitalize()
            parts = prefix + [f"I have no verified profile for {name}, so I can't say whether it is edible.",
                              UNKNOWN_RULE, EXPERT_RULE]
            if res.intent == FIRST_AID_INTENT:
                parts.insert(len(prefix), FIRST_AID_ADVICE)
            return Answer(" ".join(parts), res.species, "unknown", self._citations(passages, []), True), passages
        others = [self.catalog.get(o) for o in res.other_species]
        text = self._species_answer(res, profile, [o for o in others if o is not None], passages)
        cites = self._citations(passages, [profile.scientific_name, *profile.synonyms])
        cites.insert(0, self._catalog_citation(profile))
        return Answer(" ".join(prefix + [text]), profile.label, profile.edibility, cites, False), passages

    def _without_species(self, res: Resolution, prefix: list[str]) -> tuple[Answer, list[Passage]]:
        if res.unknown_names:
            name = res.unknown_names[0]
            parts = [f"{name} is not in my species catalog, so I can't tell you anything reliable about it.",
                     UNKNOWN_RULE, EXPERT_RULE]
            if res.intent == FIRST_AID_INTENT:
                parts.insert(0, FIRST_AID_ADVICE)
            return Answer(" ".join(prefix + parts), None, None, [], True), []
        if res.intent == FIRST_AID_INTENT:
            text = " ".join(prefix + [FIRST_AID_ADVICE, "Treat any unidentified mushroom as possibly deadly.",
                                      "If you know which mushroom it was, tell me its name and I'll tell you "
                                      "what is known about its poisoning."])
            return Answer(text, None, None, [], False), []
        if res.intent == TOXICITY and _WHICH_ARE_DEADLY.search(res.question):
            deadly = sorted((p for p in self.catalog.profiles.values() if p.edibility == "deadly"),
                            key=lambda p: p.scientific_name)
            if deadly:
                names = ", ".join(p.display_name for p in deadly[:15])
                more = f" and {len(deadly) - 15} more" if len(deadly) > 15 else ""
                text = " ".join(prefix + [f"Deadly species in my catalog include: {names}{more}.",
                                          "Treat any mushroom you cannot identify with certainty as possibly deadly.",
                                          EXPERT_RULE])
                return Answer(text, None, None, [], False), []
        if res.intent in (TOXICITY, SYMPTOMS) or re.search(r"\b(it|this|that|this one|mine)\b", res.question, re.I):
            return Answer(" ".join(prefix + [ASK_WHICH, EXPERT_RULE]), None, None, [], True), []
        # A general question about fungi: answer from the guides if they clearly cover it.
        passages = self.retrieve(res.question)
        guide = [p for p in passages if p.kind != "catalog"] or passages
        # Every mushroom sentence is fairly close to every other one in embedding space, so evidence
        # also needs the question's own content words in the passage.
        strong = [p for p in guide if (p.similarity or 0.0) >= MIN_EVIDENCE_SIMILARITY
                  and lexical_coverage(res.question, p.text) >= MIN_EVIDENCE_COVERAGE]
        if not strong:
            return Answer(" ".join(prefix + [WEAK_EVIDENCE, ASK_WHICH]), None, None, [], True), passages
        quotes = " ".join(f"\"{excerpt(p.text, width=220)}\" ({short_title(p.title)})" for p in strong[:2])
        text = " ".join(prefix + [
            "From the field guides in my library (old texts: their edibility advice can be outdated):",
            quotes, EXPERT_RULE])
        return Answer(text, None, None, self._citations(strong, [], include_catalog=True), False), passages

    def _species_answer(self, res: Resolution, p: SpeciesProfile, others: list[SpeciesProfile],
                        passages: list[Passage]) -> str:
        name = p.display_name
        verdict = f"{name} is {VERDICT_PHRASES[p.edibility]}."
        dangerous = p.edibility in DANGEROUS
        intent = res.intent
        # Lookalikes are named once: either in the body (lookalike/feature/general answers) or in the caveat.
        listed = intent in (LOOKALIKES, FEATURES, GENERAL)
        safety = FIRST_AID_ADVICE if dangerous else self._edible_caveat(p, with_lookalikes=not listed)
        dangerous_lookalikes = self._lookalikes(p, [], dangerous_only=True)
        if intent == FIRST_AID_INTENT:
            lead = FIRST_AID_ADVICE if p.edibility != "edible" else (
                "If you are not sure what was eaten, or anyone feels unwell: " + FIRST_AID_ADVICE[0].lower()
                + FIRST_AID_ADVICE[1:])
            parts = [lead, verdict, self._poisoning(p), p.edibility_note]
            if not dangerous:
                parts.append(self._edible_caveat(p, with_lookalikes=True))
        elif intent == SYMPTOMS:
            parts = [verdict, self._poisoning(p) or f"The catalog lists no poisoning syndrome for {name}.", safety]
        elif intent == LOOKALIKES:
            parts = [verdict, self._lookalikes(p, others), safety]
        elif intent == FEATURES:
            parts = [verdict, self._features(p), dangerous_lookalikes, safety]
        elif intent == HABITAT:
            parts = [verdict, self._habitat(p), safety]
        elif intent == TOXICITY:
            parts = [verdict, p.edibility_note, self._toxins(p), safety]
        else:  # GENERAL
            parts = [verdict, p.edibility_note, self._toxins(p), self._features(p), self._habitat(p),
                     dangerous_lookalikes, safety]
        outdated = self._outdated_note(p, passages)
        if outdated:
            parts.insert(1 if intent != FIRST_AID_INTENT else 2, outdated)
        return " ".join(x for x in parts if x)

    # --- pieces ----------------------------------------------------------------------------------
    def _name_of(self, label_or_name: str) -> str:
        p = self.catalog.get(label_or_name)
        return p.display_name if p else label_or_name.replace("_", " ").capitalize()

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

    def _poisoning(self, p: SpeciesProfile) -> str:
        bits = [self._toxins(p)]
        if p.onset:
            bits.append(f"Onset: {p.onset}.")
        if p.organs_affected:
            bits.append("Organs affected: " + ", ".join(p.organs_affected) + ".")
        if p.symptoms:
            bits.append(f"Symptoms: {p.symptoms.strip()}")
        return " ".join(b for b in bits if b)

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
            tell = next((lk.how_to_tell for lk in p.lookalikes if lk.species == other.label), None) or next(
                (lk.how_to_tell for lk in other.lookalikes if lk.species == p.label), None)
            header = f"{other.display_name} is {VERDICT_PHRASES[other.edibility]}."
            if tell:
                lines.append(f"{header} How to tell them apart: {tell}.")
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
                [f"{self._name_of(lk.species)} ({lk.edibility.replace('_', ' ')}) - {lk.how_to_tell}"
                 for lk in listed]) + ".")
        elif not others and not dangerous_only:
            lines.append(f"The catalog lists no common lookalikes for {p.scientific_name}.")
        return " ".join(lines)

    def _outdated_note(self, p: SpeciesProfile, passages: list[Passage]) -> str:
        """Say so when an old guide (or the profile's historical note) calls a non-edible species edible."""
        if p.edibility not in DANGEROUS | {"inedible"}:
            return ""
        note = p.historical_note or ""
        names = [p.scientific_name.lower(), *(s.lower() for s in p.synonyms)]
        guide_says_edible = any(
            p_.kind == "guide" and (p_.species == p.label or any(n in p_.text.lower() for n in names))
            and _GUIDE_SAYS_EDIBLE.search(p_.text) for p_ in passages)
        note_says_edible = bool(_HISTORICAL_EDIBLE.search(note)) and not _HISTORICAL_AGREES.search(note)
        if not (guide_says_edible or note_says_edible):
            return ""
        current = VERDICT_PHRASES[p.edibility]
        detail = f" {note.strip()}" if note_says_edible else ""
        return (f"Warning: older sources (such as the 19th-century field guides) call it edible - that advice is "
                f"outdated and wrong; current references class it as {current}.{detail}")

    def _catalog_citation(self, p: SpeciesProfile) -> Citation:
        refs = "; ".join(r.title for r in p.references[:2])
        return Citation(source=f"knowledge_base/catalog/{p.label}.yaml",
                        title=f"Species catalog: {p.display_name} (from {refs})",
                        excerpt=p.edibility_note.strip()[:300])

    def _citations(self, passages: list[Passage], names: list[str], include_catalog: bool = False) -> list[Citation]:
        out, seen = [], set()
        for p in passages:
            if (p.kind == "catalog" and not include_catalog) or p.key in seen:
                continue  # catalog facts are cited once, from the profile itself
            seen.add(p.key)
            out.append(Citation(source=p.source, title=p.title, excerpt=excerpt(p.text, names)))
        return out[:3]



# --- checks shared by the tests, the evaluation and the LLM guard ------------------------------------
_PERMISSION = re.compile(
    r"\b(yes|sure|absolutely|of course|go ahead)\b[,!.]?\s+(you\s+)?(can|may|could|should)?\s*(safely\s+)?"
    r"(eat|cook|try|enjoy|consume)\b"
    r"|(?<!not )(?<!never )\b(safe|fine|ok|okay|good) to (eat|consume|cook)\b"
    r"|(?<!not )(?<!never )(?<!only )\byou (can|may|could) (safely )?(eat|consume|cook and eat)\b"
    r"|\bgo ahead and (eat|cook|try)\b|\benjoy (it|them|your (meal|mushrooms?))\b|\bbon app[eé]tit\b",
    re.I)


def gives_permission_to_eat(text: str) -> bool:
    """True when a text tells the user they may eat a mushroom (the one thing we never say)."""
    return bool(_PERMISSION.search(text))
