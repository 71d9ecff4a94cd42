"""Turn guide files (.txt, .md, .html, .pdf) and the species catalog into LangChain Documents.

Every guide Document carries metadata {source, title, kind: "guide", path}; its page_content is
the text the chunker splits and the text that chunk offsets (start/end) refer to.
A file that cannot be read is logged, listed in `LoadResult.skipped` and left out: one broken
file never stops an ingest.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from langchain_core.documents import Document

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
# Files in a guides folder that describe the folder rather than being a guide.
NOT_GUIDES = {"sources.md", "readme.md", "readme.txt", "license.txt", "licence.txt"}
# A guide with less text than this is treated as empty (e.g. an image-only PDF).
MIN_TEXT_CHARS = 20


@dataclass
class SkippedFile:
    path: str
    reason: str


@dataclass
class LoadResult:
    documents: list[Document] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # every guide file that was read successfully

    def extend(self, other: LoadResult) -> None:
        self.documents.extend(other.documents)
        self.skipped.extend(other.skipped)
        self.files.extend(other.files)


class UnreadableFile(ValueError):
    """The file exists but yields no usable text; the message says why."""


# --- Project Gutenberg ---------------------------------------------------------------------
_PG_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG[^\n]*$", re.I | re.M)
_PG_END = re.compile(
    r"^(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG[^\n]*|End of (the )?Project Gutenberg[^\n]*)$", re.I | re.M
)
# The volunteer credit paragraph at the head of a PG body ("Produced by ... pgdp.net").
_PG_CREDITS = re.compile(r"\A\s*(Produced by|E-text prepared by)\b.*?\n\s*\n", re.I | re.S)
# "Note: Project Gutenberg also has an HTML version of this file ..." (a pointer, not the book).
_PG_NOTE = re.compile(r"\A\s*Note:\s+Project Gutenberg\b.*?\n\s*\n", re.I | re.S)


def strip_gutenberg(text: str) -> str:
    """Keep only the book: drop the PG licence header/footer and the producers' credit lines."""
    start = _PG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _PG_END.search(text)
    if end:
        text = text[: end.start()]
    text = _PG_CREDITS.sub("", text, count=1)
    text = _PG_NOTE.sub("", text, count=1)
    return text.strip("\n")


# --- titles ----------------------------------------------------------------------------------
def read_sources_titles(folder: Path) -> dict[str, str]:
    """File name -> title from the Markdown table in `SOURCES.md` (the guides folder's catalogue).

    Rows look like: | `atkinson_1903_....pg26492.{full,body}.txt` | Studies of American Fungi ... | author | ...
    """
    sources = folder / "SOURCES.md"
    if not sources.is_file():
        return {}
    titles: dict[str, str] = {}
    for line in sources.read_text(encoding="utf-8", errors="replace").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        pattern, title = cells[0].strip("`"), cells[1]
        for name in _expand_braces(pattern):
            titles[name] = title
    return titles


