"""Hybrid retrieval over the serving Chroma collection: vector similarity + BM25, fused by RRF.

Vector search finds paraphrases ("what does it look like" ~ "the cap is olive-green"); BM25 makes
Latin names and rare words ("phalloides", "volva") match exactly, which embeddings blur. The two
rankings are merged with reciprocal rank fusion, so neither score scale has to be calibrated
against the other. A species filter (chunk metadata `species`) narrows both searches.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from rank_bm25 import BM25Okapi

log = logging.getLogger(__name__)
LEXICAL_CACHE_FORMAT = 1
_WORD = re.compile(r"[a-z0-9]+")
_BM25_STOPWORDS = frozenset("""
a an the is it its this that these those of in on at to for from with by and or but not no as be are was
were been i we you he she they my our your me us what which who how why when where do does did can could
should would will may might have has had there their than then so if about into also very more most such
""".split())


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stopwords; Latin names stay whole words, so they match exactly."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _BM25_STOPWORDS]
    # Fold the commonest plural so "mushrooms" finds "mushroom" (Latin epithets are folded on both sides alike).
    return [w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith("ss") else w for w in words]


@dataclass
class Passage:
    """One retrieved chunk with its fused score and, where known, its cosine similarity to the query."""

    text: str
    metadata: dict[str, Any]
    score: float  # reciprocal-rank-fusion score (higher is better)
    similarity: float | None = None  # cosine similarity of the vector search, if the chunk came from it
    bm25: float | None = None
    ranks: dict[str, int] = field(default_factory=dict)  # "vector"/"bm25" -> 1-based rank

    @property
    def key(self) -> str:
        return str(self.metadata.get("chunk_id") or f"{self.metadata.get('source')}:{self.metadata.get('start')}")

    @property
    def species(self) -> str:
        return str(self.metadata.get("species") or "")

    @property
    def kind(self) -> str:
        return str(self.metadata.get("kind") or "")

    @property
    def source(self) -> str:
        return str(self.metadata.get("source") or "")

    @property
    def title(self) -> str:
        return str(self.metadata.get("title") or self.source)


def _distance_to_cosine(space: str):
    # all-MiniLM-L6-v2 embeddings are unit-normalised, so each metric maps exactly to cosine.
    if space == "l2":
        return lambda d: 1.0 - d / 2.0  # Chroma reports squared L2: |a-b|^2 = 2 - 2cos
    return lambda d: 1.0 - d  # cosine distance, and ip distance (1 - dot)


def _collection_space(store) -> str:
    try:
        config = store._collection.configuration or {}
        for key in ("hnsw", "spann"):
            space = (config.get(key) or {}).get("space")
            if space:
                return str(space)
    except Exception:  # an older/remote client without configuration: fall back to metadata
        pass
    try:
        return str((store._collection.metadata or {}).get("hnsw:space", "l2"))
    except Exception:
        return "l2"


class HybridRetriever:
    """Search one LangChain Chroma store (vectors) plus an in-memory BM25 over the same chunks."""

    def __init__(self, store=None, documents: list[Document] | None = None, *, rrf_k: int = 60,
                 candidates: int = 20, cache_file: Path | None = None):
        """`cache_file`: where the chunks and their BM25 tokens of this (immutable) collection version are
        kept between processes, so a cold start reads one file instead of the whole collection."""
        self.store = store
        self.rrf_k = rrf_k
        self.candidates = candidates
        tokens: list[list[str]] | None = None
        if documents is None and store is not None:
            cached = read_lexical_cache(cache_file) if cache_file else None
            if cached is not None:
                documents, tokens = cached
            else:
                documents = self.read_all(store)
                if cache_file:
                    tokens = [tokenize(d.page_content) for d in documents]
                    write_lexical_cache(cache_file, documents, tokens)
        self.documents: list[Document] = list(documents or [])
        self._by_species: dict[str, list[int]] = {}
        for i, doc in enumerate(self.documents):
            self._by_species.setdefault(str(doc.metadata.get("species") or ""), []).append(i)
        if tokens is None:
            tokens = [tokenize(d.page_content) for d in self.documents]
        self._bm25 = BM25Okapi([t or ["_"] for t in tokens]) if self.documents else None
        self._to_cosine = _distance_to_cosine(_collection_space(store)) if store is not None else None

    @staticmethod
    def read_all(store) -> list[Document]:
        """Every chunk of the collection (texts + metadata) for the lexical index."""
        data = store.get(include=["documents", "metadatas"])
        return [Document(page_content=text or "", metadata=dict(meta or {}))
                for text, meta in zip(data.get("documents") or [], data.get("metadatas") or [], strict=False)]

    def __len__(self) -> int:
        return len(self.documents)

    # --- the two searches --------------------------------------------------------------------
    def _embed(self, query: str) -> list[float] | None:
        if self.store is None or not self.documents:
            return None
        return self.store.embeddings.embed_query(query)

    def _vector(self, embedding: list[float] | None, n: int, species: str | None) -> list[tuple[Document, float]]:
        if embedding is None:
            return []
        where = {"species": species} if species else None
        # langchain_chroma returns (document, distance) here despite the method's name.
        pairs = self.store.similarity_search_by_vector_with_relevance_scores(embedding, k=n, filter=where)
        return [(doc, self._to_cosine(dist)) for doc, dist in pairs]

    def _lexical(self, query: str, n: int, species: str | None) -> list[tuple[Document, float]]:
        if self._bm25 is None:
            return []
        tokens = tokenize(query)
        if not tokens:
            return []
        scores = self._bm25.get_scores(tokens)
        pool = self._by_species.get(species, []) if species else range(len(self.documents))
        best = sorted(pool, key=lambda i: scores[i], reverse=True)[:n]
        return [(self.documents[i], float(scores[i])) for i in best if scores[i] > 0]

    # --- fused search ----------------------------------------------------------------------
    def search(self, query: str, *, species: str | None = None, k: int = 5,
               names: list[str] | tuple[str, ...] = ()) -> list[Passage]:
        """Top-k passages for a query, restricted to one species' chunks where `species` is given.

        When the species has fewer than k chunks, passages of the whole collection that mention one
        of its `names` (Latin name, synonyms) top the list up: old guides often discuss a species
        under another heading.
        """
        embedding = self._embed(query)  # once: the top-up below reuses it
        passages = self._fuse(query, species, k, embedding)
        if species and len(passages) < k and names:
            lowered = [n.lower() for n in names if n]
            seen = {p.key for p in passages}
            for p in self._fuse(f"{query} {' '.join(names)}", None, self.candidates, embedding):
                text = p.text.lower()
                if p.key not in seen and any(n in text for n in lowered):
                    passages.append(p)
                    seen.add(p.key)
                if len(passages) >= k:
                    break
        return passages[:k]

    def _fuse(self, query: str, species: str | None, k: int, embedding: list[float] | None) -> list[Passage]:
        n = max(self.candidates, k)
        fused: dict[str, Passage] = {}
        for source, results in (("vector", self._vector(embedding, n, species)),
                                ("bm25", self._lexical(query, n, species))):
            for rank, (doc, raw) in enumerate(results, start=1):
                probe = Passage(doc.page_content, dict(doc.metadata), 0.0)
                p = fused.setdefault(probe.key, probe)
                p.score += 1.0 / (self.rrf_k + rank)
                p.ranks[source] = rank
                if source == "vector":
                    p.similarity = raw
                else:
                    p.bm25 = raw
        return sorted(fused.values(), key=lambda p: p.score, reverse=True)[:k]

    def best_similarity(self, query: str) -> float:
        """Cosine similarity of the nearest chunk in the whole collection (0 when empty)."""
        hits = self._vector(self._embed(query), 1, None)
        return hits[0][1] if hits else 0.0


# --- the lexical index on disk ----------------------------------------------------------------------
def read_lexical_cache(path: Path) -> tuple[list[Document], list[list[str]]] | None:
    """(documents, BM25 tokens) from a cache file, or None when it is absent, unreadable or stale."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != LEXICAL_CACHE_FORMAT:
            return None
        rows = data["rows"]
        return ([Document(page_content=text, metadata=meta) for text, meta, _ in rows],
                [list(tokens) for _, _, tokens in rows])
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged file is rebuilt from the collection
        log.warning("knowledge base: ignoring the lexical cache %s (%s)", path, exc)
        return None


def write_lexical_cache(path: Path, documents: list[Document], tokens: list[list[str]]) -> None:
    """Atomic write; siblings for other versions of the same index are removed. Failing is harmless."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"format": LEXICAL_CACHE_FORMAT,
                       "rows": [[d.page_content, d.metadata, t] for d, t in zip(documents, tokens, strict=True)]},
                      fh, ensure_ascii=False)
        os.replace(tmp, path)
        prefix = path.name.split("--", 1)[0]
        for old in path.parent.glob(f"{prefix}--*.json"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as exc:
        log.info("knowledge base: lexical cache not written to %s (%s)", path, exc)
