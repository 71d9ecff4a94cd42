"""Understanding a question: which species it is about, what the user wants, and whether it is on topic.

Species come from the catalog's name index (label, Latin name, synonyms such as the 19th-century
guides' names, common names). Exact n-gram matches win; typos are caught with rapidfuzz, with a
threshold high enough that ordinary English words never turn into a species.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rapidfuzz import fuzz, process

from knowledge_base.catalog import Catalog, normalise_name

# --- intents -------------------------------------------------------------------------------
TOXICITY = "toxicity"
FEATURES = "features"
LOOKALIKES = "lookalikes"
SYMPTOMS = "symptoms"
FIRST_AID = "first_aid"
HABITAT = "habitat"
GENERAL = "general"
INTENTS = (TOXICITY, FEATURES, LOOKALIKES, SYMPTOMS, FIRST_AID, HABITAT, GENERAL)

# Checked in this order: the first intent whose pattern matches wins. First aid comes first because
# "I ate it, is it poisonous?" is an emergency before it is a toxicity question.
_INTENT_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (FIRST_AID, re.compile(
        r"\b(i|we|he|she|they|my \w+|our \w+|child|kid|son|daughter|dog|cat|someone|somebody)\s+"
        r"(just\s+|accidentally\s+|might\s+have\s+|may\s+have\s+|has\s+|have\s+)?(ate|eaten|swallowed|tasted|ingested|licked)\b"
        r"|\bfirst[- ]aid\b|\bwhat (should|do|can) (i|we) do\b|\bwhat to do\b|\bpoison(ing)? (centre|center|control)\b"
        r"|\bemergency\b|\bfeel(ing)? (sick|ill|unwell)\b|\bvomit", re.I)),
    (SYMPTOMS, re.compile(
        r"\bsymptoms?\b|\bsyndrome\b|\bonset\b|\bhow long (until|before|does it take)\b|\btoxins?\b"
        r"|\bwhich organs?\b|\baffects?\b.*\b(liver|kidney|organ)|\bwhat happens if\b|\bsigns of poisoning\b", re.I)),
    (LOOKALIKES, re.compile(
        r"\blook[- ]?alikes?\b|\bconfus(e|ed|ion)\b|\bmistak(e|en)\b|\btell\b.{0,40}\b(apart|from)\b"
        r"|\bdifference between\b|\bdistinguish\b|\bdifferent from\b|\bsimilar\b|\bresembles?\b|\bvs\.?\b|\bversus\b", re.I)),
    (TOXICITY, re.compile(
        r"\bpoison\w*\b|\btoxic\w*\b|\bedib\w*\b|\bedible\b|\bsafe\b|\bdeadly\b|\blethal\b|\bdangerous\b|\bharmful\b"
        r"|\bcan (i|we|you|one|my \w+) (eat|cook|consume|try)\b|\beat(able|en|ing)?\b|\bkill\b|\bfatal\b|\bsafe to\b", re.I)),
    (FEATURES, re.compile(
        r"\blook(s)? like\b|\bidentif\w*\b|\brecogni[sz]e\b|\bfeatures?\b|\bdescri\w*\b|\bappearance\b"
        r"|\bcap\b|\bgills?\b|\bpores?\b|\bstem\b|\bring\b|\bvolva\b|\bspore print\b|\bsmell\b|\bcolou?r\b", re.I)),
    (HABITAT, re.compile(
        r"\bwhere\b|\bhabitat\b|\bgrows?\b|\bgrowing\b|\bseason\b|\bwhen (can|do|does|is)\b|\bfind\b|\bfound\b"
        r"|\bmonths?\b|\bautumn\b|\bspring\b|\bsummer\b|\bwinter\b|\bforests?\b|\bwoods?\b|\btrees?\b", re.I)),
]

# Words that make a question about fungi even when no species is named.
_MUSHROOM_WORDS = re.compile(
    r"\b(mushrooms?|fung(i|us|al)|toadstools?|mycolog\w*|mycel\w*|spores?|gills?|caps?|stipe|stems?|volva|"
    r"boletes?|agarics?|morels?|truffles?|puffballs?|chanterelles?|foraging|forag\w+|shrooms?|amatoxins?|"
    r"mycorrhiz\w*|hyphae|fruiting bod(y|ies)|poison(ous)? (centre|center|control)|brackets?|polypores?)\b", re.I)
# Attempts to change the rules from inside a question ("ignore previous instructions ...").
INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(rules?|instructions?|prompts?|guidelines?|safety|warnings?)\b"
    r"|\b(system prompt|jailbreak|developer mode|pretend (you are|to be)|act as|you are now)\b"
    r"|\bsay (that )?(it'?s|it is|they are)\b.{0,20}\bedible\b", re.I)
# References to "the mushroom we were talking about" (the caller's species= fills them).
_PRONOUN = re.compile(r"\b(it|this|that|these|those|this one|them|mine|the mushroom|my mushroom|my find)\b", re.I)

# Never fuzzy-match these: frequent words whose spelling happens to be close to a species name.
_STOPWORDS = frozenset("""
a an the is it this that these those of in on at to for from with and or but not no yes can could
should would will i we you he she they my our your his her their me us them what which who whom how
why when where do does did done be been being are was were am have has had eat eaten ate eating cook
cooked cooking safe edible poisonous toxic deadly mushroom mushrooms fungus fungi look looks like tell
apart difference between identify symptoms lookalike lookalikes confused with found find grow grows
season habitat about any some one very much many more most just really please thanks thank hello hi
dog cat child kid wild forest wood woods tree trees garden lawn field meadow cap gills stem ring
""".split())

_TOKEN = re.compile(r"[a-z]+")
# Typical endings of Latin species epithets (radicata, edulis, comatus, phalloides, ...).
_LATIN_EPITHET = re.compile(r"(us|um|a|ae|is|es|ii|i|ens|ans|oides|ides|ata|ina|osa|ella)$")


@dataclass
class SpeciesMention:
    label: str
    text: str  # the words of the question that matched
    score: float  # 100 = exact match
    position: int  # token index of the match in the question (earlier = primary)


@dataclass
class Resolution:
    """What the resolver understood from one question."""

    question: str
    intent: str
    species: str | None  # primary species label (catalog label or the caller's label)
    other_species: list[str] = field(default_factory=list)  # e.g. the X of "how do I tell it from X"
    mentions: list[SpeciesMention] = field(default_factory=list)
    unknown_names: list[str] = field(default_factory=list)  # Latin binomials not in the catalog
    on_topic: bool = True
    injection: bool = False
    species_from_caller: bool = False


class SpeciesResolver:
    """Resolve species names, intents and topicality against one catalog."""

    def __init__(self, catalog: Catalog, *, fuzzy_threshold: float = 88.0):
        self.catalog = catalog
        self.fuzzy_threshold = fuzzy_threshold
        self._names = catalog.name_index  # normalised name -> label
        # Possessives: "Caesar's mushroom" normalises to "caesar s mushroom"; people also type
        # "caesars mushroom" or "caesar mushroom".
        for name, label in list(self._names.items()):
            if " s " in f"{name} ":
                for variant in (re.sub(r"(\w) s\b", r"\1s", name), re.sub(r" s\b", "", name)):
                    self._names.setdefault(variant, label)
        self._max_words = max((len(n.split()) for n in self._names), default=1)
        # Genera the catalog knows, incl. old genera of synonyms ("amanitopsis", "coprinus").
        self._genera = {n.split()[0] for n in self._names if len(n.split()) >= 2 and n.split()[0] != "the"}
        self._fuzzy_choices = [n for n in self._names if len(n) >= 5]

    # --- species ---------------------------------------------------------------------------
    def find_species(self, text: str) -> list[SpeciesMention]:
        """All species named in the text, in order of appearance, each label once."""
        tokens = _TOKEN.findall(normalise_name(text))
        used = [False] * len(tokens)
        found: list[SpeciesMention] = []
        # Exact matches, longest first so "amanita phalloides" beats a one-word common name.
        for size in range(min(self._max_words, len(tokens)), 0, -1):
            for start in range(0, len(tokens) - size + 1):
                if any(used[start:start + size]):
                    continue
                phrase = " ".join(tokens[start:start + size])
                label = self._names.get(phrase) or (self._names.get(phrase[:-1]) if phrase.endswith("s") else None)
                if label and not (size == 1 and phrase in _STOPWORDS):
                    found.append(SpeciesMention(label, phrase, 100.0, start))
                    used[start:start + size] = [True] * size
        # Typos: fuzzy-match the remaining 1-3 word windows against the name index.
        for size in (3, 2, 1):
            for start in range(0, len(tokens) - size + 1):
                window = tokens[start:start + size]
                if any(used[start:start + size]) or all(w in _STOPWORDS for w in window):
                    continue
                phrase = " ".join(window)
                # Short phrases are too easy to mistake for a near name ("ink cap" ~ "inky cap").
                if len(phrase) < 8 or (size == 1 and window[0] in _STOPWORDS):
                    continue
                best = process.extractOne(phrase, self._fuzzy_choices, scorer=fuzz.ratio,
                                          score_cutoff=self.fuzzy_threshold)
                if best is None:
                    continue
                name, score, _ = best
                # Guard against partial windows: the matched name must have as many words, and typos
                # rarely change the first letter.
                if len(name.split()) != size or name[0] != phrase[0]:
                    continue
                found.append(SpeciesMention(self._names[name], phrase, float(score), start))
                used[start:start + size] = [True] * size
        found.sort(key=lambda m: m.position)
        unique: dict[str, SpeciesMention] = {}
        for m in found:
            unique.setdefault(m.label, m)
        return list(unique.values())

    def resolve_name(self, name: str) -> str | None:
        """One name (label, Latin, synonym, common name or a typo of one) -> label, else None."""
        exact = self.catalog.resolve(name)
        if exact:
            return exact
        mentions = self.find_species(name)
        return mentions[0].label if mentions else None

    def unknown_binomials(self, text: str, known: list[SpeciesMention]) -> list[str]:
        """Latin names the catalog lacks: a known genus ("Amanita exitialis"), or a capitalised
        Latin-looking binomial ("Xerula radicata") in a question about edibility."""
        known_text = {m.text for m in known}
        latin_question = bool(_INTENT_PATTERNS[3][1].search(text))  # toxicity words
        out = []
        for genus, epithet in re.findall(r"\b([A-Za-z][a-z]{3,})\s+([a-z]{4,})\b", text):
            g = genus.lower()
            phrase = f"{g} {epithet}"
            if phrase in known_text or any(phrase in k or k in phrase for k in known_text) or epithet in _STOPWORDS:
                continue
            looks_latin = (genus[0].isupper() and g not in _STOPWORDS and bool(_LATIN_EPITHET.search(epithet))
                           and not _INTENT_PATTERNS[3][1].search(epithet))  # "York dangerous" is no species
            if g in self._genera or (latin_question and looks_latin):
                out.append(f"{genus[0].upper()}{genus[1:].lower()} {epithet}")
        return out

    # --- intent and topic ----------------------------------------------------------------------
    @staticmethod
    def intent(question: str) -> str:
        for name, pattern in _INTENT_PATTERNS:
            if pattern.search(question):
                return name
        return GENERAL

    @staticmethod
    def _without_names(text: str, mentions: list[SpeciesMention]) -> str:
        """The question minus the species names, so "death cap" does not read as a question about caps."""
        for m in mentions:
            text = re.sub(r"\b" + r"[\W_]+".join(map(re.escape, m.text.split())) + r"\w*", " ", text, flags=re.I)
        return text

    def resolve(self, question: str, species: str | None = None) -> Resolution:
        """Understand a question; `species` is the caller's context (e.g. the label of the last photo)."""
        text = question.strip()
        mentions = self.find_species(text)
        unknown = self.unknown_binomials(text, mentions)
        intent = self.intent(self._without_names(text, mentions))
        labels = [m.label for m in mentions]
        if len(labels) >= 2 and intent == GENERAL:
            intent = LOOKALIKES  # "death cap or destroying angel?" compares two species
        caller = None
        if species:
            caller = self.catalog.resolve(species) or species.strip().lower().replace(" ", "_")
        primary: str | None
        others: list[str]
        refers_back = bool(_PRONOUN.search(text))
        if caller and (not labels or (refers_back and intent == LOOKALIKES) or caller in labels):
            # "how do I tell it from X": the photo's species is primary, X the comparison.
            primary, others = caller, [lab for lab in labels if lab != caller]
        elif labels:
            primary, others = labels[0], labels[1:]
        else:
            primary, others = None, []
        # "Is it edible?" is about the mushroom in the conversation even with no name in it.
        about_it = refers_back and intent in (TOXICITY, FEATURES, LOOKALIKES, SYMPTOMS, HABITAT)
        # A species given by the caller (the last photo) does not make any question about mushrooms:
        # "what's the weather tomorrow?" after a photo is still off-topic. A follow-up with a
        # mushroom intent, a pronoun, or only a few words ("tell me more") stays on the photo.
        follow_up = bool(caller) and (intent != GENERAL or refers_back or len(text.split()) <= 3)
        on_topic = bool(
            labels or unknown or _MUSHROOM_WORDS.search(text) or intent == FIRST_AID or about_it or follow_up
        )
        return Resolution(
            question=text, intent=intent, species=primary, other_species=others, mentions=mentions,
            unknown_names=unknown, on_topic=on_topic, injection=bool(INJECTION.search(text)),
            species_from_caller=bool(caller and primary == caller),
        )
