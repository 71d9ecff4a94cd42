"""Species-aware chunking of the old field guides.

1. Find headings in a guide's text:
   - bold species headings, `=Amanita muscaria= Linn. =Poisonous.=` (Atkinson), also indented,
     after `FIG. 3.`, abbreviated (`=A. vernalis=`) or with a sub-genus (`=Ag. (Armillaria) melleus=`);
   - all-caps species headings, `COPRINUS COMATUS, OR SHAGGY-MANED MUSHROOM.` (Palmer), when the
     first word is a known genus;
   - numbered species entries, `No. 2. BOLETUS EDULIS. Pileus ...` (Palmer's Boleti plate);
   - Markdown headings (`# ...`; HTML <h1>-<h6> arrive as such), species ones when they name a
     catalog species;
   - structural headings (`CHAPTER V.`, `THE WHITE-SPORED AGARICS.`): all-caps lines of their own at
     column 0; they end a species section, so chapter prose is not tagged with the last species.
2. Map each printed name to a catalog label with `Catalog.resolve` (label, Latin name, synonym),
   also trying the sub-genus and Latin gender endings of the epithet (melleus -> mellea).
3. Split each section with a recursive character splitter (paragraph, line, sentence, word) that
   keeps exact character offsets: chunk.page_content == source_text[start:end].
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from langchain_core.documents import Document

# Bump when the chunking output changes for the same input: it is part of the ingest manifest,
# so a new chunker forces a rebuild even when no file changed.
CHUNKER_VERSION = "2"
CHUNK_SIZE = 1000
CHUNK_OVERLAP = 150
# Pieces of text this short carry no retrievable meaning (a lone "FOOTNOTES:", a page number).
MIN_CHUNK_CHARS = 25
FRONT_MATTER = "front matter"

# Genera of the 19th-century guides that may open an all-caps heading; the catalog's genera and
# the genera of the guide's own bold headings are added at run time.
BASE_GENERA = frozenset(
    """agaricus amanita amanitopsis armillaria boletus cantharellus clitocybe clitopilus collybia coprinus
    cortinarius entoloma fistulina gyromitra helvella hydnum hygrophorus hypholoma lactarius lepiota
    lycoperdon marasmius morchella panaeolus pholiota pleurotus pluteus polyporus psalliota russula
    stropharia tricholoma""".split()
)

_BOLD_HEADING = re.compile(
    r"^[ \t]*(?:FIG\.\s*\d+\.(?:--)?\s*)?(?:Sectional view of\s+)?=(?P<bold>[^=\n]{3,80})=(?P<rest>[^\n]*)$", re.M
)
_BINOMIAL = re.compile(
    r"^(?P<genus>[A-Z][a-z]*\.?)\s+(?:\((?P<sub>[A-Z][a-z]+)\)\s+)?(?P<epithet>[a-z][a-z-]{2,})\.?$"
)
_GENUS_ONLY = re.compile(r"^(?P<genus>[A-Z][a-z]+)$")
_ITALIC_EPITHET = re.compile(r"^\s*_(?P<epithet>[a-z][a-z-]{2,})_")
_CAPS_LINE = re.compile(r"^(?P<line>[A-Z][A-Z0-9 .,;:'()&-]{4,100})$", re.M)
_CAPS_BINOMIAL = re.compile(
    r"^(?P<genus>[A-Z]{3,})\s+(?:\((?P<sub>[A-Z]{3,})\)\s+)?(?P<epithet>[A-Z][A-Z-]{2,})"
    r"(?:\s+ET\s+[A-Z]+)?(?:,\s*OR\s+.*)?\.?$"
)
_MARKDOWN_HEADING = re.compile(r"^#{1,6}[ \t]+(?P<title>[^\n]+?)[ \t#]*$", re.M)
_ANY_BINOMIAL = re.compile(r"\b(?P<genus>[A-Z][a-z]{2,})\s+(?P<epithet>[a-z][a-z-]{2,})\b")
_NUMBERED = re.compile(
    r"^(?:=DESCRIPTION\.\s*)?No\.\s*\d+\.=?\s+(?P<genus>[A-Z]{3,})\s+(?P<epithet>[A-Z][A-Z-]{2,})\.", re.M
)


@dataclass
class Heading:
    start: int  # offset of the heading's line in the source text
    section: str  # readable heading text (markup removed), used as chunk metadata
    species_name: str  # the name as printed ("Amanitopsis vaginata"), "" for structural headings
    species: str  # catalog label, "" when the name is not in the catalog (or structural)


@dataclass
class SpeciesName:
    genus: str
    epithet: str
    subgenus: str | None = None

    @property
    def printed(self) -> str:
        sub = f" ({self.subgenus})" if self.subgenus else ""
        return f"{self.genus}{sub} {self.epithet}"


# --- name resolution -------------------------------------------------------------------------
_GENDER_SWAPS = (("us", ("a", "um")), ("a", ("us", "um")), ("um", ("us", "a")), ("is", ("e",)), ("e", ("is",)),
                 ("er", ("ris", "ra")))


def epithet_variants(epithet: str) -> list[str]:
    """The epithet, without hyphens, and with the other Latin gender endings (genus transfers)."""
    base = epithet.lower().replace("-", "")
    variants = [base]
    for ending, others in _GENDER_SWAPS:
        if base.endswith(ending):
            stem = base[: -len(ending)]
            variants.extend(stem + other for other in others)
    return list(dict.fromkeys(variants))


def resolve_species(name: SpeciesName, catalog) -> str:
    """Catalog label for a printed binomial, or "" when the catalog does not know it.

    Only exact catalog names are matched (never a fuzzy guess: a wrong tag would attach one
    species' text to another). Tries the name as printed, then the sub-genus promoted to genus
    (`Ag. (Armillaria) melleus` -> Armillaria melleus), each with the epithet's gender variants.
    """
    if catalog is None:
        return ""
    genera = [name.genus]
    if name.subgenus:
        genera.insert(0, name.subgenus)
    for genus in genera:
        for epithet in epithet_variants(name.epithet):
            label = catalog.resolve(f"{genus} {epithet}")
            if label:
                return label
    return ""


def _expand_genus(genus: str, known: Sequence[str]) -> str:
    """`A.` / `Ag.` -> the most recent full genus with that initial (`Ag.` is always Agaricus)."""
    if not genus.endswith(".") and len(genus) > 2:
        return genus
    abbrev = genus.rstrip(".")
    if abbrev.lower() == "ag":
        return "Agaricus"
    for full in reversed(known):
        if full.lower().startswith(abbrev.lower()):
            return full
    return abbrev


def _clean_heading(line: str) -> str:
    text = line.strip()
    text = re.sub(r"^FIG\.\s*\d+\.(--)?\s*", "", text)
    text = text.split("--", 1)[0]  # Atkinson: "=Name= Auth. =Edible.=--This species ..."
    text = text.replace("=", "").replace("_", "")
    return " ".join(text.split())[:150]


# --- heading detection -----------------------------------------------------------------------
def find_headings(text: str, catalog=None) -> list[Heading]:
    """All species and structural headings of a guide text, in order of position."""
    headings: dict[int, Heading] = {}
    seen_genera: list[str] = []

    for match in _BOLD_HEADING.finditer(text):
        bold, rest = match.group("bold").strip(), match.group("rest")
        parsed = _BINOMIAL.match(bold)
        if parsed:
            genus, sub, epithet = parsed.group("genus"), parsed.group("sub"), parsed.group("epithet")
        else:
            # `=Gyromitra= _esculenta_ Fries.`: genus in bold, epithet in italics after it.
            genus_only, italic = _GENUS_ONLY.match(bold), _ITALIC_EPITHET.match(rest)
            if not (genus_only and italic):
                continue
            genus, sub, epithet = genus_only.group("genus"), None, italic.group("epithet")
        genus = _expand_genus(genus, seen_genera)
        if genus.endswith(".") or len(genus) < 3:
            continue  # an abbreviation with no earlier genus to expand it
        if genus not in seen_genera:
            seen_genera.append(genus)
        name = SpeciesName(genus, epithet, sub)
        start = text.rfind("\n", 0, match.start()) + 1
        headings[start] = Heading(start, _clean_heading(match.group(0)), name.printed, resolve_species(name, catalog))

    known_genera = set(BASE_GENERA) | {g.lower() for g in seen_genera}
    if catalog is not None:
        known_genera |= {label.split("_", 1)[0] for label in catalog.labels}

    for match in _NUMBERED.finditer(text):
        genus, epithet = match.group("genus").capitalize(), match.group("epithet").lower()
        if genus.lower() in known_genera and match.start() not in headings:
            name = SpeciesName(genus, epithet)
            headings[match.start()] = Heading(
                match.start(), _clean_heading(match.group(0)), name.printed, resolve_species(name, catalog)
            )

    # Markdown (and HTML, whose <h1>-<h6> the loader turns into "# ...") headings: a species heading
    # when they name a catalog species, else a structural one.
    for match in _MARKDOWN_HEADING.finditer(text):
        title = match.group("title").strip()
        species_name, label = "", ""
        for found in _ANY_BINOMIAL.finditer(title.replace("_", "").replace("=", "")):
            name = SpeciesName(found.group("genus"), found.group("epithet"))
            label = resolve_species(name, catalog)
            if label:
                species_name = name.printed
                break
        headings.setdefault(match.start(), Heading(match.start(), _clean_heading(title), species_name, label))

    for match in _CAPS_LINE.finditer(text):
        start, end = match.start(), match.end()
        if start in headings or not _stands_alone(text, start, end):
            continue
        line = match.group("line").strip()
        caps = _CAPS_BINOMIAL.match(line)
        if caps and caps.group("genus").lower() in known_genera:
            name = SpeciesName(caps.group("genus").capitalize(), caps.group("epithet").lower(),
                               caps.group("sub").capitalize() if caps.group("sub") else None)
            headings[start] = Heading(start, _clean_heading(line), name.printed, resolve_species(name, catalog))
        elif len(re.sub(r"[^A-Z]", "", line)) >= 5:
            headings[start] = Heading(start, _clean_heading(line), "", "")
    return [headings[k] for k in sorted(headings)]


def _stands_alone(text: str, start: int, end: int) -> bool:
    """A heading line has a blank line (or the text edge) before it and is not mid-paragraph."""
    before = text[max(0, start - 2) : start]
    after = text[end : end + 2]
    blank_before = start == 0 or before == "\n\n" or start == 1
    blank_after = end >= len(text) - 1 or after.startswith("\n\n") or after == "\n"
    return blank_before and blank_after


# --- offset-keeping recursive splitter -------------------------------------------------------
SEPARATORS = ("\n\n", "\n", ". ", " ")


def _pieces(text: str, start: int, end: int, size: int, separators: Sequence[str]) -> list[tuple[int, int]]:
    if end - start <= size:
        return [(start, end)]
    if not separators:
        return [(s, min(s + size, end)) for s in range(start, end, size)]
    sep, rest = separators[0], separators[1:]
    cuts = [start]
    pos = text.find(sep, start, end)
    while pos != -1:
        cut = pos + len(sep)  # the separator stays with the piece before it
        if cut < end:
            cuts.append(cut)
        pos = text.find(sep, cut, end)
    if len(cuts) == 1:
        return _pieces(text, start, end, size, rest)
    cuts.append(end)
    spans: list[tuple[int, int]] = []
    for s, e in zip(cuts, cuts[1:], strict=False):
        spans.extend(_pieces(text, s, e, size, rest) if e - s > size else [(s, e)])
    return spans


def split_spans(text: str, start: int = 0, end: int | None = None, *, chunk_size: int = CHUNK_SIZE,
                chunk_overlap: int = CHUNK_OVERLAP) -> list[tuple[int, int]]:
    """(start, end) windows of at most `chunk_size` chars over text[start:end], overlapping by up to
    `chunk_overlap` chars, cut at paragraph, line, sentence or word boundaries when possible.
    Windows are trimmed of surrounding whitespace; whitespace-only windows are dropped."""
    end = len(text) if end is None else end
    pieces = _pieces(text, start, end, chunk_size, SEPARATORS)
    windows: list[tuple[int, int]] = []
    i = 0
    while i < len(pieces):
        j = i
        while j + 1 < len(pieces) and pieces[j + 1][1] - pieces[i][0] <= chunk_size:
            j += 1
        windows.append((pieces[i][0], pieces[j][1]))
        if j + 1 >= len(pieces):
            break
        # Next window starts at the earliest piece that keeps the overlap within chunk_overlap.
        nxt = j + 1
        while nxt - 1 > i and pieces[j][1] - pieces[nxt - 1][0] <= chunk_overlap:
            nxt -= 1
        i = nxt
    trimmed = []
    for s, e in windows:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            trimmed.append((s, e))
    return trimmed


# --- documents -> chunks ---------------------------------------------------------------------
def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_chunk_id(source: str, section: str, start: int, end: int, digest: str) -> str:
    key = "\x1f".join((source, section, str(start), str(end), digest))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def _sections(doc: Document, catalog) -> list[tuple[int, int, Heading]]:
    text = doc.page_content
    meta = doc.metadata
    if meta.get("kind") == "catalog":
        # Catalog documents are one section each, already tagged by the loader.
        head = Heading(0, meta.get("section", ""), meta.get("species_name", ""), meta.get("species", ""))
        return [(0, len(text), head)]
    headings = find_headings(text, catalog)
    bounds: list[tuple[int, int, Heading]] = []
    first = headings[0].start if headings else len(text)
    if first > 0:
        bounds.append((0, first, Heading(0, FRONT_MATTER, "", "")))
    for h, nxt in zip(headings, [*headings[1:], None], strict=False):
        bounds.append((h.start, nxt.start if nxt else len(text), h))
    return bounds


def chunk_document(doc: Document, catalog=None, *, chunk_size: int = CHUNK_SIZE,
                   chunk_overlap: int = CHUNK_OVERLAP) -> list[Document]:
    """Split one loaded Document into chunk Documents with Chroma-safe metadata (str/int only)."""
    text = doc.page_content
    meta = doc.metadata
    source, title, kind = str(meta.get("source", "")), str(meta.get("title", "")), str(meta.get("kind", "guide"))
    chunks = []
    for sec_start, sec_end, head in _sections(doc, catalog):
        for s, e in split_spans(text, sec_start, sec_end, chunk_size=chunk_size, chunk_overlap=chunk_overlap):
            piece = text[s:e]
            if len(piece.strip()) < MIN_CHUNK_CHARS:
                continue
            digest = content_hash(piece)
            chunks.append(
                Document(
                    page_content=piece,
                    metadata={
                        "source": source,
                        "title": title,
                        "kind": kind,
                        "species": head.species or "",
                        "species_name": head.species_name or "",
                        "section": head.section or "",
                        "start": s,
                        "end": e,
                        "chunk_id": make_chunk_id(source, head.section, s, e, digest),
                        "content_hash": digest,
                    },
                )
            )
    return chunks


def chunk_documents(docs: Iterable[Document], catalog=None, **kwargs) -> list[Document]:
    chunks: list[Document] = []
    seen: set[str] = set()
    for doc in docs:
        for chunk in chunk_document(doc, catalog, **kwargs):
            # Identical source+section+span+text is the same chunk: keep one (chroma ids must be unique).
            if chunk.metadata["chunk_id"] in seen:
                continue
            seen.add(chunk.metadata["chunk_id"])
            chunks.append(chunk)
    return chunks
