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

# Intents live in knowledge_base.intents (six languages); re-exported for callers of this module.
from knowledge_base.intents import (  # noqa: E402
    ALCOHOL,
    CAN_EAT,
    COOKING,
    FEATURES,
    FIRST_AID,
    GENERAL,
    HABITAT,
    INTENTS,
    LOOKALIKES,
    SYMPTOMS,
    TOXICITY,
    TREATMENT,
    correct_keywords,
    intent_of,
)
from knowledge_base.language import detect_language, fold  # noqa: E402
from knowledge_base.topics import GENUS_NAMES, Toxin, genus_species, toxin_mentioned  # noqa: E402
from knowledge_base.triage import Triage, triage  # noqa: E402

__all__ = ["ALCOHOL", "CAN_EAT", "COOKING", "FEATURES", "FIRST_AID", "GENERAL", "HABITAT", "INTENTS", "LOOKALIKES",
           "SYMPTOMS", "TOXICITY", "TREATMENT", "Resolution", "SpeciesMention", "SpeciesResolver"]
_TOXICITY_WORDS = re.compile(r"\bpoison\w*|\btoxic\w*|\bedib\w*|\bdeadly\b|\bsafe\b|\beat\b|\bgiftig|\bessbar"
                             r"|\bcomestible|\bvenenos|\bvelenos|\bcommestibil|\beetbaar", re.I)

# Words that make a question about fungi even when no species is named.
_MUSHROOM_WORDS = re.compile(
    r"\b(mushrooms?|fung(i|us|al)|toadstools?|mycolog\w*|mycel\w*|spores?|gills?|caps?|stipe|stems?|volva|"
    r"boletes?|agarics?|morels?|truffles?|puffballs?|chanterelles?|foraging|forag\w+|shrooms?|amatoxins?|"
    r"mycorrhiz\w*|hyphae|fruiting bod(y|ies)|poison(ous)? (centre|center|control)|brackets?|polypores?|"
    r"pilz\w*|schwamm\w*|champignons?|setas?|hongos?|fung[oh]i?|paddenstoel\w*|zwam\w*|toxins?|amanit\w*)\b", re.I)
# Attempts to change the rules from inside a question ("ignore previous instructions ...").
INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(rules?|instructions?|prompts?|guidelines?|safety|warnings?)\b"
    r"|\b(system prompt|jailbreak|developer mode|pretend (you are|to be)|act as|you are now)\b"
    r"|\bsay (that )?(it'?s|it is|they are)\b.{0,20}\bedible\b", re.I)
# References to "the mushroom we were talking about" (the caller's species= fills them).
_PRONOUN = re.compile(r"\b(it|its|it's|this|that|these|those|this one|them|mine|the mushroom|my mushroom|my find)\b", re.I)

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


def _singulars(phrase: str) -> list[str]:
    """Singular forms of a plural phrase's last word in our languages: morels, finferli -> finferlo,
    russule -> russula, cantharellen -> cantharel, colmenillas, hongos."""
    head, _, word = phrase.rpartition(" ")
    head = f"{head} " if head else ""
    forms = []
    if word.endswith("es"):
        forms.append(word[:-2])
    if word.endswith("s"):
        forms.append(word[:-1])
    if word.endswith("i") and len(word) > 4:  # Italian: finferli -> finferlo, porcini -> porcino
        forms += [word[:-1] + "o", word[:-1] + "e"]
    if word.endswith("e") and len(word) > 4:  # Italian: russule -> russula; German: Pfifferlinge
        forms += [word[:-1] + "a", word[:-1]]
    if word.endswith("en") and len(word) > 5:  # Dutch and German: cantharellen -> cantharel
        stem = word[:-2]
        forms += [stem, stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else stem]
    if word.endswith("n") and len(word) > 5:  # German: Morcheln -> Morchel
        forms.append(word[:-1])
    out = [head + f for f in forms]
    if head:  # every word in the plural: "falsas colmenillas" -> "falsa colmenilla", "death caps"
        out.append(" ".join(w[:-1] if w.endswith("s") and len(w) > 3 else w for w in phrase.split()))
    return out
