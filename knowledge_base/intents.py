"""What a user wants, in six languages, from accent-folded text (knowledge_base.language.fold).

Checked in order; the first intent whose pattern matches wins. Treatment, alcohol and cooking come
before "can I eat it" because "can I eat it raw?" is answered by what cooking does; first aid words
come first of all (a poisoning itself is found earlier still, by knowledge_base.triage).
Misspelt keywords ("posionous", "edable") are corrected against a small vocabulary first.
"""

from __future__ import annotations

import re

from rapidfuzz import fuzz, process

from knowledge_base.language import WORDS, fold
from knowledge_base.topics import GENUS_NAMES

TOXICITY = "toxicity"  # "is it poisonous?"
CAN_EAT = "can_eat"  # "can I eat it?", "is it edible?", "so it's safe then?"
FEATURES = "features"
LOOKALIKES = "lookalikes"  # also "X vs Y", "how to tell X from Y"
SYMPTOMS = "symptoms"
FIRST_AID = "first_aid"
TREATMENT = "treatment"  # antidote, hospital treatment
ALCOHOL = "alcohol"
COOKING = "cooking"  # raw vs cooked, boiling, drying
HABITAT = "habitat"
GENERAL = "general"
INTENTS = (TOXICITY, CAN_EAT, FEATURES, LOOKALIKES, SYMPTOMS, FIRST_AID, TREATMENT, ALCOHOL, COOKING, HABITAT,
           GENERAL)

