"""The real 19th-century guides in ../shared/data/guides (skipped when absent).

Loading and chunking run on all three guides; the full pipeline (embeddings + Chroma) runs on
the smallest one (Palmer) to stay fast. benchmarks/bench_ingest.py ingests everything.
"""

import pytest

from bot.settings import Settings
from ingest import pipeline, store
from ingest.chunking import chunk_documents, find_headings
from ingest.loaders import load_paths
from knowledge_base import vectorstore
from knowledge_base.catalog import default_catalog


@pytest.fixture(scope="module")
def guides_dir(shared_data):
    folder = shared_data / "guides"
    if not any(folder.glob("*.txt")):
        pytest.skip(f"no guides in {folder}")
    return folder


def test_real_guides_load_chunk_and_tag_species(guides_dir):
    catalog = default_catalog()
    loaded = load_paths([guides_dir])
    assert loaded.skipped == []
    assert len(loaded.documents) == len(list(guides_dir.glob("*.body.txt")))
    for doc in loaded.documents:
        assert "Produced by" not in doc.page_content[:200] and "E-text prepared" not in doc.page_content[:200]
        assert not doc.metadata["title"].endswith(".txt")  # a real title, from SOURCES.md

    chunks = chunk_documents(loaded.documents, catalog)
    texts = {d.metadata["source"]: d.page_content for d in loaded.documents}
    per_source = {name: 0 for name in texts}
    for chunk in chunks:
        m = chunk.metadata
        per_source[m["source"]] += 1
        assert texts[m["source"]][m["start"] : m["end"]] == chunk.page_content
        assert len(chunk.page_content) <= 1000
    assert all(n > 0 for n in per_source.values())

    # every guide has species headings; the famous deadly one is found in Atkinson
    atkinson = next(d for d in loaded.documents if d.metadata["source"].startswith("atkinson"))
    heads = find_headings(atkinson.page_content, catalog)
    phalloides = next(h for h in heads if h.species_name == "Amanita phalloides")
    assert "Deadly Poisonous" in phalloides.section
    assert phalloides.species == (catalog.resolve("Amanita phalloides") or "")
    for doc in loaded.documents:
        assert sum(1 for h in find_headings(doc.page_content, catalog) if h.species_name) >= 5
    # names are mapped through the catalog (synonyms included) wherever the catalog knows them
    for chunk in chunks:
        printed = chunk.metadata["species_name"]
        if printed and "(" not in printed and catalog.resolve(printed):
            assert chunk.metadata["species"] == catalog.resolve(printed)


def test_real_guide_through_the_full_pipeline(guides_dir, tmp_path):
    palmer = sorted(guides_dir.glob("palmer*.txt"))
    if not palmer:
        pytest.skip("Palmer's guide is not in the guides folder")
    settings = Settings().model_copy(update={"chroma_path": tmp_path / "chroma", "chroma_url": None})
    report = pipeline.reingest(settings, sources=palmer, include_catalog=False)
    assert report.status == "built", report.error
    assert report.chunks == store.serving_info(settings)["count"] > 10
    hits = vectorstore.open_serving(settings).similarity_search("shaggy mane Coprinus comatus", k=3)
    assert any("COPRINUS COMATUS" in d.page_content or d.metadata["species_name"] == "Coprinus comatus" for d in hits)
