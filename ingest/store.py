"""The knowledge-base store, as the builder sees it: the alias switch and the re-ingest lease, on top of
the reader's view (knowledge_base.vectorstore: versioned `guides_v<N>` collections behind `kb_alias`).

- `ingest_lease`: a collection that exists while a re-ingest builds (its metadata: owner, host, pid,
  expiry). It is the one lock that holds across replicas: every container reaching the same Chroma sees it.
- `write_alias`: the one metadata write that switches readers to a new version.
- `orphaned_builds`: versions a killed run left in state "building" (`ingest status` lists them,
  `ingest gc` and the next run remove them).

The reader's names are imported here too, so the pipeline and the CLI speak of one `store`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from knowledge_base.embeddings import chroma_embedding_function
from knowledge_base.vectorstore import (  # noqa: F401  (the reader's view, used through `store.` by ingest)
    PAGE_SIZE,
    Alias,
    NoIndexError,
    alias_collection,
    all_chunks,
    collection_name,
    describe_target,
    get_client,
    get_collection,
    list_versions,
    manifest_summary,
    now_iso,
    read_alias,
    read_manifest,
    serving_collection_name,
    serving_info,
    version_of,
)


def write_alias(client, alias: Alias) -> None:
    """One metadata write: the switch readers observe atomically."""
    alias.updated_at = now_iso()
    alias_collection(client).modify(metadata=alias.to_metadata())


# --- the re-ingest lease (one builder across replicas) ---------------------------------------------
LEASE_COLLECTION = "ingest_lease"
LEASE_TTL_S = 600.0  # a builder renews it every batch; a killed builder's lease lapses after this


class LeaseHeld(RuntimeError):
    """Another builder holds the re-ingest lease."""


@dataclass
class Lease:
    """A re-ingest lease stored in the index itself, so every replica that reaches the same Chroma
    (server or folder) sees it. Creating a collection is the atomic step: a name exists once."""

    client: Any
    owner: str
    ttl_s: float = LEASE_TTL_S

    def _metadata(self) -> dict[str, Any]:
        return {"kind": "lease", "owner": self.owner, "expires_at": time.time() + self.ttl_s,
                "host": socket.gethostname(), "pid": os.getpid(), "since": now_iso()}

    def acquire(self) -> None:
        for _ in range(2):
            try:
                self.client.create_collection(LEASE_COLLECTION, embedding_function=chroma_embedding_function(),
                                              metadata=self._metadata())
            except Exception as exc:  # the name exists: someone holds (or held) the lease
                meta = self._current_metadata()
                if meta is None:
                    continue  # released meanwhile: try again
                if float(meta.get("expires_at", 0)) > time.time():
                    raise LeaseHeld(
                        f"another re-ingest is running ({meta.get('host')}, pid {meta.get('pid')}, since "
                        f"{meta.get('since')}); try again when it has finished") from exc
                # Expired: its builder died. Take it over, then check nobody else did the same.
                with contextlib.suppress(Exception):
                    self.client.delete_collection(LEASE_COLLECTION)
                continue
            if self.holds():
                return
        raise LeaseHeld("another re-ingest took the lease at the same moment; try again")

    def _current_metadata(self) -> dict[str, Any] | None:
        try:
            return dict(self.client.get_collection(LEASE_COLLECTION).metadata or {})
        except Exception:
            return None

    def holds(self) -> bool:
        meta = self._current_metadata()
        return bool(meta) and meta.get("owner") == self.owner

    def renew(self) -> None:
        """Extend the lease; LeaseHeld when it was lost (another builder took over a lapsed lease)."""
        if not self.holds():
            raise LeaseHeld("the re-ingest lease was lost (it lapsed and another builder took it over)")
        self.client.get_collection(LEASE_COLLECTION).modify(metadata=self._metadata())

    def release(self) -> None:
        with contextlib.suppress(Exception):
            if self.holds():
                self.client.delete_collection(LEASE_COLLECTION)


def lease_info(client) -> dict[str, Any] | None:
    """The current lease (owner, host, pid, since, expires_at, live), or None."""
    try:
        meta = dict(client.get_collection(LEASE_COLLECTION).metadata or {})
    except Exception:
        return None
    meta["live"] = float(meta.get("expires_at", 0)) > time.time()
    return meta


def orphaned_builds(client, *, lease_owner: str | None = None) -> list[str]:
    """Versions left in state "building" by a killed run: not serving, not previous, and no live lease
    (but the caller's own, `lease_owner`): while a build runs, its collection is not an orphan."""
    lease = lease_info(client)
    if lease and lease["live"] and lease.get("owner") != lease_owner:
        return []
    alias = read_alias(client)
    out = []
    for name in list_versions(client):
        if name in (alias.current, alias.previous):
            continue
        with contextlib.suppress(Exception):
            if (client.get_collection(name).metadata or {}).get("state") == "building":
                out.append(name)
    return out