_I = re.IGNORECASE
PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (FIRST_AID, re.compile(
        r"\bfirst[- ]aid\b|\bwhat (should|do|can|must) (i|we) do\b|\bwhat to do\b|\bpoison(ing)? (centre|center|control)"
        r"|\bemergency\b|\bwas (soll|kann|muss) (ich|man) (jetzt )?tun\b|\berste hilfe\b|\bgiftnotruf\b|\bnotfall\b"
        r"|\bque (dois|faut|faire)\b|\bpremiers (secours|soins)\b|\bcentre antipoison\b|\burgence\b"
        r"|\bque (hago|hacemos|debo hacer|hay que hacer)\b|\bprimeros auxilios\b|\burgencias?\b"
        r"|\b(cosa|che) (faccio|devo fare|facciamo)\b|\bprimo soccorso\b|\bcentro antiveleni\b|\bemergenza\b"
        r"|\bwat (moet|kan) ik doen\b|\beerste hulp\b|\bspoed\b", _I)),
    (TREATMENT, re.compile(
        r"\bantidot\w*|\btreat(ment|ed|ing)?\b|\bcure[sd]?\b|\bhospital\w*|\bdoctors?\b|\btherap\w+"
        r"|\bgegengift|\bgegenmittel|\bbehandl\w+|\bkrankenhaus|\bklinik|\barzt\b|\bheilmittel"
        r"|\btraitement|\bsoign\w+|\bhopital\b|\bmedecin\b|\btratamiento|\btratar\b|\bmedico\b|\bcura\b"
        r"|\btrattamento|\bospedale\b|\btegengif\w*|\bziekenhuis\b|\bdokter\b|\bbehandeling\b", _I)),
    (ALCOHOL, re.compile(
        r"\balcohol\w*|\bbeers?\b|\bwine\b|\bbooze\b|\bdrinking\b|\balkohol\w*|\bbier\b|\bwein\b|\balcool\b"
        r"|\bbieres?\b|\bvin\b|\bcerveza\b|\bvino\b|\balcol\b|\bbirra\b|\bwijn\b", _I)),
    (COOKING, re.compile(
        r"\braw\b|\buncooked\b|\bcook(ed|ing)?\b|\bboil(ed|ing)?\b|\bfr(y|ied|ying)\b|\bdr(ied|ying)\b|\bfrozen\b"
        r"|\bfreez\w+|\bparboil\w*|\broh\b|\bgekocht\b|\bkochen\b|\bbraten\b|\bgebraten\b|\bgetrocknet\b|\btrocknen\b"
        r"|\beinfrieren\b|\babkochen\b|\bcrue?s?\b|\bcuite?s?\b|\bcuire\b|\bcuisson\b|\bbouilli\w*|\bseche\w*"
        r"|\bcongel\w+|\bcrud[oa]s?\b|\bcocinad[oa]s?\b|\bcocinar\b|\bcocer\b|\bcocid[oa]s?\b|\bhervi\w+"
        r"|\bcott[oa]\b|\bcuocere\b|\bcucinat\w+|\bbollit\w+|\brauw\b|\bgekookt\b|\bkoken\b|\bgebakken\b", _I)),
    (SYMPTOMS, re.compile(
        r"\bsymptoms?\b|\bsyndrome\b|\bonset\b|\bhow long (until|before|does it take)\b|\btoxins?\b"
        r"|\bwhich organs?\b|\baffects?\b.*\b(liver|kidney|organ)|\bwhat happens if\b|\bsigns of\b"
        r"|\bsymptome?\b|\banzeichen\b|\bbeschwerden\b|\bwie lange\b|\bsymptomes?\b|\bsignes\b|\bcombien de temps\b"
        r"|\bsintomas?\b|\bsignos\b|\bcuanto tarda\b|\bsintomi\b|\bsegni\b|\bquanto tempo\b|\bsymptomen\b"
        r"|\bverschijnselen\b|\bklachten\b|\bhoe lang\b", _I)),
    (LOOKALIKES, re.compile(
        r"\blook[- ]?alikes?\b|\bconfus(e|ed|ion)\b|\bmistak(e|en)\b|\btell\b.{0,40}\b(apart|from)\b"
        r"|\bdifference\b|\bdistinguish\b|\bdifferent from\b|\bsimilar\b|\bresembles?\b|\bvs\.?\b|\bversus\b"
        r"|\bor (a|an|the)\b.{0,40}\?|\bverwechs\w+|\bdoppelganger\b|\bunterschied\w*|\bunterscheid\w+|\bahnlich\w*"
        r"|\bconfond\w+|\bressembl\w+|\bsosies?\b|\bdistingu\w+|\bconfundi\w*|\bse parece\b|\bparecid[oa]s?\b"
        r"|\bdiferencia\w*|\bconfonder\w*|\bsomigli\w+|\bdifferenz\w+|\bverwar\w+|\bverwissel\w*|\blijk(t|en) op\b"
        r"|\bverschil\w*|\bonderscheid\w*|\bdubbelganger\w*", _I)),
    (CAN_EAT, re.compile(
        r"\bcan (i|we|you|one|my \w+|they|he|she|people|kids|children) (still |safely )?(eat|cook|consume|try|have)\b"
        r"|\bedib\w*|\beatable\b|\bsafe\b|\b(ok|okay|good|fine|alright) (to|for) (eat|eating|cook)\b|\bis it (good|ok|okay)\b"
        r"|\bso (it'?s|its|it is|they are|i can|we can)\b|\bshould i eat\b|\bworth eating\b|\bgood eating\b"
        r"|\bessbar\w*|\bgeniessbar\w*|\b(kann|darf|konnen|durfen) (man|ich|wir|mein \w+) \w+ ?(\w+ )?essen\b|\bzu essen\b"
        r"|\bcomestible\w*|\bmangeable\b|\bse mange\b|\b(peut|peux|puis|pouvons)(-| )?(on|je|nous)? (le |la |les |en )?manger\b"
        r"|\bse (puede|pueden) comer\b|\bpuedo comer\w*|\bse come\b|\bcommestibil\w*|\bmangerecci\w*"
        r"|\b(si puo|posso|possiamo) mangiar\w*|\beetba\w+|\b(kan|mag|kun|kunnen|mogen) (ik|je|we|men) \w+ ?(\w+ )?eten\b", _I)),
    (TOXICITY, re.compile(
        r"\bpoison\w*|\btoxic\w*|\bdeadly\b|\blethal\b|\bdangerous\b|\bharm(ful|less)?\b|\bkill\w*|\bfatal\b"
        r"|\bgiftig\w*|\bgift\b|\btodlich\w*|\bgefahrlich\w*|\bschadlich\w*|\btoxique\w*|\bveneneu\w*|\bmortel\w*"
        r"|\bdangereu\w*|\bvenenos[oa]s?\b|\btoxic[oa]s?\b|\bmortal\w*|\bpeligros[oa]s?\b|\bletal\w*|\bvelenos[oa]\b"
        r"|\bvelenos[ie]\b|\btossic[oa]\b|\bpericolos\w*|\bdodelijk\w*|\bgevaarlijk\w*|\bschadelijk\w*", _I)),
    (FEATURES, re.compile(
        r"\blook(s)? like\b|\bidentif\w*|\brecogni[sz]e\b|\bfeatures?\b|\bdescri\w*|\bappearance\b"
        r"|\bcap\b|\bgills?\b|\bpores?\b|\bstem\b|\bring\b|\bvolva\b|\bspore print\b|\bsmell\b|\bcolou?r\b"
        r"|\baussehen\b|\bsieht\b.{0,20}\baus\b|\berkennen\b|\bmerkmale?\b|\breconnaitre\b|\ba quoi ressembl\w+"
        r"|\baspect\b|\bcaracteristiques?\b|\bcomo es\b|\baspecto\b|\breconocer\b|\bcom e\b|\baspetto\b"
        r"|\briconoscer\w*|\bhoe ziet\b|\bherkennen\b|\bkenmerken\b", _I)),
    (HABITAT, re.compile(
        r"\bwhere\b|\bhabitat\b|\bgrows?\b|\bgrowing\b|\bseason\b|\bwhen (can|do|does|is)\b|\bfind\b|\bfound\b"
        r"|\bmonths?\b|\bautumn\b|\bspring\b|\bsummer\b|\bwinter\b|\bforests?\b|\bwoods?\b|\btrees?\b"
        r"|\bwo\b|\bwachst\b|\bsaison\b|\bou pousse\b|\bpousse\b|\bdonde\b|\bcrece\b|\btemporada\b|\bdove\b"
        r"|\bcresce\b|\bstagione\b|\bwaar\b|\bgroeit\b|\bseizoen\b", _I)),
]

