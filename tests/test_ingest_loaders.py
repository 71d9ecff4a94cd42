"""Loaders: each format, Gutenberg stripping, titles, broken files skipped, catalog rendering."""

from pathlib import Path

import pytest

from ingest.loaders import (
    catalog_documents,
    catalog_fingerprint,
    guide_files,
    load_file,
    load_paths,
    read_sources_titles,
    strip_gutenberg,
)
from ingest.testing import minimal_pdf, tiny_catalog, write_tiny_guides


@pytest.fixture()
def guides(tmp_path) -> Path:
    return write_tiny_guides(tmp_path / "guides")


def test_each_format_loads_with_metadata(guides):
    result = load_paths([guides])
    by_source = {d.metadata["source"]: d for d in result.documents}
    assert set(by_source) == {"atkinson_style.body.txt", "palmer_style.txt", "notes.md", "grisette.html", "inkcap.pdf"}
    assert result.skipped == []
    for doc in result.documents:
        assert doc.metadata["kind"] == "guide"
        assert doc.metadata["title"]
    assert "glistening particles" in by_source["inkcap.pdf"].page_content
    html = by_source["grisette.html"]
    assert html.metadata["title"] == "Grisette notes"  # from <title>
    assert "var x" not in html.page_content  # scripts dropped
    assert "# Grisette" in html.page_content  # <h1> kept as a heading line
    assert by_source["notes.md"].metadata["title"] == "Notes on the fly agaric"


def test_gutenberg_boilerplate_is_stripped(guides):
    doc = load_file(guides / "atkinson_style.body.txt")
    text = doc.page_content
    assert text.startswith("A TINY GUIDE TO FUNGI")
    assert "START OF THE PROJECT GUTENBERG" not in text and "END OF THE PROJECT GUTENBERG" not in text
    assert "Produced by" not in text and "licence text" not in text
    assert "Mushrooms should be cooked" in text  # the book itself is kept


def test_strip_gutenberg_credits_without_markers():
    body = "Produced by Jane Doe and the Online Distributed\nProofreading Team\n\n\nTHE BOOK\n\nText."
    assert strip_gutenberg(body) == "THE BOOK\n\nText."
    assert strip_gutenberg("Plain text, no boilerplate.") == "Plain text, no boilerplate."


def test_broken_files_are_reported_and_skipped(guides, caplog):
    (guides / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    (guides / "binary.html").write_bytes(b"\x00\x01\x02<html>" + bytes(range(256)))
    (guides / "empty.html").write_text("<html><body><script>x()</script></body></html>")
    (guides / "truncated.pdf").write_bytes(minimal_pdf("Amanita muscaria")[:60])
    with caplog.at_level("WARNING"):
        result = load_paths([guides, guides / "missing.txt"])
    skipped = {Path(s.path).name for s in result.skipped}
    assert skipped == {"broken.pdf", "binary.html", "empty.html", "truncated.pdf", "missing.txt"}
    assert len(result.documents) == 5  # the good files still load
    assert "broken.pdf" in caplog.text


def test_titles_from_sources_table(tmp_path):
    (tmp_path / "SOURCES.md").write_text(
        "| file | title | author |\n|---|---|---|\n"
        "| `smith_1876.pg1.{full,body}.txt` | Mushrooms and Toadstools | W. G. Smith |\n"
    )
    (tmp_path / "smith_1876.pg1.body.txt").write_text("Produced by X\n\nSOME HEADER\n\nText about fungi here.")
    (tmp_path / "smith_1876.pg1.full.txt").write_text("full version, ignored when the body exists")
    assert read_sources_titles(tmp_path)["smith_1876.pg1.body.txt"] == "Mushrooms and Toadstools"
    assert [p.name for p in guide_files(tmp_path)] == ["smith_1876.pg1.body.txt"]  # SOURCES.md is no guide
    (doc,) = load_paths([tmp_path]).documents
    assert doc.metadata["title"] == "Mushrooms and Toadstools"


def test_catalog_documents_cover_sections_with_chroma_safe_metadata():
    catalog = tiny_catalog()
    docs = catalog_documents(catalog)
    muscaria = {d.metadata["section"]: d for d in docs if d.metadata["species"] == "amanita_muscaria"}
    assert set(muscaria) == {"toxicity", "symptoms", "features", "lookalikes", "habitat"}
    assert "POISONOUS" in muscaria["toxicity"].page_content
    assert "amanita_caesarea" in muscaria["lookalikes"].page_content
    assert "white warts" in muscaria["features"].page_content
    for doc in docs:
        assert doc.metadata["kind"] == "catalog"
        assert all(isinstance(v, str | int | float | bool) for v in doc.metadata.values())
    # profiles without symptoms get no empty symptoms document
    assert not [d for d in docs if d.metadata["species"] == "amanita_vaginata" and d.metadata["section"] == "symptoms"]


def test_catalog_fingerprint_changes_with_content():
    a, b = tiny_catalog(), tiny_catalog()
    assert catalog_fingerprint(a) == catalog_fingerprint(b)
    b.profiles["amanita_vaginata"] = b.profiles["amanita_vaginata"].model_copy(update={"habitat": "meadows"})
    assert catalog_fingerprint(a) != catalog_fingerprint(b)