# "false death cap" is Amanita citrina, not the death cap; "false X" the catalog lacks is not X either.
_FALSE_WORDS = frozenset({"false", "fake", "faux", "fausse", "fausses", "falscher", "falsche", "falschen", "falso",
                          "falsa", "falsos", "falsas", "falsi", "valse", "valsche"})
# Endings and words of ordinary language that a Latin epithet never has ("Amanita poisoning").
_ENGLISH_WORD = re.compile(r"(ing|tion|ness|ment|ful|less|ly|ed|ous|able|ship|ism)$", re.I)
_NOT_EPITHETS = frozenset("""mushroom mushrooms fungus fungi species family genus poison toxin toxins season
caps cap stem gills types kinds group look lookalike lookalikes photo picture edible ones one all kind type
varieties sorts these those things""".split())
# "what about for dogs?", "and for children?", "e i bambini?": a follow-up on the chat's subject.
_FOLLOW_UP = re.compile(r"^\s*(what about|how about|and|und|et|y|e|en|ma|pero|mais|aber|maar)\b"
                        r"|\b(for|fur|pour|para|per|voor) (dogs?|cats?|kids|children|pets|hunde|kinder|enfants"
                        r"|chiens|ninos|perros|bambini|cani|kinderen|honden)\b")
# "the first one", "my photo": a photo of the chat.
_PHOTO_REF = re.compile(r"\b(first|second|third|last|previous|other|latest) (one|photo|picture|pic|mushroom)\b"
                        r"|\b(the|my|this|that) (photo|picture|pic|image)\b")
# "it"/"this" in the other languages ("kann ich den essen", "es venenoso", "is het giftig").
_PRONOUN_OTHER = re.compile(r"\b(ihn|den|diesen|dieser|das|es|er|le|la|il|elle|ca|celui|celle|ce champignon|lo|esta|este|esto"
                            r"|questo|questa|lo|het|deze|dit|die)\b", re.I)
# Typical endings of Latin species epithets (radicata, edulis, comatus, phalloides, ...).
_LATIN_EPITHET = re.compile(r"(us|um|a|ae|is|es|ii|i|ens|ans|oides|ides|ata|ina|osa|ella)$")