# Keywords people misspell; a word of 5+ letters close to one of these (same first letter) is read
# as it before the patterns run ("posionous" -> "poisonous").
KEYWORDS = tuple(sorted(set("""
poisonous poison poisoning edible deadly toxic dangerous symptoms lookalike lookalikes mushroom mushrooms
swallowed vomiting diarrhea diarrhoea hallucinations antidote treatment alcohol cooked eatable harmful lethal
giftig essbar gegessen symptome verwechslung erbrechen durchfall pilze
comestible toxique mortel symptomes vomissements
venenoso venenosa comestible sintomas diarrea vomitando
velenoso velenosa commestibile sintomi mangiato funghi
eetbaar dodelijk symptomen gegeten paddenstoel paddenstoelen
""".split())))
_WORD = re.compile(r"[a-z]+")
# Real words that happen to be close to a keyword ("morels" ~ "mortel") are never corrected.
_PROTECTED = frozenset(GENUS_NAMES) | frozenset().union(*WORDS.values())


def correct_keywords(folded: str) -> str:
    """Replace misspelt keywords in folded text by the keyword ('posionous' -> 'poisonous')."""
    def fix(m: re.Match[str]) -> str:
        word = m.group(0)
        if len(word) < 5 or word in KEYWORDS or word in _PROTECTED:
            return word
        best = process.extractOne(word, KEYWORDS, scorer=fuzz.ratio, score_cutoff=80)
        if best is None or best[0][0] != word[0] or abs(len(best[0]) - len(word)) > 2:
            return word
        return best[0]

    return _WORD.sub(fix, folded)


def intent_of(text: str) -> str:
    """The intent of a message (any case or accents)."""
    folded = correct_keywords(fold(text))
    for name, pattern in PATTERNS:
        if pattern.search(folded):
            return name
    return GENERAL