def _expand_braces(pattern: str) -> list[str]:
    match = re.search(r"\{([^}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [name for option in match.group(1).split(",") for name in _expand_braces(head + option + tail)]


def _title_from_text(text: str, fallback: str) -> str:
    for line in text.splitlines()[:80]:
        line = line.strip().strip("#=_*").strip()
        # The first line that reads like a title: some letters, not a transcriber's or credit note.
        if len(line) >= 8 and re.search(r"[A-Za-z]{4}", line) and not re.match(
            r"(produced by|e-text|transcriber|note:|\[|\(http)", line, re.I
        ):
            return line[:200]
    return fallback


# --- per-format readers ----------------------------------------------------------------------
def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise UnreadableFile("binary content in a text file")
    return raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def _read_html(path: Path) -> tuple[str, str | None]:
    from bs4 import BeautifulSoup

    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise UnreadableFile("binary content in an HTML file")
    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    if soup.title:
        soup.title.decompose()
    # Headings become Markdown headings, so the chunker can split at them.
    for level in range(1, 7):
        for tag in soup.find_all(f"h{level}"):
            tag.replace_with(f"\n\n{'#' * level} {tag.get_text(' ', strip=True)}\n\n")
    # Block elements become paragraph breaks, so headings stay on lines of their own for the chunker.
    text = soup.get_text("\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip(), title or None


def _read_pdf(path: Path) -> tuple[str, str | None]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except Exception as exc:  # pypdf raises many types for damaged files
        raise UnreadableFile(f"damaged PDF ({type(exc).__name__}: {exc})") from exc
    return "\n\n".join(p.strip() for p in pages), (str(meta_title) if meta_title else None)


def load_file(path: Path | str, *, title: str | None = None) -> Document:
    """One guide file -> one Document. Raises UnreadableFile (or OSError) when it cannot be used."""
    path = Path(path)
    suffix = path.suffix.lower()
    found_title: str | None = None
    if suffix in (".txt", ".md", ".markdown"):
        text = _read_text(path)
    elif suffix in (".html", ".htm"):
        text, found_title = _read_html(path)
    elif suffix == ".pdf":
        text, found_title = _read_pdf(path)
    else:
        raise UnreadableFile(f"unsupported file type {suffix!r}")
    text = strip_gutenberg(text)
    if len(text.strip()) < MIN_TEXT_CHARS:
        raise UnreadableFile("no readable text")
    title = title or found_title or _title_from_text(text, fallback=path.stem)
    return Document(
        page_content=text,
        metadata={"source": path.name, "title": title, "kind": "guide", "path": str(path)},
    )


def guide_files(folder: Path) -> list[Path]:
    """Guide files under `folder` (recursive, sorted). `x.body.txt` wins over `x.full.txt`."""
    files = [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES and p.name.lower() not in NOT_GUIDES
        and not p.name.startswith(".")
    ]
    names = {p.name for p in files}
    return [p for p in files if not (p.name.endswith(".full.txt") and p.name[:-9] + ".body.txt" in names)]


def load_paths(paths: Iterable[Path | str]) -> LoadResult:
    """Load files and folders; unreadable files are skipped with a warning, never raised."""
    result = LoadResult()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            titles = read_sources_titles(path)
            for file in guide_files(path):
                result.extend(_load_one(file, titles.get(file.name)))
        elif path.is_file():
            result.extend(_load_one(path, read_sources_titles(path.parent).get(path.name)))
        else:
            log.warning("ingest: source %s does not exist; skipped", path)
            result.skipped.append(SkippedFile(str(path), "does not exist"))
    return result


def _load_one(path: Path, title: str | None) -> LoadResult:
    try:
        doc = load_file(path, title=title)
    except (UnreadableFile, OSError, UnicodeError, ValueError) as exc:
        log.warning("ingest: skipped %s: %s", path, exc)
        return LoadResult(skipped=[SkippedFile(str(path), str(exc))])
    return LoadResult(documents=[doc], files=[path])


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the species catalog ---------------------------------------------------------------------
CATALOG_SECTIONS = ("toxicity", "symptoms", "features", "lookalikes", "habitat")


def catalog_documents(catalog) -> list[Document]:
    """One Document per section of every species profile (kind "catalog", species = label).

    The text is written out in sentences so that it embeds well next to guide prose, and every
    section starts with the species' name so a chunk is self-explanatory when retrieved alone.
    """
    docs = []
    for label in catalog.labels:
        profile = catalog.get(label)
        for section, text in _profile_sections(profile).items():
            if not text:
                continue
            docs.append(
                Document(
                    page_content=text,
                    metadata={
                        "source": f"catalog/{label}.yaml",
                        "title": f"Species catalog: {profile.display_name}",
                        "kind": "catalog",
                        "species": label,
                        "species_name": profile.scientific_name,
                        "section": section,
                        "edibility": profile.edibility,
                    },
                )
            )
    return docs


def _profile_sections(p) -> dict[str, str]:
    name = p.display_name
    verdict = p.edibility.replace("_", " ").upper()
    toxicity = [f"{name}: edibility {verdict} (current reference).", p.edibility_note]
    if p.toxins:
        toxicity.append(f"Toxins: {', '.join(p.toxins)}.")
    if p.syndrome:
        toxicity.append(f"Syndrome: {p.syndrome}.")
    if p.onset:
        toxicity.append(f"Onset: {p.onset}.")
    if p.organs_affected:
        toxicity.append(f"Organs affected: {', '.join(p.organs_affected)}.")
    if p.historical_note:
        toxicity.append(f"Old guides: {p.historical_note}")
    names = [n for n in [*p.synonyms, *p.common_names] if n]
    if names:
        toxicity.append(f"Also known as: {', '.join(names)}.")

    symptoms = f"{name} poisoning symptoms: {p.symptoms}" if p.symptoms else ""

    f = p.features
    feature_parts = [f"Cap: {f.cap}.", f"Gills or pores: {f.gills_or_pores}.", f"Stem: {f.stem}."]
    for label, value in (
        ("Ring", f.ring),
        ("Volva", f.volva),
        ("Spore print", f.spore_print),
        ("Smell", f.smell),
        ("Flesh", f.flesh),
    ):
        if value:
            feature_parts.append(f"{label}: {value}.")
    features = f"{name} identification features. " + " ".join(feature_parts)

    lookalikes = ""
    if p.lookalikes:
        lines = [
            f"- {la.species} ({la.edibility.replace('_', ' ')}): {la.how_to_tell}" for la in p.lookalikes
        ]
        lookalikes = f"{name} ({verdict}) lookalikes and how to tell them apart:\n" + "\n".join(lines)

    habitat = f"{name} habitat: {p.habitat}. Season: {p.season}."
    if p.regions:
        habitat += f" Regions: {', '.join(p.regions)}."
    if p.family:
        habitat += f" Family: {p.family}."
    return {
        "toxicity": " ".join(toxicity),
        "symptoms": symptoms,
        "features": features,
        "lookalikes": lookalikes,
        "habitat": habitat,
    }


def catalog_fingerprint(catalog) -> str:
    """A hash of the catalog's content: any edit to any profile changes it."""
    digest = hashlib.sha256()
    for label in catalog.labels:
        digest.update(label.encode())
        digest.update(catalog.get(label).model_dump_json().encode())
    return digest.hexdigest()
