"""The species catalog: one YAML file per species in knowledge_base/catalog/.

This is the single source of truth for edibility. The vision model's verdict, the
knowledge-base answers and the bot all read it from here; nothing else may hold a
second copy of "is species X poisonous".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

CATALOG_DIR = Path(__file__).resolve().parent / "catalog"
# libyaml's parser where PyYAML was built with it: the 300-file catalog loads in about 0.4 s instead of 4 s.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Edibility = Literal["deadly", "poisonous", "inedible", "edible_with_caution", "edible"]
EDIBILITY_CLASSES: tuple[str, ...] = ("deadly", "poisonous", "inedible", "edible_with_caution", "edible")
# Verdicts are the edibility classes plus "unknown", which is always presented as "treat as poisonous".
VERDICTS: tuple[str, ...] = EDIBILITY_CLASSES + ("unknown",)
# Species whose ingestion causes poisoning: their summed probability drives the safety rule.
DANGEROUS: frozenset[str] = frozenset({"deadly", "poisonous"})
# "Never present as food" (the FungiCLEF poisonous_or_avoid notion): everything but plain edible.
AVOID: frozenset[str] = frozenset({"deadly", "poisonous", "inedible", "edible_with_caution", "unknown"})
# Severity order, most dangerous first; used when several verdicts compete.
SEVERITY = {v: i for i, v in enumerate(("deadly", "poisonous", "unknown", "inedible", "edible_with_caution", "edible"))}
# Languages the bot understands and answers in (ISO 639-1). English names live in common_names.
LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "it", "nl")


class Lookalike(BaseModel):
    model_config = ConfigDict(extra="forbid")
    species: str  # a catalog label (genus_species) where the catalog has it, else a Latin name
    edibility: Edibility
    how_to_tell: str


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    url: str | None = None


class Features(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cap: str
    gills_or_pores: str
    stem: str
    ring: str | None = None
    volva: str | None = None
    spore_print: str | None = None
    smell: str | None = None
    flesh: str | None = None


class SpeciesProfile(BaseModel):
    """One species. Written in the project's own words from current references."""

    model_config = ConfigDict(extra="forbid")

    label: str  # genus_species, lower case, equal to the file stem and the vision label
    scientific_name: str
    authority: str | None = None
    family: str | None = None
    synonyms: list[str] = Field(default_factory=list)  # older names, incl. 19th-century guide names
    common_names: list[str] = Field(default_factory=list)  # English, the usual one first
    # Common names in other languages, the usual one first: {"de": ["Grüner Knollenblätterpilz"], ...}
    common_names_by_language: dict[str, list[str]] = Field(default_factory=dict)
    edibility: Edibility
    edibility_note: str  # one or two sentences: why this class; caveats
    historical_note: str | None = None  # where old guides disagree with the current fact
    toxins: list[str] = Field(default_factory=list)
    syndrome: str | None = None  # e.g. "phalloides (amatoxin) syndrome"
    onset: str | None = None  # typical time from meal to first symptoms
    organs_affected: list[str] = Field(default_factory=list)
    symptoms: str | None = None
    features: Features
    habitat: str
    season: str
    regions: list[str] = Field(default_factory=list)  # e.g. ["Europe", "North America"]
    lookalikes: list[Lookalike] = Field(default_factory=list)
    references: list[Reference] = Field(min_length=1)

    @field_validator("label")
    @classmethod
    def _label_format(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z]+_[a-z0-9_]+", v):
            raise ValueError(f"label must be genus_species in lower case, got {v!r}")
        return v

    @field_validator("common_names_by_language")
    @classmethod
    def _known_languages(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for lang, names in v.items():
            if lang not in LANGUAGES or lang == "en":
                raise ValueError(f"common_names_by_language: {lang!r} is not one of {LANGUAGES[1:]} "
                                 "(English names go in common_names)")
            if not names or any(not isinstance(n, str) or not n.strip() for n in names):
                raise ValueError(f"common_names_by_language[{lang!r}] must be a non-empty list of names")
        return v

    def common_name(self, lang: str = "en") -> str | None:
        """The usual common name in a language (English when the catalog has none in it)."""
        names = self.common_names_by_language.get(lang) or self.common_names
        return names[0] if names else None

    @property
    def genus(self) -> str:
        return self.label.split("_", 1)[0]

    @property
    def display_name(self) -> str:
        common = f" ({self.common_names[0]})" if self.common_names else ""
        return f"{self.scientific_name}{common}"


def normalise_name(name: str) -> str:
    """'Amanita  Phalloides' / 'amanita-phalloides' / 'Amanita phalloides Fr.' -> 'amanita phalloides'."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z ]+", " ", text.replace("_", " "))
    return " ".join(text.split())


@dataclass
class Catalog:
    profiles: dict[str, SpeciesProfile]
    _names: dict[str, str] = field(default_factory=dict, repr=False)  # normalised name -> label

    def __post_init__(self) -> None:
        # Names are claimed in order of authority, so that an old synonym in one file can never
        # take over another file's own label or accepted name: labels, then accepted names,
        # then synonyms, then common names.
        passes = [
            lambda label, p: [label],
            lambda label, p: [p.scientific_name],
            lambda label, p: p.synonyms,
            lambda label, p: p.common_names,
            lambda label, p: [n for names in p.common_names_by_language.values() for n in names],
        ]
        for names_of in passes:
            for label, p in self.profiles.items():
                for name in names_of(label, p):
                    self._names.setdefault(normalise_name(name), label)

    # --- lookups -----------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return sorted(self.profiles)

    def __contains__(self, label: object) -> bool:
        return label in self.profiles

    def __len__(self) -> int:
        return len(self.profiles)

    def get(self, label: str) -> SpeciesProfile | None:
        return self.profiles.get(label)

    def edibility(self, label: str) -> str:
        """Edibility class of a label; a species the catalog does not know is 'unknown'."""
        p = self.profiles.get(label)
        return p.edibility if p else "unknown"

    def resolve(self, name: str) -> str | None:
        """Exact resolution of a label, Latin name, synonym or common name (case/spacing-insensitive).

        Fuzzy matching (typos) lives in the knowledge base's species resolver, not here.
        """
        return self._names.get(normalise_name(name))

    @property
    def name_index(self) -> dict[str, str]:
        return dict(self._names)


def load_profile(path: Path) -> SpeciesProfile:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    profile = SpeciesProfile.model_validate(data)
    if profile.label != path.stem:
        raise ValueError(f"{path.name}: label {profile.label!r} does not match the file name")
    return profile


def load_catalog(directory: Path | str | None = None) -> Catalog:
    directory = Path(directory) if directory else CATALOG_DIR
    profiles = {}
    for path in sorted(directory.glob("*.yaml")):
        p = load_profile(path)
        profiles[p.label] = p
    return Catalog(profiles)


@lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """The bundled catalog, loaded once per process."""
    return load_catalog()
