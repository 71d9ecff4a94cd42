"""Consistency of the species catalog (knowledge_base/catalog/*.yaml), the single source of truth for edibility.

Every rule is computed from the data; nothing here lists which profiles are allowed to break a rule.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge_base.catalog import (
    CATALOG_DIR,
    DANGEROUS,
    Catalog,
    Lookalike,
    SpeciesProfile,
    load_catalog,
    load_profile,
    normalise_name,
)

ROOT = Path(__file__).resolve().parent.parent
VISION_LABELS = ROOT / "docs" / "vision_labels_ge2.txt"

MUST_BE_DEADLY = [
    "amanita_phalloides",
    "amanita_virosa",
    "amanita_verna",
    "amanita_bisporigera",
    "amanita_ocreata",
    "galerina_marginata",
    "lepiota_brunneoincarnata",
    "cortinarius_orellanus",
    "cortinarius_rubellus",
    "gyromitra_esculenta",
]
MUST_BE_DANGEROUS = [
    "clitocybe_dealbata",
    "clitocybe_rivulosa",
    "inocybe_erubescens",
    "omphalotus_olearius",
    "entoloma_sinuatum",
    "paxillus_involutus",
    "tricholoma_equestre",
    "chlorophyllum_molybdites",
    "coprinopsis_atramentaria",
]
OLD_GUIDE_NAMES = {
    "Amanitopsis vaginata": "amanita_vaginata",
    "Coprinus micaceus": "coprinellus_micaceus",
    "Boletus satanas": "boletus_satanas",
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


# --- helpers (the rules themselves, so they can be tested on a tiny made-up catalog too) -------------------


def own_names(label: str, profile: SpeciesProfile) -> set[str]:
    """Normalised names that identify the taxon itself: label, accepted name, synonyms."""
    return {normalise_name(n) for n in (label, profile.scientific_name, *profile.synonyms)}


def same_species(cat: Catalog, a: str, b: str) -> bool:
    """Two labels describe one species when either profile names the other's accepted name among its own names."""
    pa, pb = cat.profiles[a], cat.profiles[b]
    a_names_b = normalise_name(pb.scientific_name) in own_names(a, pa)
    b_names_a = normalise_name(pa.scientific_name) in own_names(b, pb)
    return a_names_b or b_names_a


def name_conflicts(cat: Catalog) -> list[str]:
    """Names listed by one profile that resolve to another profile which is not the same species."""
    problems = []
    for label, p in sorted(cat.profiles.items()):
        for name in (p.scientific_name, *p.synonyms, *p.common_names):
            owner = cat.resolve(name)
            if owner != label and not same_species(cat, label, owner):
                problems.append(f"{label}: {name!r} resolves to {owner}")
    return problems


def lookalikes(cat: Catalog) -> list[tuple[str, Lookalike]]:
    """(label, lookalike) for every lookalike that every profile lists."""
    return [(label, lk) for label, p in cat.profiles.items() for lk in p.lookalikes]


def same_species_pairs(cat: Catalog) -> set[tuple[str, str]]:
    labels = cat.labels
    return {(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :] if same_species(cat, a, b)}


def _profile(label: str, scientific_name: str, edibility: str, common: list[str]) -> SpeciesProfile:
    return SpeciesProfile(
        label=label,
        scientific_name=scientific_name,
        common_names=common,
        edibility=edibility,
        edibility_note="test",
        toxins=["x"] if edibility in DANGEROUS else [],
        syndrome="x" if edibility in DANGEROUS else None,
        features={"cap": "c", "gills_or_pores": "g", "stem": "s"},
        habitat="h",
        season="s",
        references=[{"title": "t"}],
    )


# --- the catalog as a whole ---------------------------------------------------------------------------------


def test_every_file_validates_and_matches_its_label():
    paths = sorted(CATALOG_DIR.glob("*.yaml"))
    assert paths
    for path in paths:
        assert load_profile(path).label == path.stem


def test_catalog_is_large_enough(catalog):
    assert len(catalog) >= 60


def test_every_vision_label_has_a_profile(catalog):
    labels = [line.strip() for line in VISION_LABELS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert labels
    missing = [label for label in labels if label not in catalog]
    assert missing == []


@pytest.mark.parametrize("label", MUST_BE_DEADLY)
def test_known_killers_are_deadly(catalog, label):
    assert catalog.edibility(label) == "deadly"


@pytest.mark.parametrize("label", MUST_BE_DANGEROUS)
def test_known_poisoners_are_dangerous(catalog, label):
    assert catalog.edibility(label) in DANGEROUS


def test_dangerous_profiles_name_toxins_and_syndrome(catalog):
    incomplete = [
        label
        for label, p in catalog.profiles.items()
        if p.edibility in DANGEROUS and not (p.toxins and p.syndrome)
    ]
    assert incomplete == []


# --- lookalikes -----------------------------------------------------------------------------------------------


def test_lookalikes_carry_the_catalog_edibility(catalog):
    wrong = [
        f"{label} -> {lk.species}: {lk.edibility} != {catalog.edibility(lk.species)}"
        for label, lk in lookalikes(catalog)
        if lk.species in catalog and lk.edibility != catalog.edibility(lk.species)
    ]
    assert wrong == []


def test_lookalikes_with_a_profile_are_named_by_label(catalog):
    # A Latin name where a profile exists hides the lookalike from label-based code (and its edibility from the test above).
    latin = [
        f"{label}: {lk.species!r} is {catalog.resolve(lk.species)}"
        for label, lk in lookalikes(catalog)
        if lk.species not in catalog and catalog.resolve(lk.species) not in (None, label)
    ]
    assert latin == []


def test_edible_species_confused_with_a_deadly_one_warn_about_danger(catalog):
    confused_with_deadly = {
        lk.species for p in catalog.profiles.values() if p.edibility == "deadly" for lk in p.lookalikes
    }
    silent = [
        label
        for label in sorted(confused_with_deadly & set(catalog.profiles))
        if catalog.edibility(label) in ("edible", "edible_with_caution")
        and not any(lk.edibility in DANGEROUS for lk in catalog.profiles[label].lookalikes)
    ]
    assert silent == []


# --- names ---------------------------------------------------------------------------------------------------


def test_no_name_points_at_another_species(catalog):
    assert name_conflicts(catalog) == []


def test_duplicate_labels_of_one_species_agree_on_edibility(catalog):
    disagree = [
        (a, b) for a, b in same_species_pairs(catalog) if catalog.edibility(a) != catalog.edibility(b)
    ]
    assert disagree == []


@pytest.mark.parametrize(("old_name", "label"), sorted(OLD_GUIDE_NAMES.items()))
def test_old_guide_names_resolve(catalog, old_name, label):
    assert catalog.resolve(old_name) == label


def test_name_rules_catch_a_shared_common_name():
    # The rules above must be able to fail: two different species sharing a common name is a conflict,
    # while a duplicate label of the same species (old genus) is not.
    cat = Catalog(
        {
            "amanita_x": _profile("amanita_x", "Amanita x", "deadly", ["angel"]),
            "amanita_y": _profile("amanita_y", "Amanita y", "edible", ["angel"]),
            "oldgenus_x": _profile("oldgenus_x", "Amanita x", "deadly", []),
        }
    )
    assert name_conflicts(cat) == ["amanita_y: 'angel' resolves to amanita_x"]
    assert same_species_pairs(cat) == {("amanita_x", "oldgenus_x")}
