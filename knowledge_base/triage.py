"""Poisoning triage: does a message say that someone ate a mushroom, or describe poisoning?

Checked before anything else in every front door, in the six languages: a message that suggests
something was eaten, tasted, licked or swallowed (by the writer, a child or a pet; any tense, with
or without "I"), or that describes symptoms of a person or animal, gets first aid in its first
lines. The patterns run on accent-folded text (knowledge_base.language.fold), so "comió" and
"comio", "mangé" and "mange" are one word.

Deliberately generous: a false alarm costs a paragraph of first aid; a missed poisoning can cost a
life. Questions about eating in the future ("can I eat it?", "peut-on le manger ?") are not
poisonings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge_base.language import fold

_I = re.IGNORECASE
# Something was eaten, tasted, licked or swallowed (past or in progress).
_INGESTED = re.compile(
    # English
    r"\b(ate|swallowed|ingested|licked|chewed|tasted|munched|nibbled|gobbled)\b"
    r"|\b(have|has|had|'ve|just|already|i|we|he|she|they|who|dog|cat|kid|child)\s+(\w+\s+)?eaten\b"
    r"|\b(after|since|from)\s+(eating|having eaten|eaten|tasting)\b|\bis eating\b|\bwas eating\b"
    r"|\b(in|into|of|from|out of) (his|her|their|its|my|your|the) mouth\b|\btook a bite\b"
    r"|\bbit (into|off|a|an|the|some|one|it|them|of)\b|\b(been|keeps?|kept|started) eating\b|\beats (them|these|it)\b"
    r"|\bhad (some |a few |a bit of |wild |the |these |those )?(mushrooms?|shrooms?|fungi|toadstools?|some|a few|a bit)\b"
    r"|\b(cooked|fried) (and ate |up )?(what|them|some|a|the|it|those)\b"
    # German
    r"|\b(gegessen|aufgegessen|verschluckt|verspeist|probiert|gekostet|genascht|abgebissen|geleckt|angeleckt|abgeleckt"
    r"|angeknabbert|angebissen)\b|\bin den mund\b"
    r"|\bnach dem (essen|verzehr)\b|\b(isst|frisst|frass|fressen|gefressen)\b"
    # French (mangé/mange folded alike; "se mange" = "is eaten", a question, not a meal)
    r"|\b(ai|as|a|avons|avez|ont|j ai|il a|elle a)\s+(\w+\s+)?(mange|mangee|manges|avale|goute|leche|ingere|croque)\b"
    r"|\b(mange|avale|a avale|goute|lechait|mangeait)\s+(un|une|des|du|de la|quelques|ce|cette|ces|le|la|les)\b"
    r"|\bapres (avoir mange|le repas|manger)\b"
    # Spanish
    r"|\b(comi|comio|comimos|comieron|comido|comiendo|trago|trague|tragado|probo|probado|lamio|lamido|ingerido"
    r"|ingirio|mordio|mordido)\b|\bdespues de comer\b"
    # Italian
    r"|\b(mangiato|mangiata|mangiati|mangiate|ingerito|ingerita|ingoiato|ingoiata|assaggiato|assaggiata|leccato"
    r"|masticato|morso)\b|\bdopo (aver|avere) mangiato\b|\bsta mangiando\b"
    # Dutch
    r"|\b(gegeten|opgegeten|ingeslikt|doorgeslikt|geproefd|gelikt|opgevreten|gevreten|ingenomen|aangevreten)\b"
    r"|\b(at|vrat|slikte|proefde|likte)\s+(een|van|aan|wat|die|dat|het|de)\b|\bna het eten\b", _I)

# Symptoms of poisoning, in the six languages (word starts, folded).
_SYMPTOM = re.compile(
    r"\b(vomit\w*|throw(ing|n)? up|threw up|puk\w*|diarr?h?o?ea\w*|diarrh\w*|sweat\w*|drool\w*|salivat\w*"
    r"|hallucinat\w*|seeing things|tripping|jaundice\w*|yellow (skin|eyes)|dark (urine|pee)|stomach ?(ache|cramps?|pain)"
    r"|belly ?ache|tummy ?ache|cramps?|nause\w*|feel(s|ing)? (sick|ill|unwell|bad|weird|strange|dizzy)|dizz\w*"
    r"|(is|am|are|gets?|getting) (sick|ill)|unconscious|seizure\w*|convuls\w*|blurr?ed vision|racing heart|palpitation\w*"
    r"|not peeing|passed out|fainted|shaking|trembling"
    r"|heart (is )?(racing|pounding)|red (face|hot)|face is red|flush\w*|(pee|urine|wee) (is )?(\w+ )?dark"
    r"|skin (is |looks |went |turned )?(\w+ )?yellow|eyes (are |look )?(\w+ )?yellow"
    r"|erbrech\w*|erbricht|ubergeb\w*|kotz\w*|durchfall|schwitz\w*|sabber\w*|speichel\w*|halluzin\w*|gelbsucht"
    r"|gelbe (haut|augen)|dunkle[rn]? urin|bauchschmerz\w*|bauchweh|krampf\w*|krampfe|ubel|schwindel\w*|bewusstlos"
    r"|vomi\w*|diarrhee|transpir\w*|sueurs?|bave|bavait|salive|hallucin\w*|jaunisse|urines? foncees?|mal au ventre"
    r"|crampes?|nausee\w*|malaise|vertiges?|inconscient\w*"
    r"|diarrea|sud(a|o|ando|ores)|babe\w*|saliva\w*|alucin\w*|ictericia|piel amarilla|orina oscura"
    r"|dolor de (barriga|estomago|tripa|panza)|calambres?|mare(o|ado|ada)|inconsciente"
    r"|sud(ato|ata|ando|orazione)|bava|allucin\w*|ittero|pelle gialla|urina scura|mal di pancia|crampi|vertigin\w*"
    r"|svenut\w*"
    r"|overgeven|overgeeft|braakt|braken|kots\w*|diarree|zweet\w*|kwijl\w*|speeksel\w*|geelzucht|gele huid"
    r"|donkere urine|buikpijn|kramp\w*|misselijk\w*|duizelig\w*|bewusteloos)\b", _I)
# Someone in particular, or a time: "my son is vomiting", "vomiting for 2 hours", "since yesterday".
# Without one, "does it cause vomiting?" is a question about symptoms, not a poisoning.
_SOMEONE_OR_WHEN = re.compile(
    r"\b(i|im|i m|me|my|we|our|he|she|his|her|son|daughter|child|kid|kids|baby|toddler|husband|wife|friend|dog|cat"
    r"|puppy|ago|since|now|hours?|hrs?|mins?|minutes?|yesterday|last night|after|started|feel|feeling"
    r"|ich|mir|mein\w*|wir|er|sie|seit|vor|jetzt|stunden?|minuten|gestern|nach|hund|katze|kind|sohn|tochter"
    r"|je|j|moi|mon|ma|mes|nous|il|elle|depuis|maintenant|heures?|hier|apres|chien|chat|enfant|fils|fille"
    r"|yo|mi|mis|tengo|tiene|esta|estoy|hace|ahora|horas?|ayer|despues|perro|gato|nino|nina|hijo|hija"
    r"|io|ho|ha|sto|sta|mio|mia|fa|ora|ore|dopo|ieri|cane|gatto|bambin\w|figli\w"
    r"|ik|mijn|heb|heeft|geleden|nu|uur|sinds|gisteren|na|hond|kat|kind|zoon|dochter)\b", _I)
_PET = re.compile(r"\b(dog|dogs|puppy|cat|cats|kitten|pet|pets|horse|hunde|chiens|chats|perros|gatos|cani|gatti|honden|katten|hund|hundin|welpe|katze|kater|haustier|pferd|chien|chienne"
                  r"|chiot|chat|chaton|cheval|perro|perra|perrito|gato|gata|gatito|caballo|cane|cagnolino|gatto|gattino"
                  r"|cavallo|hond|pup|puppy|kat|poes|paard)\b", _I)
_CHILD = re.compile(r"\b(child|children|kid|kids|son|daughter|toddler|baby|boy|girl|kind|kinder|kleinkind|sohn|tochter"
                    r"|junge|madchen|enfant|enfants|fils|fille|bebe|gamin|nino|nina|ninos|hijo|hija|bebe|bambino"
                    r"|bambina|bambini|figlio|figlia|neonato|kindje|zoon|dochter|peuter|jongen|meisje)\b", _I)
_HOURS = re.compile(r"\b(\d+(?:[.,]\d+)?)\s*(h|hr|hrs|hours?|std|stunden?|heures?|horas?|ore|uur)\b", _I)
_LATE = re.compile(r"\b(yesterday|last night|gestern|hier soir|hier|ayer|anoche|ieri|gisteren|days? ago|tage|jours"
                   r"|dias|giorni|dagen)\b", _I)


def mentions_child_or_pet(text: str) -> bool:
    """A child or an animal is named ("is it dangerous for dogs?"), in any of the six languages."""
    folded = fold(text)
    return bool(_PET.search(folded) or _CHILD.search(folded))


@dataclass(frozen=True)
class Triage:
    """A message that suggests a possible poisoning."""

    ingested: bool  # eating, tasting, licking or swallowing was mentioned
    symptoms: bool  # poisoning symptoms were described
    pet: bool  # an animal is the patient
    child: bool  # a child is the patient
    hours: float | None  # hours since the meal, when the message says ("10 hours ago", "yesterday")

    @property
    def late(self) -> bool:
        """Six hours or more since the meal: the pattern of amatoxins and orellanine."""
        return self.hours is not None and self.hours >= 6


def triage(text: str) -> Triage | None:
    """A Triage when the message may describe a poisoning, else None."""
    folded = fold(text)
    ingested = bool(_INGESTED.search(folded))
    symptoms = bool(_SYMPTOM.search(folded)) and (ingested or bool(_SOMEONE_OR_WHEN.search(folded)))
    if not (ingested or symptoms):
        return None
    hours = None
    m = _HOURS.search(folded)
    if m:
        hours = float(m.group(1).replace(",", "."))
    elif _LATE.search(folded):
        hours = 12.0
    return Triage(ingested=ingested, symptoms=symptoms, pet=bool(_PET.search(folded)),
                  child=bool(_CHILD.search(folded)), hours=hours)
