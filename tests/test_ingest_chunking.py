"""Chunking: headings in the guides' styles, synonym mapping, offsets, sizes, stable ids."""

from langchain_core.documents import Document

from ingest.chunking import (
    chunk_document,
    chunk_documents,
    epithet_variants,
    find_headings,
    split_spans,
)
from ingest.loaders import load_paths
from ingest.testing import ATKINSON_STYLE, PALMER_STYLE, tiny_catalog, write_tiny_guides


def _guide(text: str, source: str = "g.txt") -> Document:
    return Document(page_content=text, metadata={"source": source, "title": "T", "kind": "guide"})


def test_bold_headings_map_old_names_to_catalog_labels():
    heads = find_headings(ATKINSON_STYLE, tiny_catalog())
    species = {h.species_name: h.species for h in heads if h.species_name}
    assert species == {
        "Amanita muscaria": "amanita_muscaria",
        "Amanitopsis vaginata": "amanita_vaginata",  # synonym
        "Coprinus micaceus": "coprinellus_micaceus",  # synonym
        "Boletus imaginarius": "",  # printed in the guide, unknown to the catalog
    }
    structural = [h.section for h in heads if not h.species_name]
    assert "CHAPTER II." in structural and "COOKING." in structural


def test_allcaps_and_numbered_headings():
    heads = find_headings(PALMER_STYLE, tiny_catalog())
    names = [(h.species_name, h.species) for h in heads if h.species_name]
    # "Agaricus melleus" is a catalog synonym of Armillaria mellea
    assert names == [("Agaricus melleus", "armillaria_mellea"), ("Boletus bovinus", ""), ("Boletus edulis", "")]
    assert any(h.section == "GENERAL DIRECTIONS." and not h.species_name for h in heads)


def test_subgenus_abbreviation_and_gender_variants():
    text = (
        "=Armillaria ostoyae= Romagn.--first genus seen.\n\n"
        "     =Ag. (Armillaria) melleus= Vahl. \"Honey-Colored Armillaria.\"\n\nText.\n\n"
        "     FIG. 3. =Gyromitra= _esculenta_ Fries. \"Esculent Gyromitra.\"\n\nText.\n\n"
        "=A. muscarius= Fr.--abbreviated genus.\n"
    )
    heads = [h for h in find_headings(text, tiny_catalog()) if h.species_name]
    assert [(h.species_name, h.species) for h in heads] == [
        ("Armillaria ostoyae", ""),
        ("Agaricus (Armillaria) melleus", "armillaria_mellea"),  # sub-genus + melleus -> mellea
        ("Gyromitra esculenta", ""),
        # "A." expands to the last genus seen with that initial (Agaricus, from "Ag."), a catalog synonym
        ("Agaricus muscarius", "amanita_muscaria"),
    ]
    assert "mellea" in epithet_variants("melleus") and "campestris" in epithet_variants("campester")


def test_non_species_bold_is_not_a_heading():
    text = "=Suspected.=--This is a pretty species.\n\n=DESCRIPTION.= PILEUS. Dry.\n"
    assert [h for h in find_headings(text, tiny_catalog()) if h.species_name] == []


def test_chunks_keep_exact_offsets_and_metadata(tmp_path):
    docs = load_paths([write_tiny_guides(tmp_path)]).documents
    chunks = chunk_documents(docs, tiny_catalog())
    texts = {d.metadata["source"]: d.page_content for d in docs}
    for chunk in chunks:
        m = chunk.metadata
        assert texts[m["source"]][m["start"] : m["end"]] == chunk.page_content
        assert set(m) >= {"source", "title", "kind", "species", "species_name", "section", "start", "end",
                          "chunk_id", "content_hash"}
        assert all(isinstance(v, str | int | float | bool) for v in m.values())
    tagged = {(c.metadata["source"], c.metadata["species"]) for c in chunks if c.metadata["species"]}
    assert ("atkinson_style.body.txt", "amanita_vaginata") in tagged
    assert ("grisette.html", "amanita_vaginata") in tagged
    assert ("palmer_style.txt", "armillaria_mellea") in tagged
    # prose after a chapter heading is not attributed to the last species before it
    cooking = next(c for c in chunks if "cooked soon after" in c.page_content)
    assert cooking.metadata["species"] == "" and cooking.metadata["section"] == "COOKING."


def test_long_sections_are_split_with_overlap_and_stable_ids():
    paragraph = "The cap is red with white warts and the gills are white. " * 12
    text = "=Amanita muscaria= Linn.--" + "\n\n".join([paragraph] * 8)
    doc = _guide(text)
    chunks = chunk_document(doc, tiny_catalog(), chunk_size=900, chunk_overlap=150)
    assert len(chunks) > 4
    assert all(len(c.page_content) <= 900 for c in chunks)
    assert all(c.metadata["species"] == "amanita_muscaria" for c in chunks)
    starts = [c.metadata["start"] for c in chunks]
    ends = [c.metadata["end"] for c in chunks]
    assert starts == sorted(starts) and ends[-1] == len(text.rstrip())
    # consecutive chunks overlap or touch: what lies between them is whitespace at most
    assert all(text[e_prev:s].strip() == "" for s, e_prev in zip(starts[1:], ends, strict=False))
    again = chunk_document(doc, tiny_catalog(), chunk_size=900, chunk_overlap=150)
    assert [c.metadata["chunk_id"] for c in again] == [c.metadata["chunk_id"] for c in chunks]
    assert len({c.metadata["chunk_id"] for c in chunks}) == len(chunks)


def test_overlap_within_a_long_paragraph():
    sentence = "Gills white, free, crowded; spores white and elliptical. "
    text = sentence * 60  # one paragraph of ~3400 chars: split at sentences, with overlap
    spans = split_spans(text, chunk_size=1000, chunk_overlap=200)
    assert len(spans) >= 4
    assert all(0 < e_prev - s <= 200 for (s, _), (_, e_prev) in zip(spans[1:], spans, strict=False))


def test_split_spans_hard_cuts_text_without_separators():
    text = "x" * 2500
    spans = split_spans(text, chunk_size=1000, chunk_overlap=100)
    assert spans[0] == (0, 1000) and spans[-1][1] == 2500
    assert all(e - s <= 1000 for s, e in spans)
