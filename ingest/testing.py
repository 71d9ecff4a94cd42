"""Small, self-made fixtures for tests of the ingest and answering sides (no real data).

- `tiny_catalog()`: a 4-species Catalog with the 19th-century synonyms the guides use.
- `write_tiny_guides(folder)`: a few short guide files in the formats the loaders read, with
  species headings in the three styles of the real guides.
- `minimal_pdf(text)`: bytes of a valid one-page PDF holding `text` (no PDF library needed).
"""

from __future__ import annotations

from pathlib import Path

from knowledge_base.catalog import Catalog, SpeciesProfile


def _profile(label, name, edibility, synonyms=(), common=(), lookalikes=(), **extra) -> SpeciesProfile:
    return SpeciesProfile(
        label=label,
        scientific_name=name,
        synonyms=list(synonyms),
        common_names=list(common),
        edibility=edibility,
        edibility_note=extra.pop("note", f"{name} is {edibility.replace('_', ' ')} by current references."),
        features=extra.pop(
            "features",
            {"cap": "a cap", "gills_or_pores": "white gills", "stem": "a stem"},
        ),
        habitat=extra.pop("habitat", "woods"),
        season=extra.pop("season", "autumn"),
        lookalikes=list(lookalikes),
        references=[{"title": "test reference"}],
        **extra,
    )


def tiny_catalog() -> Catalog:
    profiles = [
        _profile(
            "amanita_muscaria", "Amanita muscaria", "poisonous", synonyms=["Agaricus muscarius"],
            common=["fly agaric"], toxins=["ibotenic acid", "muscimol"],
            symptoms="confusion, sweating, vomiting within two hours",
            features={"cap": "bright red with white warts", "gills_or_pores": "white, free", "stem": "white",
                      "ring": "white skirt", "volva": "rings of warts at the bulb"},
            lookalikes=[{"species": "amanita_caesarea", "edibility": "edible",
                         "how_to_tell": "orange cap without white warts, yellow gills"}],
        ),
        _profile("amanita_vaginata", "Amanita vaginata", "edible_with_caution",
                 synonyms=["Amanitopsis vaginata"], common=["grisette"]),
        _profile("coprinellus_micaceus", "Coprinellus micaceus", "edible_with_caution",
                 synonyms=["Coprinus micaceus"], common=["glistening inkcap"]),
        _profile("armillaria_mellea", "Armillaria mellea", "edible_with_caution",
                 synonyms=["Agaricus melleus"], common=["honey fungus"]),
    ]
    return Catalog({p.label: p for p in profiles})


ATKINSON_STYLE = """Produced by Somebody and the Online Distributed Proofreading Team

*** START OF THE PROJECT GUTENBERG EBOOK TINY GUIDE ***

A TINY GUIDE TO FUNGI

CHAPTER I.

THE WHITE-SPORED AGARICS.

Many agarics have white spores; this chapter describes a few of them.

=Amanita muscaria= Linn. =Poisonous.=--The fly agaric has a bright red cap
dotted with white warts. It grows under birch and pine in autumn.

Its gills are white and free from the stem.

=Amanitopsis vaginata= (Bull.) Roz. =Edible.=--The sheathed amanitopsis has a
grey striate cap, no ring, and a loose sack-like volva at the base.

=Coprinus micaceus= (Bull.) Fr. =Edible.=--The glistening coprinus grows in
dense tufts on old stumps; the cap is sprinkled with shining particles.

=Boletus imaginarius= Fr.--A bolete the catalog does not know.

CHAPTER II.

COOKING.

Mushrooms should be cooked soon after gathering.

*** END OF THE PROJECT GUTENBERG EBOOK TINY GUIDE ***
This eBook is for the use of anyone anywhere. Project Gutenberg licence text.
"""

PALMER_STYLE = """MUSHROOMS OF NOWHERE.

GENERAL DIRECTIONS.

No general test can be given by which a poisonous mushroom may be known.

AGARICUS MELLEUS, OR HONEY MUSHROOM.

=DESCRIPTION.= PILEUS. Honey-coloured, scaly; grows in clusters on stumps.

BOLETI.

=DESCRIPTION. No. 1.= BOLETUS BOVINUS. Pileus flat, smooth, viscid.

No. 2. BOLETUS EDULIS. Pileus cushion-like, brown.
"""

MARKDOWN_GUIDE = """# Notes on the fly agaric

=Amanita muscaria= Linn.--Red cap, white warts, white gills; poisonous.
"""

HTML_GUIDE = """<html><head><title>Grisette notes</title><script>var x = 1;</script></head>
<body><h1>Grisette</h1><p>=Amanitopsis vaginata= (Bull.) Roz.--A grey cap with a striate margin
and a sack-like volva.</p></body></html>
"""


def write_tiny_guides(folder: Path | str) -> Path:
    """Write the tiny guides (txt in two styles, md, html, pdf) into `folder`; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "atkinson_style.body.txt").write_text(ATKINSON_STYLE, encoding="utf-8")
    (folder / "palmer_style.txt").write_text(PALMER_STYLE, encoding="utf-8")
    (folder / "notes.md").write_text(MARKDOWN_GUIDE, encoding="utf-8")
    (folder / "grisette.html").write_text(HTML_GUIDE, encoding="utf-8")
    (folder / "inkcap.pdf").write_bytes(
        minimal_pdf("Coprinus micaceus grows in tufts on stumps; glistening particles on the cap.")
    )
    return folder


def minimal_pdf(text: str) -> bytes:
    """A valid one-page PDF with `text` in Helvetica (ASCII only)."""
    safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 12 Tf 40 750 Td ({safe}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def crash_embedding_on_batch(monkeypatch, batch: int = 3, batch_size: int = 4) -> dict[str, int]:
    """Make the embedder raise on its `batch`-th call, after earlier batches were written.

    Small batches make sure a half-built collection really exists when the crash comes.
    Returns the call counter so a test can check the crash happened where intended.
    """
    from ingest import pipeline
    from knowledge_base.embeddings import MiniLMEmbeddings

    monkeypatch.setattr(pipeline, "EMBED_BATCH", batch_size)
    calls = {"n": 0}
    real = MiniLMEmbeddings.embed_documents

    def flaky(self, texts):
        calls["n"] += 1
        if calls["n"] == batch:
            raise RuntimeError("embedding backend crashed")
        return real(self, texts)

    monkeypatch.setattr(MiniLMEmbeddings, "embed_documents", flaky)
    return calls
