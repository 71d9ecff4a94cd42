"""The knowledge base's vector store, as readers see it: versioned Chroma collections behind an alias.

Layout inside Chroma (the same for a local PersistentClient and a remote HttpClient):
- `guides_v<N>`: one complete, checked index per version. Its collection metadata holds
  `version`, `built_at`, `state` ("building" until checked, then "ready"), `chunks`,
  `manifest_key` and `manifest` (JSON: files, hashes, chunk counts).
- `kb_alias`: an empty collection whose *metadata* is the alias record
  {"current": "guides_v3", "previous": "guides_v2", "last_version": 3, "updated_at": ...}.
  Chroma has no native alias; keeping the pointer in Chroma itself means a remote Chroma server
  (CHROMA_URL) carries it too. Switching the alias is one metadata write, so readers see either
  the old or the new version, never a half-built one.

Readers (the answerer, the bot's status, the API's readiness) use `open_serving()`, `serving_info()`
and `all_chunks()`. Only `ingest` writes (ingest.store: the alias switch and the re-ingest lease), on
top of this module. Every collection is opened with our MiniLM embedding function.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from knowledge_base.embeddings import chroma_embedding_function, embeddings_for

ALIAS_COLLECTION = "kb_alias"
COLLECTION_PREFIX = "guides_v"
_VERSION_NAME = re.compile(rf"^{COLLECTION_PREFIX}(\d+)$")
# Chroma's `get` returns at most what fits in memory; page through big collections.
PAGE_SIZE = 1000

_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()


class NoIndexError(RuntimeError):
    """There is no serving knowledge-base version yet; run `python -m ingest run`."""


def _settings(settings=None):
    if settings is None:
        from config import get_settings

        settings = get_settings()
    return settings


def get_client(settings=None):
    """The Chroma client for these settings: HttpClient when CHROMA_URL is set, else a
    PersistentClient at CHROMA_PATH. Cached per target: chromadb refuses two clients on one path
    with different settings in the same process, so every caller should come through here."""
    import chromadb

    settings = _settings(settings)
    chroma_settings = chromadb.Settings(anonymized_telemetry=False, allow_reset=False)
    if settings.chroma_url:
        key = ("http", settings.chroma_url)
    else:
        key = ("path", str(settings.chroma_path))
    with _clients_lock:
        if key not in _clients:
            if key[0] == "http":
                url = urlparse(settings.chroma_url)
                if settings.chroma_token and settings.chroma_token.get_secret_value():
                    chroma_settings = chromadb.Settings(
                        anonymized_telemetry=False, allow_reset=False,
                        chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
                        chroma_client_auth_credentials=settings.chroma_token.get_secret_value())
                _clients[key] = chromadb.HttpClient(
                    host=url.hostname or "localhost",
                    port=url.port or (443 if url.scheme == "https" else 8000),
                    ssl=url.scheme == "https",
                    settings=chroma_settings,
                )
            else:
                settings.chroma_path.mkdir(parents=True, exist_ok=True)
                _clients[key] = chromadb.PersistentClient(path=key[1], settings=chroma_settings)
        return _clients[key]


def describe_target(settings=None) -> str:
    settings = _settings(settings)
    return settings.chroma_url or str(settings.chroma_path)


# --- collections -----------------------------------------------------------------------------
def collection_name(version: int) -> str:
    return f"{COLLECTION_PREFIX}{version}"


def version_of(name: str) -> int | None:
    match = _VERSION_NAME.match(name)
    return int(match.group(1)) if match else None


def get_collection(client, name: str):
    """An existing collection, always with our embedding function (never chroma's default)."""
    return client.get_collection(name, embedding_function=chroma_embedding_function())


def list_versions(client) -> list[str]:
    """Names of all `guides_v<N>` collections, oldest first."""
    names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
    return sorted((n for n in names if version_of(n) is not None), key=version_of)


# --- the alias -------------------------------------------------------------------------------
@dataclass
class Alias:
    current: str = ""
    previous: str = ""
    last_version: int = 0
    updated_at: str = ""

    def to_metadata(self) -> dict[str, Any]:
        # Chroma metadata values must be str/int/float/bool: empty string, never None.
        return {
            "kind": "alias",
            "current": self.current,
            "previous": self.previous,
            "last_version": self.last_version,
            "updated_at": self.updated_at,
        }


def alias_collection(client):
    return client.get_or_create_collection(
        ALIAS_COLLECTION, embedding_function=chroma_embedding_function(), metadata={"kind": "alias"}
    )


def read_alias(client) -> Alias:
    meta = alias_collection(client).metadata or {}
    return Alias(
        current=str(meta.get("current", "") or ""),
        previous=str(meta.get("previous", "") or ""),
        last_version=int(meta.get("last_version", 0) or 0),
        updated_at=str(meta.get("updated_at", "") or ""),
    )


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


# --- what the answerer uses ------------------------------------------------------------------
def serving_collection_name(settings=None) -> str:
    """Name of the collection the alias points at; NoIndexError when there is none."""
    client = get_client(settings)
    alias = read_alias(client)
    if not alias.current or alias.current not in list_versions(client):
        raise NoIndexError(
            f"no knowledge-base index at {describe_target(settings)}: run `python -m ingest run` first"
        )
    return alias.current


def open_serving(settings=None):
    """The serving version as a `langchain_chroma.Chroma` with our MiniLM embeddings.

    Raises NoIndexError when nothing has been ingested yet. The returned store is pinned to the
    version current at call time; call again after a re-ingest to follow the alias.
    """
    from langchain_chroma import Chroma

    name = serving_collection_name(settings)
    client = get_client(settings)
    # Queries are embedded with what this version holds, whatever new builds use (never mixed).
    recorded = (get_collection(client, name).metadata or {}).get("embedding_model")
    return Chroma(client=client, collection_name=name, embedding_function=embeddings_for(recorded))


def lexical_cache_file(settings, store) -> Path:
    """Where the BM25 side of this collection version is cached between processes: under var/cache/lexical
    beside a local Chroma folder (LEXICAL_CACHE_DIR overrides), one file per index target, named after the
    version and its build time (a version is never changed after it is built)."""
    settings = _settings(settings)
    meta = store._collection.metadata or {}
    folder = os.environ.get("LEXICAL_CACHE_DIR") or Path(settings.chroma_path).parent / "cache" / "lexical"
    target = hashlib.sha256(describe_target(settings).encode()).hexdigest()[:12]
    built = hashlib.sha256(f"{meta.get('built_at')}|{meta.get('manifest_key')}".encode()).hexdigest()[:12]
    return Path(folder) / f"{target}--{store._collection.name}-{built}.json"


def serving_info(settings=None) -> dict[str, Any]:
    """What is serving: {"available", "version", "collection", "count", "built_at", "previous",
    "target", "manifest": {sources, chunks per source, species_tagged, catalog_species, ...}}.
    Never raises for a missing index: "available" is False then."""
    settings = _settings(settings)
    client = get_client(settings)
    alias = read_alias(client)
    info: dict[str, Any] = {
        "available": False,
        "target": describe_target(settings),
        "collection": alias.current or None,
        "previous": alias.previous or None,
        "versions": list_versions(client),
        "switched_at": alias.updated_at or None,
    }
    if not alias.current or alias.current not in info["versions"]:
        return info
    collection = get_collection(client, alias.current)
    meta = collection.metadata or {}
    manifest = _parse_manifest(meta.get("manifest"))
    info.update(
        available=True,
        version=int(meta.get("version", version_of(alias.current) or 0)),
        count=collection.count(),
        built_at=meta.get("built_at"),
        manifest_key=meta.get("manifest_key"),
        manifest=manifest_summary(manifest),
    )
    return info


def all_chunks(settings=None, *, collection: str | None = None) -> list[dict[str, Any]]:
    """Every chunk of the serving version (or of `collection`), for building a BM25 index:
    a list of {"id": chunk_id, "text": page_content, "metadata": {...}} in a stable order
    (sorted by source, then start offset). Raises NoIndexError when nothing is serving.

    Example (answerer side):
        rows = all_chunks()
        bm25 = BM25Okapi([tokenize(r["text"]) for r in rows])
    """
    client = get_client(settings)
    name = collection or serving_collection_name(settings)
    col = get_collection(client, name)
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = col.get(include=["documents", "metadatas"], limit=PAGE_SIZE, offset=offset)
        ids = page["ids"]
        if not ids:
            break
        for cid, text, meta in zip(ids, page["documents"], page["metadatas"], strict=True):
            rows.append({"id": cid, "text": text or "", "metadata": dict(meta or {})})
        offset += len(ids)
        if len(ids) < PAGE_SIZE:
            break
    rows.sort(key=lambda r: (str(r["metadata"].get("source", "")), int(r["metadata"].get("start", 0) or 0),
                             r["id"]))
    return rows


def _parse_manifest(raw: Any) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return {}


def read_manifest(client, name: str) -> dict[str, Any]:
    return _parse_manifest((get_collection(client, name).metadata or {}).get("manifest"))


def manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without per-file hashes: what a status line needs."""
    return {
        "sources": {f["name"]: f.get("chunks", 0) for f in manifest.get("files", [])},
        "catalog_species": manifest.get("catalog", {}).get("species", 0),
        "catalog_chunks": manifest.get("catalog", {}).get("chunks", 0),
        "chunks": manifest.get("chunks", 0),
        "species_tagged": manifest.get("species_tagged", 0),
        "chunker_version": manifest.get("chunker_version"),
        "embedding_model": manifest.get("embedding_model"),
        "skipped": manifest.get("skipped", []),
    }
