"""Answers about a toxin or a genus rather than one species ("what is orellanine?", "are inocybes poisonous?").

Toxin facts are written here from current clinical references (in the catalog's spirit: our own
words, no old guide); which species carry a toxin comes from the catalog's `toxins` field, so the
two never disagree. A genus takes the worst edibility among its catalog species.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge_base.catalog import SEVERITY, Catalog, SpeciesProfile


@dataclass(frozen=True)
class Toxin:
    key: str  # short name used in topics ("toxin:amatoxin")
    name: str
    aliases: tuple[str, ...]  # folded spellings people type
    catalog_terms: tuple[str, ...]  # substrings of the catalog's toxins entries that mean this toxin
    onset: str
    effects: str
    treatment: str
    source: str  # the reference the facts follow


TOXINS: tuple[Toxin, ...] = (
    Toxin("amatoxin", "amatoxins (alpha- and beta-amanitin)", ("amatoxin", "amatoxins", "amanitin", "amanitins", "alpha amanitin", "amanita poisoning",
                        "amanitine", "amatoxine", "amatoxinas", "amatossine", "amatoxinen", "knollenblatterpilzvergiftung"),
          ("amanitin", "amatoxin"),
          "6-24 hours (usually 8-12) after the meal",
          "violent vomiting and watery diarrhoea, then an apparent recovery on day 2-3 while the liver and kidneys "
          "fail; without treatment often fatal",
          "no home remedy and no antidote to wait for: hospital treatment as early as possible (activated charcoal, "
          "intravenous fluids, silibinin and/or N-acetylcysteine, in severe cases a liver transplant)",
          "Diaz JH, Amatoxin-containing mushroom poisonings, Wilderness Environ Med 2018"),
    Toxin("orellanine", "orellanine", ("orellanine", "orellanin", "orelanina", "orellanina", "orellanin"),
          ("orellanine",),
          "2-20 days after the meal (often about a week): by then the kidneys are already damaged",
          "thirst, nausea, headache, flank pain, then kidney failure",
          "no antidote: hospital care, dialysis, sometimes a kidney transplant; anyone who ate a webcap must be "
          "checked at once, before symptoms",
          "Danel VC et al., Orellanine poisoning, Toxicol Rev 2001"),
    Toxin("muscarine", "muscarine", ("muscarine", "muscarin", "muscarina", "muscarinic"),
          ("muscarine",),
          "15 minutes to 2 hours after the meal",
          "sweating, drooling, tears, blurred vision, vomiting and diarrhoea, slow heartbeat, breathing difficulty",
          "hospital care; atropine reverses the effects and is given by doctors only",
          "Lurie Y et al., Mushroom poisoning from species of genus Inocybe, Clin Toxicol 2009"),
    Toxin("ibotenic acid", "ibotenic acid and muscimol", ("ibotenic", "ibotenic acid", "muscimol", "pantherina syndrome",
                                         "ibotensaure", "acide ibotenique", "acido iboteno", "acido ibotenico"),
          ("ibotenic", "muscimol"),
          "30 minutes to 3 hours after the meal",
          "confusion, agitation, hallucinations, muscle jerks, then deep sleep; dangerous in children and with the "
          "panther cap",
          "hospital observation and supportive care; no specific antidote",
          "Moss MJ, Hendrickson RG, Toxicity of muscimol and ibotenic acid, Clin Toxicol 2019"),
    Toxin("coprine", "coprine", ("coprine", "coprina", "disulfiram"),
          ("coprine", "aldehyde dehydrogenase"),
          "minutes after drinking alcohol, up to about 3 days after the meal",
          "flushing, palpitations, headache, nausea and vomiting (a disulfiram-like reaction)",
          "avoid all alcohol for 3 days after eating ink caps; the reaction passes, but call a doctor if the heart "
          "races or pressure drops",
          "Michelot D, Poisoning by Coprinus atramentarius, Nat Toxins 1992"),
    Toxin("gyromitrin", "gyromitrin", ("gyromitrin", "gyromitrine", "gyromitrina", "giromitrina", "monomethylhydrazine", "mmh"),
          ("gyromitrin",),
          "5-12 hours after the meal (fumes from cooking can poison too)",
          "vomiting, diarrhoea, headache, then seizures, liver and kidney damage",
          "hospital care; doctors give pyridoxine (vitamin B6) for seizures",
          "Horowitz KM et al., Gyromitra mushroom toxicity, StatPearls 2023"),
    Toxin("psilocybin", "psilocybin", ("psilocybin", "psilocybine", "psilocibina", "psilocin", "magic mushroom", "magic mushrooms"),
          ("psilocybin",),
          "20-60 minutes after the meal, lasting about 4-6 hours",
          "hallucinations, anxiety or panic, fast heartbeat; dangerous mainly through accidents and in children",
          "a calm place and observation; call for help if the person is in danger, a child is affected or other "
          "mushrooms may have been eaten",
          "Peden NR et al., Clinical toxicology of magic mushroom ingestion, Postgrad Med J 1981"),
)

# English (and other) group names for genera people use in the plural.
GENUS_NAMES = {
    "inocybe": "inocybe", "inocybes": "inocybe", "fibrecap": "inocybe", "fibrecaps": "inocybe", "fibercaps": "inocybe",
    "cortinarius": "cortinarius", "cortinarii": "cortinarius", "webcap": "cortinarius", "webcaps": "cortinarius",
    "cortinaires": "cortinarius", "schleierlinge": "cortinarius", "gordijnzwammen": "cortinarius",
    "amanita": "amanita", "amanites": "amanita", "wulstlinge": "amanita",
    "knollenblatterpilze": "amanita", "amanieten": "amanita",
    "lepiota": "lepiota", "lepiotas": "lepiota", "dapperling": "lepiota", "dapperlings": "lepiota",
    "lepiotes": "lepiota", "schirmlinge": "lepiota", "parasolzwammen": "lepiota",
    "galerina": "galerina", "galerinas": "galerina", "galerinen": "galerina", "galerines": "galerina",
    "russula": "russula", "russulas": "russula", "brittlegill": "russula", "brittlegills": "russula",
    "taublinge": "russula", "russules": "russula", "rusula": "russula",
    "lactarius": "lactarius", "milkcap": "lactarius", "milkcaps": "lactarius", "milchlinge": "lactarius",
    "boletus": "boletus", "boletes": "boletus", "bolets": "boletus", "boleti": "boletus", "rohrlinge": "boletus",
    "morchella": "morchella", "morels": "morchella", "morel": "morchella", "morcheln": "morchella",
    "morilles": "morchella", "colmenillas": "morchella", "spugnole": "morchella", "morieljes": "morchella",
    "clitocybe": "clitocybe", "clitocybes": "clitocybe", "funnels": "clitocybe", "trichterlinge": "clitocybe",
    "entoloma": "entoloma", "entolomas": "entoloma", "pinkgills": "entoloma", "rotlinge": "entoloma",
    "tricholoma": "tricholoma", "tricholomas": "tricholoma", "ritterlinge": "tricholoma",
    "agaricus": "agaricus",
    "gyromitra": "gyromitra", "gyromitras": "gyromitra", "lorcheln": "gyromitra",
    "psilocybe": "psilocybe", "psilocybes": "psilocybe", "kahlkopfe": "psilocybe",
    # other languages' group names
    "risspilze": "inocybe", "risspilz": "inocybe", "inocibi": "inocybe", "vezelkoppen": "inocybe",
    "cortinarios": "cortinarius", "cortinari": "cortinarius", "haublinge": "galerina", "galeres": "galerina", "lepiote": "lepiota", "parasolletjes": "lepiota", "russule": "russula",
    "rusulas": "russula", "lactaires": "lactarius", "lactarios": "lactarius", "lattari": "lactarius",
    "melkzwammen": "lactarius", "boleten": "boletus", "boletos": "boletus",
    "clitocibi": "clitocybe", "trechterzwammen": "clitocybe", "entolomes": "entoloma", "entolomi": "entoloma",
    "satijnzwammen": "entoloma", "tricholomes": "tricholoma", "tricolomi": "tricholoma", "ridderzwammen": "tricholoma",
    "egerlinge": "agaricus", "pfifferlinge": "cantharellus", "girolles": "cantharellus",
    "amanitas": "amanita", "amanite": "amanita", "morillen": "morchella",
    "cantharellus": "cantharellus", "chanterelles": "cantharellus",
    "suillus": "suillus", "hebeloma": "hebeloma", "hebelomas": "hebeloma", "poisonpies": "hebeloma",
    "mycena": "mycena", "mycenas": "mycena", "bonnets": "mycena", "conocybe": "conocybe",
}


def toxin_mentioned(folded: str) -> Toxin | None:
    """The toxin a folded text names, if any (longest alias wins)."""
    best: tuple[int, Toxin] | None = None
    for toxin in TOXINS:
        for alias in toxin.aliases:
            if re.search(rf"\b{re.escape(alias)}\b", folded) and (best is None or len(alias) > best[0]):
                best = (len(alias), toxin)
    return best[1] if best else None


def species_with_toxin(toxin: Toxin, catalog: Catalog) -> list[SpeciesProfile]:
    """Catalog species whose toxins include this one, most dangerous first."""
    found = [p for p in catalog.profiles.values()
             if any(term in t.lower() and "not confirmed" not in t.lower() and "suspected" not in t.lower()
                    for t in p.toxins for term in toxin.catalog_terms)]
    return sorted(found, key=lambda p: (SEVERITY[p.edibility], p.scientific_name))


def genus_species(genus: str, catalog: Catalog) -> list[SpeciesProfile]:
    """Catalog species of a genus, most dangerous first."""
    return sorted((p for p in catalog.profiles.values() if p.genus == genus),
                  key=lambda p: (SEVERITY[p.edibility], p.scientific_name))
