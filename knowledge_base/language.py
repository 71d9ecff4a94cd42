"""Which language a chat message is in, and its text folded for matching.

Chat messages are short ("symptoms?", "kann ich den essen"), and statistical detectors are
unreliable on a few words: lingua (restricted to our six languages) calls "is it poisonous"
French. So the words a mushroom chat actually uses decide first (function words and the domain
words of each language, which rarely coincide), and lingua breaks ties or decides when no such word
is present. Anything still unclear is English.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache

from knowledge_base.catalog import LANGUAGES

# Words typical of each language in mushroom questions, accent-folded. Words shared by two
# languages ("is": English and Dutch, "giftig": German and Dutch) are listed under both: they count
# for both and decide nothing on their own.
_WORDS = {
    "en": """i im me my we our he she they it its it's the a this that these those is are was were be can could
        should may eat ate eaten eating edible poisonous poison poisoning toxic deadly safe mushroom mushrooms
        toadstool what which how why where when does do did with and or of some ago hour hours minutes after now feel
        feeling sick dog cat child kid son daughter baby vomiting throwing up symptoms lookalikes lookalike tell apart
        difference between raw cooked cook alcohol beer wine antidote treatment so then there any about look like
        found picked for recipe from on""",
    "de": """ich mir mich mein meine meinen meiner wir er sie es ist sind war der die das den dem des ein eine einen
        einem kann konnen darf essen gegessen isst giftig essbar todlich pilz pilze pilzen hund katze kind kinder sohn
        tochter erbrechen erbricht ubel durchfall vor seit stunden stunde minuten und oder nicht wie was welche welcher
        roh gekocht alkohol bier wein gegenmittel doppelganger verwechslung verwechseln habe hat hab jetzt nach man
        gefunden giftpilz unterschied zwischen aus sieht tun sind""",
    "fr": """je j ai moi mon ma mes nous il elle est sont etait le la les l des du un une ce cette ces peut peux
        puis manger mange mangee mangeable comestible toxique mortel mortelle veneneux veneneuse champignon
        champignons chien chat enfant fils fille bebe vomis vomit vomir vomissements diarrhee heures heure minutes
        depuis apres maintenant cru crue cuit cuite alcool biere vin antidote traitement quoi que qu faire comment
        et pas avec sur dans de une quels quelles quel quelle difference entre ressemble symptomes""",
    "es": """yo me mi mis nosotros el ella es son era la las los lo un una esto esta este estos puedo puede se
        comer comi comio comido comestible toxica toxico venenosa venenoso mortal seta setas hongo hongos perro gato
        nino nina hijo hija bebe vomitando vomito vomitar diarrea horas hora minutos hace despues ahora crudo cruda
        cocinado cocinada alcohol cerveza vino antidoto tratamiento que hago hacer como y no con del al por de una receta
        diferencia entre parece sintomas""",
    "it": """io ho mi mio mia miei noi lui lei e sono era il lo la gli le un una uno questo questa questi posso puo
        si mangiare mangiato mangiata commestibile velenoso velenosa tossico tossica mortale fungo funghi cane gatto
        bambino bambina figlio figlia vomito vomitando diarrea ore ora minuti fa dopo adesso crudo cruda cotto cotta
        alcol birra vino antidoto trattamento che cosa faccio fare come non con del della di per differenza tra
        sembra sintomi bambini cani gatti crudi cotti si""",
    "nl": """ik mij me mijn wij we hij zij het is zijn was de een dit deze die kan kun mag eten gegeten eetbaar
        giftig dodelijk paddenstoel paddenstoelen paddenstoelen zwam hond kat kind kinderen zoon dochter overgeven
        misselijk diarree uur minuten geleden na nu rauw gekookt alcohol bier wijn tegengif behandeling wat hoe
        doen en niet met van heb heeft verschil tussen lijkt op symptomen""",
}
WORDS: dict[str, frozenset[str]] = {lang: frozenset(text.split()) for lang, text in _WORDS.items()}
assert set(WORDS) == set(LANGUAGES)

_TOKEN = re.compile(r"[a-z]+")


# The longest message anything downstream sees; longer text is cut (a question is a few sentences).
MAX_TEXT_CHARS = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


def clean_text(text: object, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Text from outside, made safe for every component: valid Unicode (lone surrogates and
    undecodable bytes become U+FFFD), NFC-normalised, without control or invisible format
    characters (line breaks and tabs kept), at most `max_chars` long. Applied once at the edge
    of every front door, and again by the answerer for callers that skip it."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text or "")
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")  # lone surrogates -> U+FFFD
    text = unicodedata.normalize("NFC", text)
    return _CONTROL.sub("", text)[:max_chars]


def fold(text: str) -> str:
    """Lower case without accents: 'Knollenblätterpilz' -> 'knollenblatterpilz', 'comió' -> 'comio'."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return text.replace("ß", "ss").lower().replace("’", "'")


def words(text: str) -> list[str]:
    """The words of a message, folded ('j'ai mangé' -> ['j', 'ai', 'mange'])."""
    return _TOKEN.findall(fold(text))


_detector = None
_detector_lock = threading.Lock()


def _lingua():
    """The lingua detector for our languages, built once (a few hundred ms) on first need."""
    global _detector
    if _detector is None:
        with _detector_lock:
            if _detector is None:
                from lingua import IsoCode639_1, LanguageDetectorBuilder

                codes = [getattr(IsoCode639_1, code.upper()) for code in LANGUAGES]
                _detector = LanguageDetectorBuilder.from_iso_codes_639_1(*codes).with_low_accuracy_mode().build()
    return _detector


def _lingua_choice(text: str, among: set[str], min_confidence: float) -> str | None:
    try:
        values = _lingua().compute_language_confidence_values(text)
    except Exception:  # noqa: BLE001 - detection is a refinement; English is always a fallback
        return None
    scores = {v.language.iso_code_639_1.name.lower(): v.value for v in values}
    best = max(among, key=lambda lang: scores.get(lang, 0.0))
    total = sum(scores.get(lang, 0.0) for lang in among) or 1.0
    return best if scores.get(best, 0.0) / total >= min_confidence else None


@lru_cache(maxsize=4096)
def detect_language(text: str, extra_words: tuple[tuple[str, str, float], ...] = ()) -> str:
    """ISO code of the message's language (one of LANGUAGES); 'en' when unclear.

    `extra_words`: (word, language, weight) that also count, e.g. a common name found in the text.
    """
    tokens = words(text)
    hits = {lang: float(sum(t in vocab for t in tokens)) for lang, vocab in WORDS.items()}
    for _, lang, weight in extra_words:
        hits[lang] = hits.get(lang, 0.0) + weight
    top = max(hits.values(), default=0)
    leaders = {lang for lang, n in hits.items() if n == top}
    if top > 0 and len(leaders) == 1:
        return leaders.pop()
    if top == 0:
        # With none of our words in it, lingua must be sure (names and typos fool it easily), and a
        # word or two is too little to be sure of anything.
        return (_lingua_choice(text, set(LANGUAGES), 0.8) if len(tokens) >= 3 else None) or "en"
    if "en" in leaders and len(tokens) <= 3:
        return "en"
    return _lingua_choice(text, leaders, 0.0) or ("en" if "en" in leaders else sorted(leaders)[0])