@dataclass
class SpeciesMention:
    label: str
    text: str  # the words of the question that matched
    score: float  # 100 = exact match
    position: int  # token index of the match in the question (earlier = primary)
    name: str = ""  # the catalog name it matched (normalised)


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
    language: str = "en"  # ISO code of the question's language (knowledge_base.catalog.LANGUAGES)
    genus: str | None = None  # a genus asked about as a group ("are inocybes poisonous?")
    toxin: Toxin | None = None  # a toxin asked about ("what is orellanine?")
    triage: Triage | None = None  # the message may describe a poisoning
    refers_back: bool = False  # "it", "this one": the conversation's subject


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
        latin = [normalise_name(n) for p in catalog.profiles.values() for n in (p.scientific_name, *p.synonyms)]
        self._genera = {n.split()[0] for n in latin if len(n.split()) >= 2}
        self._fuzzy_choices = [n for n in self._names if len(n) >= 5]
        self._label_genera = {label.split("_", 1)[0] for label in catalog.labels}
        # Which language a common name belongs to ("steinpilz" -> de): evidence for the reply language.
        # Names that are also English or Latin ("parasol") say nothing about the language.
        english = {normalise_name(n) for p in catalog.profiles.values()
                   for n in (p.scientific_name, *p.synonyms, *p.common_names)}
        self._name_language = {normalise_name(n): lang for p in catalog.profiles.values()
                               for lang, names in p.common_names_by_language.items() for n in names
                               if normalise_name(n) not in english}
        # Compounds written together or apart: "satansrohrling" / "satans rohrling", "pennybun" / "penny bun".
        self._joined = {}
        for name, label in self._names.items():
            if " " in name:
                self._joined.setdefault(name.replace(" ", ""), label)

    # --- species ---------------------------------------------------------------------------
    def _exact(self, phrase: str) -> tuple[str, str] | None:
        """(label, matched name) for a phrase or its singular, else None."""
        for form in (phrase, *_singulars(phrase)):
            label = self._names.get(form) or self._joined.get(form)
            if label:
                return label, form
        return None

    def _fuzzy(self, phrase: str, size: int) -> tuple[str, str, float] | None:
        """(label, matched name, score) for a misspelt name of `size` words, else None."""
        words = phrase.split()
        for name, score, _ in process.extract(phrase, self._fuzzy_choices, scorer=fuzz.ratio, score_cutoff=75,
                                              limit=8):
            name_words = name.split()
            # Guard against partial windows: the matched name must have as many words, and typos
            # rarely change the first letter of a word.
            if len(name_words) != size or words[0][0] != name_words[0][0]:
                continue
            if score < self.fuzzy_threshold:
                # Below the threshold, a multi-word name needs one word spelt right and the others
                # close ("sulfer tuft", "boletus edilus"), never a short word ("for amanita").
                pairs = list(zip(words, name_words, strict=True))
                if size == 1 or not any(a == b and len(a) >= 4 and a not in _STOPWORDS for a, b in pairs) or any(
                        a != b and (len(a) < 4 or a in _STOPWORDS or a[0] != b[0] or fuzz.ratio(a, b) < 60) for a, b in pairs):
                    continue
            return self._names[name], name, float(score)
        return None

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
                match = self._exact(phrase)
                if match and not (size == 1 and phrase in _STOPWORDS):
                    if start > 0 and tokens[start - 1] in _FALSE_WORDS:
                        continue  # "false X" is not X: never answer about X (a typo of "false X" may match below)
                    found.append(SpeciesMention(match[0], phrase, 100.0, start, match[1]))
                    used[start:start + size] = [True] * size
        # Typos: fuzzy-match the remaining 1-4 word windows against the name index.
        for size in (4, 3, 2, 1):
            for start in range(0, len(tokens) - size + 1):
                window = tokens[start:start + size]
                if any(used[start:start + size]) or all(w in _STOPWORDS for w in window):
                    continue
                phrase = " ".join(window)
                # Short phrases are too easy to mistake for a near name ("ink cap" ~ "inky cap").
                if len(phrase) < 8 or (size == 1 and window[0] in _STOPWORDS):
                    continue
                match = self._fuzzy(phrase, size)
                if match is None or (start > 0 and tokens[start - 1] in _FALSE_WORDS and size == 1):
                    continue
                found.append(SpeciesMention(match[0], phrase, match[2], start, match[1]))
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
        latin_question = bool(_TOXICITY_WORDS.search(text))
        out = []
        for genus, epithet in re.findall(r"\b([A-Za-z][a-z]{3,})\s+([a-z]{4,})\b", text):
            g = genus.lower()
            phrase = f"{g} {epithet}"
            if phrase in known_text or any(phrase in k or k in phrase for k in known_text) or epithet in _STOPWORDS:
                continue
            if _ENGLISH_WORD.search(epithet) or epithet.lower() in _NOT_EPITHETS:
                continue  # "Amanita poisoning", "Boletus mushrooms": ordinary words, not species
            looks_latin = (genus[0].isupper() and g not in _STOPWORDS and bool(_LATIN_EPITHET.search(epithet))
                           and not _TOXICITY_WORDS.search(epithet))  # "York dangerous" is no species
            if (g in self._genera and _LATIN_EPITHET.search(epithet)) or (latin_question and looks_latin):
                out.append(f"{genus[0].upper()}{genus[1:].lower()} {epithet}")
        return out

    # --- intent and topic ----------------------------------------------------------------------
    @staticmethod
    def intent(question: str) -> str:
        return intent_of(question)

    def genus_in(self, text: str, mentions: list[SpeciesMention]) -> str | None:
        """A genus named as a group ("inocybes", "webcaps", "amanitas") outside the species names."""
        rest = fold(self._without_names(text, mentions))
        for word in re.findall(r"[a-z]+", rest):
            genus = GENUS_NAMES.get(word)
            if genus is None and word in self._label_genera:
                genus = word
            if genus is None and len(word) >= 6 and word not in _STOPWORDS:  # "morrels", "inocibes"
                best = process.extractOne(word, list(GENUS_NAMES), scorer=fuzz.ratio, score_cutoff=85)
                genus = GENUS_NAMES[best[0]] if best and best[0][0] == word[0] else None
            if genus and genus_species(genus, self.catalog):
                return genus
        return None

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
        folded = fold(text)
        toxin = toxin_mentioned(folded) if not mentions else None
        if toxin is not None:  # "amanita poisoning" is a toxin, not a species called "Amanita poisoning"
            unknown = []
        else:
            unknown = self.unknown_binomials(text, mentions)
        genus = None if mentions or unknown or toxin else self.genus_in(text, mentions)
        intent = self.intent(self._without_names(text, mentions))
        labels = [m.label for m in mentions]
        if len(labels) >= 2 and intent in (GENERAL, TOXICITY, CAN_EAT):
            intent = LOOKALIKES  # "death cap or destroying angel?" compares two species
        caller = None
        if species:
            caller = self.catalog.resolve(species) or species.strip().lower().replace(" ", "_")
        primary: str | None
        others: list[str]
        refers_back = bool(_PRONOUN.search(text) or _PRONOUN_OTHER.search(folded) or _PHOTO_REF.search(folded))
        if caller and not genus and not toxin and (
                not labels or (refers_back and intent == LOOKALIKES) or caller in labels):
            # "how do I tell it from X": the photo's species is primary, X the comparison.
            primary, others = caller, [lab for lab in labels if lab != caller]
        elif labels:
            primary, others = labels[0], labels[1:]
        else:
            primary, others = None, []
        found_triage = triage(text)
        if found_triage is not None:
            intent = FIRST_AID
        # "Is it edible?" is about the mushroom in the conversation even with no name in it.
        about_it = refers_back and intent != GENERAL
        # A species given by the caller (the last photo) does not make any question about mushrooms:
        # "what's the weather tomorrow?" after a photo is still off-topic. A follow-up with a
        # mushroom intent, a pronoun, or only a few words ("tell me more") stays on the photo.
        n_words = len(re.findall(r"\w+", text))
        follow_up = bool(caller) and (intent != GENERAL or refers_back or n_words <= 3
                                      or bool(_FOLLOW_UP.search(folded)))
        # A bare intent ("symptoms?", "lookalikes", "can I eat it") is about mushrooms in this chat.
        bare_intent = intent != GENERAL and n_words <= 3
        on_topic = bool(
            labels or unknown or genus or toxin or found_triage or _MUSHROOM_WORDS.search(text)
            or _MUSHROOM_WORDS.search(folded) or _PHOTO_REF.search(folded) or intent == FIRST_AID or about_it
            or follow_up or bare_intent
        )
        # A name in another language is evidence for it; a misspelt one only weak evidence.
        hints = tuple((m.name, self._name_language[m.name], 2.0 if m.score == 100 else 0.5)
                      for m in mentions if m.name in self._name_language)
        return Resolution(
            question=text, intent=intent, species=primary, other_species=others, mentions=mentions,
            unknown_names=unknown, on_topic=on_topic, injection=bool(INJECTION.search(text)),
            species_from_caller=bool(caller and primary == caller),
            language=detect_language(correct_keywords(fold(self._without_names(text, mentions))), hints),
            genus=genus, toxin=toxin, triage=found_triage, refers_back=refers_back,
        )
