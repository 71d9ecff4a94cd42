"""Versioned, atomic re-ingest of the knowledge base.

reingest():  load -> chunk -> embed -> write a NEW collection `guides_v<N>` -> check it
             (count, smoke query) -> switch the alias -> keep the previous version for
             rollback(), delete older ones.
Nothing that goes wrong before the alias switch touches the serving version: the half-built
collection is deleted and the report says what failed. A manifest (file hashes, catalog hash,
chunker version) is stored with each version; if it equals the serving one, nothing is rebuilt
unless force=True. One re-ingest at a time per process (threading lock) and per machine
(an flock'ed lock file), so an admin's /reingest and a CLI run cannot interleave.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ingest import store
from ingest.chunking import CHUNK_OVERLAP, CHUNK_SIZE, CHUNKER_VERSION, chunk_documents
from ingest.loaders import catalog_documents, catalog_fingerprint, file_sha256, load_paths
from knowledge_base.embeddings import MODEL_NAME, default_embeddings, embedding_id

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
KEEP_VERSIONS = 2  # the serving one and one to roll back to
EMBED_BATCH = 128  # chunks embedded and written per step (progress granularity)
# Species tried first for the smoke query: well covered by the guides and by the catalog.
SMOKE_SPECIES = ("amanita_phalloides", "amanita_muscaria", "boletus_edulis", "coprinus_comatus")
SMOKE_TOP_K = 10

_thread_lock = threading.Lock()


class IngestBusy(RuntimeError):
    """Another re-ingest holds the lock."""


class IngestCheckFailed(RuntimeError):
    """The freshly built collection did not pass its checks."""


class RollbackError(RuntimeError):
    """There is no previous version to switch back to."""


@dataclass
class IngestReport:
    status: str = "failed"  # built | unchanged | failed | busy
    version: int | None = None
    collection: str | None = None
    previous: str | None = None
    chunks: int = 0
    chunks_per_source: dict[str, int] = field(default_factory=dict)
    species_tagged: int = 0  # chunks with a catalog species label
    catalog_species: int = 0
    chars: int = 0
    reused_embeddings: int = 0  # vectors taken over from the serving version (unchanged chunks)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    warnings: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # old versions deleted
    error: str | None = None
    elapsed_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    @property
    def ok(self) -> bool:
        return self.status in ("built", "unchanged")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> str:
        """A short, human-readable outcome (for the CLI and the bot's /reingest reply)."""
        if self.status == "busy":
            return "A re-ingest is already running; try again when it has finished."
        if self.status == "failed":
            return f"Re-ingest failed, the previous index is still serving: {self.error}"
        if self.status == "unchanged":
            return f"Nothing changed since {self.collection}; index left as it is (use --force to rebuild)."
        tagged = f"{self.species_tagged / self.chunks:.0%}" if self.chunks else "0%"
        lines = [
            f"Built {self.collection}: {self.chunks} chunks ({tagged} species-tagged) in {self.elapsed_s:.1f}s.",
            *(f"  {name}: {n} chunks" for name, n in sorted(self.chunks_per_source.items())),
        ]
        lines += [f"  skipped {s['path']}: {s['reason']}" for s in self.skipped]
        lines += [f"  note: {w}" for w in self.warnings]
        return "\n".join(lines)


# --- locking ---------------------------------------------------------------------------------
def lock_path(settings) -> Path:
    if settings.ingest_lock_file:
        return Path(settings.ingest_lock_file)
    if settings.chroma_url:
        from config import DEFAULT_VAR_DIR

        return DEFAULT_VAR_DIR / "ingest.lock"
    path = Path(settings.chroma_path)
    return path.with_name(path.name + ".ingest.lock")


@contextmanager
def ingest_lock(settings, *, blocking: bool = False) -> Iterator[None]:
    """Process-wide and machine-wide exclusive lock; IngestBusy when held and not blocking."""
    if not _thread_lock.acquire(blocking=blocking):
        raise IngestBusy("another re-ingest is running in this process")
    try:
        path = lock_path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError as exc:
                raise IngestBusy(f"another process holds {path}") from exc
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        _thread_lock.release()


@contextmanager
def build_lease(settings) -> Iterator[store.Lease]:
    """The re-ingest lease in the index (across replicas and machines); LeaseHeld when taken."""
    lease = store.Lease(store.get_client(settings), owner=uuid.uuid4().hex, ttl_s=store.LEASE_TTL_S)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()


def gc(settings=None) -> list[str]:
    """Remove versions a killed run left half-built (never while a live lease shows a build running)."""
    settings = _settings(settings)
    with ingest_lock(settings), build_lease(settings) as lease:
        client = store.get_client(settings)
        removed = []
        for name in store.orphaned_builds(client, lease_owner=lease.owner):
            client.delete_collection(name)
            removed.append(name)
        return removed


# --- sources and manifest --------------------------------------------------------------------
def default_sources(settings) -> tuple[list[Path], list[str]]:
    """settings.guides_dir when it exists (else a warning: the catalog is ingested alone)."""
    guides = Path(settings.guides_dir)
    if guides.is_dir():
        return [guides], []
    return [], [f"guides folder {guides} not found: ingesting the species catalog alone"]


def build_manifest(files: list[dict[str, Any]], catalog_info: dict[str, Any], chunks: int, species_tagged: int,
                   skipped: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "files": files,
        "catalog": catalog_info,
        "chunker_version": CHUNKER_VERSION,
        "chunk_size": CHUNK_SIZE,
        "chunk_overlap": CHUNK_OVERLAP,
        "embedding_model": embedding_id(),
        "chunks": chunks,
        "species_tagged": species_tagged,
        "skipped": skipped,
    }


def manifest_key(files: list[dict[str, Any]], catalog_info: dict[str, Any]) -> str:
    """What decides "nothing changed": file contents, catalog content, chunker and model."""
    basis = {
        "files": sorted((f["name"], f["sha256"]) for f in files),
        "catalog": [catalog_info.get("sha256", ""), catalog_info.get("included", True)],
        "chunker": [CHUNKER_VERSION, CHUNK_SIZE, CHUNK_OVERLAP],
        "model": embedding_id(),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


# --- checks ----------------------------------------------------------------------------------
def verify_collection(collection, chunks, catalog, embeddings) -> str:
    """Raise IngestCheckFailed unless the new collection is complete and answers a species query.

    Returns a one-line description of the smoke query that passed (for the log)."""
    count = collection.count()
    if count != len(chunks):
        raise IngestCheckFailed(f"collection holds {count} chunks, expected {len(chunks)}")
    tagged = Counter(c.metadata["species"] for c in chunks if c.metadata.get("species"))
    if not tagged:
        return "smoke query skipped: no species-tagged chunk"
    preferred = [s for s in SMOKE_SPECIES if s in tagged]
    label = preferred[0] if preferred else max(sorted(tagged), key=lambda s: tagged[s])
    profile = catalog.get(label) if catalog is not None else None
    name = profile.scientific_name if profile else label.replace("_", " ")
    result = collection.query(
        query_embeddings=[embeddings.embed_query(name)],
        n_results=min(SMOKE_TOP_K, count),
        include=["metadatas"],
    )
    found = [m.get("species") for m in result["metadatas"][0]]
    if label not in found:
        raise IngestCheckFailed(f"smoke query {name!r} did not return {label} in the top {SMOKE_TOP_K}")
    return f"smoke query {name!r} -> {label} at rank {found.index(label) + 1}"


# --- the pipeline ----------------------------------------------------------------------------
def _settings(settings):
    if settings is None:
        from config import get_settings

        settings = get_settings()
    return settings


def reingest(
    settings=None,
    *,
    sources: Iterable[Path | str] | None = None,
    progress: Progress | None = None,
    force: bool = False,
    catalog=None,
    include_catalog: bool = True,
) -> IngestReport:
    """Build and switch to a new knowledge-base version; see the module docstring.

    sources: files/folders of guides (default: settings.guides_dir). The species catalog
    (`catalog`, default: knowledge_base/catalog read afresh) is ingested too unless include_catalog=False; it is
    always used to map guide names to labels. Never raises for ingest problems: the returned
    report has status "built", "unchanged", "failed" (with `error`) or "busy".
    """
    settings = _settings(settings)
    report = IngestReport()
    started = time.perf_counter()
    try:
        with ingest_lock(settings), build_lease(settings) as lease:
            _reingest_locked(settings, report, sources, progress or _no_progress, force, catalog, include_catalog,
                             lease)
    except (IngestBusy, store.LeaseHeld) as exc:
        report.status, report.error = "busy", str(exc)
    except Exception as exc:  # reported, not raised: the serving version is untouched (see below)
        log.exception("ingest: re-ingest failed")
        report.status, report.error = "failed", f"{type(exc).__name__}: {exc}"
    report.elapsed_s = round(time.perf_counter() - started, 3)
    log.info("ingest: %s", report.summary())
    return report


def _no_progress(done: int, total: int, stage: str) -> None:
    return None


def _reingest_locked(settings, report: IngestReport, sources, progress: Progress, force: bool, catalog,
                     include_catalog: bool, lease: store.Lease | None = None) -> None:
    from knowledge_base.catalog import load_catalog

    timer = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal timer
        now = time.perf_counter()
        report.timings[stage] = round(now - timer, 3)
        timer = now

    # 1. load
    if sources is None:
        paths, warnings = default_sources(settings)
        report.warnings.extend(warnings)
    else:
        paths = [Path(p) for p in sources]
    progress(0, max(len(paths), 1), "load")
    loaded = load_paths(paths)
    report.skipped = [{"path": s.path, "reason": s.reason} for s in loaded.skipped]
    # Read fresh from disk (not the process-wide cached default_catalog()): a long-running bot's
    # /reingest must pick up catalog files added since it started.
    catalog = catalog if catalog is not None else load_catalog()
    catalog_docs = catalog_documents(catalog) if include_catalog else []
    progress(max(len(paths), 1), max(len(paths), 1), "load")
    lap("load")

    # 2. manifest: skip the rebuild when nothing changed since the serving version
    files = [{"name": p.name, "path": str(p), "sha256": file_sha256(p), "bytes": p.stat().st_size}
             for p in loaded.files]
    # The catalog's hash counts even when its documents are left out: it decides the species tags.
    catalog_info = {
        "sha256": catalog_fingerprint(catalog),
        "included": include_catalog,
        "species": len(catalog) if include_catalog else 0,
    }
    key = manifest_key(files, catalog_info)
    client = store.get_client(settings)
    alias = store.read_alias(client)
    versions = store.list_versions(client)
    serving = alias.current if alias.current in versions else ""
    if serving and not force:
        serving_meta = store.get_collection(client, serving).metadata or {}
        if serving_meta.get("manifest_key") == key and serving_meta.get("state") == "ready":
            report.status, report.collection = "unchanged", serving
            report.version = store.version_of(serving)
            report.chunks = int(serving_meta.get("chunks", 0))
            lap("manifest")
            return
    lap("manifest")

    # 3. chunk
    chunks = chunk_documents([*loaded.documents, *catalog_docs], catalog)
    if not chunks:
        raise IngestCheckFailed("nothing to ingest: no readable guide and an empty catalog")
    per_source = Counter(c.metadata["source"] for c in chunks if c.metadata["kind"] == "guide")
    for f in files:
        f["chunks"] = per_source.get(f["name"], 0)
    catalog_info["chunks"] = sum(1 for c in chunks if c.metadata["kind"] == "catalog")
    report.chunks = len(chunks)
    report.chunks_per_source = dict(per_source)
    if catalog_info["chunks"]:
        report.chunks_per_source["catalog"] = catalog_info["chunks"]
    report.species_tagged = sum(1 for c in chunks if c.metadata["species"])
    report.catalog_species = catalog_info["species"]
    report.chars = sum(len(c.page_content) for c in chunks)
    progress(len(chunks), len(chunks), "chunk")
    lap("chunk")

    # 4. write a new collection; any failure from here to the alias switch removes it
    version = max([alias.last_version, *[store.version_of(v) or 0 for v in versions]]) + 1
    name = store.collection_name(version)
    report.version, report.collection, report.previous = version, name, serving or None
    manifest = build_manifest(files, catalog_info, len(chunks), report.species_tagged, report.skipped)
    base_meta = {"kind": "guides", "version": version, "built_at": store.now_iso(), "manifest_key": key,
                 "chunker_version": CHUNKER_VERSION, "embedding_model": embedding_id()}
    embeddings = default_embeddings()
    # The model is made ready as a stage of its own: on a fresh machine its one-time ONNX export and int8
    # quantisation (about 20 s) would otherwise sit inside the first embedding step and make the estimate
    # of the time left several times too long ("03:50 left" for a build of 57 s).
    progress(0, 1, "model")
    _ = embeddings.encoder
    progress(1, 1, "model")
    lap("model")
    try:
        if name in versions:  # a leftover from a crash that also lost the alias record
            client.delete_collection(name)
        collection = client.create_collection(
            name,
            embedding_function=store.chroma_embedding_function(),
            metadata={**base_meta, "state": "building"},
            configuration={"hnsw": {"space": "cosine"}},
        )
        # Unchanged chunks (same id = same source, span and text) keep the serving version's vectors;
        # force=True re-embeds everything.
        reused = {} if force or not serving else _reusable_embeddings(client, serving, chunks, embeddings.embedding_id)
        report.reused_embeddings = len(reused)
        progress(0, len(chunks), "embed")
        done = 0
        for batch in embedding_steps(chunks, EMBED_BATCH):
            if lease is not None:
                lease.renew()  # still ours: nobody else builds (raises when a lapsed lease was taken over)
            ids = [c.metadata["chunk_id"] for c in batch]
            todo = [c.page_content for c in batch if c.metadata["chunk_id"] not in reused]
            fresh = iter(embeddings.embed_documents(todo) if todo else [])
            collection.add(
                ids=ids,
                documents=[c.page_content for c in batch],
                metadatas=[dict(c.metadata) for c in batch],
                embeddings=[reused[i] if i in reused else next(fresh) for i in ids],
            )
            done += len(batch)
            progress(done, len(chunks), "embed")
        lap("embed")

        progress(0, 1, "check")
        smoke = verify_collection(collection, chunks, catalog, embeddings)
        log.info("ingest: %s: %s", name, smoke)
        collection.modify(metadata={**base_meta, "state": "ready", "chunks": len(chunks),
                                    "manifest": json.dumps(manifest, sort_keys=True)})
        progress(1, 1, "check")
        lap("check")

        if lease is not None:
            lease.renew()
        store.write_alias(client, store.Alias(current=name, previous=serving, last_version=version))
    except BaseException:
        _discard_unless_serving(client, name)
        raise
    progress(1, 1, "switch")
    report.status = "built"

    # 5. keep the serving version and the previous one; older ones go (a failure here is harmless)
    keep = {name, serving}
    for old in store.list_versions(client):
        if old not in keep:
            try:
                client.delete_collection(old)
                report.removed.append(old)
            except Exception as exc:
                report.warnings.append(f"could not delete old version {old}: {exc}")
    lap("switch")


def embedding_steps(chunks: list, size: int) -> list[list]:
    """The chunks in steps of `size` texts of like length, so that the encoder pads little (about 13 %
    faster than document order; the order in Chroma means nothing). The steps alternate long and short
    (longest, shortest, second longest, ...), so the rate so far, and with it the time-left estimate, is
    about the whole build's from the first steps on; longest first would overstate it for minutes."""
    by_length = sorted(chunks, key=lambda c: len(c.page_content), reverse=True)
    steps = [by_length[begin : begin + size] for begin in range(0, len(by_length), size)]
    alternating = []
    while steps:
        alternating.append(steps.pop(0))
        if steps:
            alternating.append(steps.pop())
    return alternating


def _reusable_embeddings(client, serving: str, chunks, wanted: str) -> dict[str, list[float]]:
    """chunk_id -> vector from the serving version, when it holds the same embedding (`wanted`)."""
    try:
        collection = store.get_collection(client, serving)
        if (collection.metadata or {}).get("embedding_model") != wanted:
            return {}
        ids = [c.metadata["chunk_id"] for c in chunks]
        found: dict[str, list[float]] = {}
        for begin in range(0, len(ids), store.PAGE_SIZE):
            page = collection.get(ids=ids[begin : begin + store.PAGE_SIZE], include=["embeddings"])
            for cid, vector in zip(page["ids"], page["embeddings"], strict=True):
                found[cid] = [float(x) for x in vector]
        return found
    except Exception as exc:  # an optimisation only: embed everything instead
        log.warning("ingest: cannot reuse embeddings from %s: %s", serving, exc)
        return {}


def _discard_unless_serving(client, name: str) -> None:
    try:
        if store.read_alias(client).current == name:
            return  # the switch went through after all; the new version is complete and checked
        if name in store.list_versions(client):
            client.delete_collection(name)
            log.warning("ingest: removed half-built collection %s", name)
    except Exception:
        log.exception("ingest: could not remove half-built collection %s", name)


def rollback(settings=None) -> dict[str, Any]:
    """Switch the alias back to the previous version (the current one becomes 'previous', so a
    second rollback undoes the first). Raises RollbackError when there is nothing to go back to."""
    settings = _settings(settings)
    with ingest_lock(settings):
        client = store.get_client(settings)
        alias = store.read_alias(client)
        versions = store.list_versions(client)
        if not alias.previous or alias.previous not in versions:
            raise RollbackError("there is no previous knowledge-base version to roll back to")
        store.write_alias(
            client, store.Alias(current=alias.previous, previous=alias.current, last_version=alias.last_version)
        )
    return store.serving_info(settings)


def has_index(settings=None) -> bool:
    try:
        client = store.get_client(settings)
        name = store.serving_collection_name(settings)
        return store.get_collection(client, name).count() > 0
    except store.NoIndexError:
        return False


def ensure_index(settings=None, *, progress: Progress | None = None, **reingest_kwargs) -> IngestReport | None:
    """Build the index when none is serving (first start of the console bot). Returns None when an
    index already exists, else the report of the build (check `.ok`; status "busy" when another
    process is building it right now). Extra keyword arguments go to reingest()."""
    settings = _settings(settings)
    if has_index(settings):
        return None
    return reingest(settings, progress=progress, **reingest_kwargs)


# --- sources that appear or change after the index was built ----------------------------------
def source_changes(settings=None) -> list[str]:
    """What differs between the configured sources and what the serving index was built from: the names
    of new, changed or removed guide files, "catalog", and "embedding model" when EMBEDDING_PRECISION differs
    from what the index holds. Hashes alone (nothing is parsed or embedded),
    so it is cheap enough for every start. Empty when nothing changed, when no index serves (that is
    ensure_index's case) or when the guides folder is not there. A file the last build could not read
    counts as known, not as new."""
    return _changes_and_manifest(_settings(settings))[0]


def _changes_and_manifest(settings) -> tuple[list[str], dict[str, Any]]:
    """source_changes, and the serving version's manifest it compared with ({} when none)."""
    from ingest.loaders import guide_files
    from knowledge_base.catalog import load_catalog

    client = store.get_client(settings)
    try:
        manifest = store.read_manifest(client, store.serving_collection_name(settings))
    except store.NoIndexError:
        return [], {}
    paths, _ = default_sources(settings)
    if not paths:
        # This process cannot see the guides (a pod without the guides volume): it cannot judge, and a
        # rebuild from here would drop every guide from the index.
        return [], manifest
    built = {f["name"]: f["sha256"] for f in manifest.get("files", [])}
    unreadable = {Path(s.get("path", "")).name for s in manifest.get("skipped", [])}
    now = {p.name: file_sha256(p) for folder in paths for p in guide_files(folder) if p.name not in unreadable}
    changes = sorted(name for name in built.keys() | now.keys() if built.get(name) != now.get(name))
    catalog = manifest.get("catalog", {})
    if catalog.get("sha256") and catalog["sha256"] != catalog_fingerprint(load_catalog()):
        changes.append("catalog")
    if (manifest.get("embedding_model") or MODEL_NAME) != embedding_id():
        changes.append("embedding model")  # EMBEDDING_PRECISION changed: rebuilt, never mixed in one index
    return changes, manifest


def refresh_in_background(settings=None, *, on_done: Callable[[IngestReport], None] | None = None,
                          progress: Progress | None = None, build_missing: bool = False,
                          ) -> tuple[list[str], threading.Thread | None]:
    """Re-ingest in a background thread when the sources changed since the serving index was built;
    the old version keeps serving until the new one is checked and switched to (readers follow the
    alias). With `build_missing`, a first build when no index serves at all (the console's first start:
    meanwhile photos are identified and questions answered from the catalog). Returns (what changed,
    the thread): ([], None) when there is nothing to do, ([], thread) for a first build."""
    settings = _settings(settings)
    try:
        changes, manifest = _changes_and_manifest(settings)
        missing = build_missing and not manifest and not has_index(settings)
    except Exception as exc:  # noqa: BLE001 - a check that cannot run must not stop a start
        log.warning("ingest: could not compare the sources with the index: %s", exc)
        return [], None
    if not changes and not missing:
        return [], None
    # The same kind of build as the serving one (with or without the catalog's own passages).
    include_catalog = bool(manifest.get("catalog", {}).get("included", True))

    def run() -> None:
        report = reingest(settings, include_catalog=include_catalog, progress=progress)
        log.info("ingest: background %s: %s", f"refresh for {', '.join(changes)}" if changes else "first build",
                 report.summary())
        if on_done is not None:
            on_done(report)

    thread = threading.Thread(target=run, name="ingest-refresh", daemon=True)
    thread.start()
    return changes, thread
