"""Per-chat memory, persisted with SQLAlchemy so it survives restarts.

Plain portable column types only (Integer, String, Text, Float, Boolean, DateTime), so the
same code runs on the default SQLite file and on PostgreSQL (DATABASE_URL). JSON payloads
are stored as Text. Calls are synchronous and short; the core runs them off the event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url

metadata = MetaData()

identifications = Table(
    "bot_identifications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("platform", String(32), nullable=False),
    Column("chat_id", String(128), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("labels", Text, nullable=False),  # JSON list, best first
    Column("probabilities", Text, nullable=False),  # JSON list, same order
    Column("verdict", String(32), nullable=False),
    Column("abstained", Boolean, nullable=False),
    Column("danger_probability", Float, nullable=False),
    Column("photo_count", Integer, nullable=False),
    Column("model_version", String(128), nullable=False),
    # JSON [[label, probability], ...]: the dangerous candidates behind the verdict (added later:
    # ChatMemory adds the column to older databases).
    Column("dangerous", Text, nullable=True),
    Column("photo_hashes", Text, nullable=True),  # JSON list of the SHA-256 of the photos used (feedback)
)

history = Table(
    "bot_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("platform", String(32), nullable=False),
    Column("chat_id", String(128), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("role", String(8), nullable=False),  # "user" or "bot"
    Column("kind", String(32), nullable=False),
    Column("text", Text, nullable=False),
    Column("data", Text, nullable=True),  # JSON extras, e.g. the citations of an answer
)


@dataclass
class StoredIdentification:
    id: int
    labels: list[str]
    probabilities: list[float]
    verdict: str
    abstained: bool
    danger_probability: float
    photo_count: int
    model_version: str
    created_at: datetime
    dangerous: list[tuple[str, float]] = field(default_factory=list)
    photo_hashes: list[str] = field(default_factory=list)

    @property
    def top_label(self) -> str | None:
        return self.labels[0] if self.labels else None


@dataclass
class HistoryEntry:
    role: str
    kind: str
    text: str
    data: dict = field(default_factory=dict)
    created_at: datetime | None = None


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers run beside the writer, and synchronous=NORMAL skips an fsync per commit
    # (a crash may lose the last moments of chat memory, never corrupt it).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ChatMemory:
    """The last `keep_identifications` identifications and `keep_history` lines per chat."""

    def __init__(self, database_url: str, *, keep_identifications: int = 5, keep_history: int = 20) -> None:
        url = make_url(database_url)
        kwargs: dict = {"pool_pre_ping": True}
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            # The core calls us from worker threads.
            kwargs["connect_args"] = {"check_same_thread": False}
        self.engine: Engine = create_engine(url, **kwargs)
        if url.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        self._add_missing_columns()
        self.keep_identifications = keep_identifications
        self.keep_history = keep_history

    def close(self) -> None:
        self.engine.dispose()

    def _add_missing_columns(self) -> None:
        """Columns added after a database was created (create_all only creates missing tables)."""
        present = {c["name"] for c in inspect(self.engine).get_columns(identifications.name)}
        with self.engine.begin() as conn:
            for column in identifications.columns:
                if column.name not in present and column.nullable:
                    conn.execute(text(f"ALTER TABLE {identifications.name} ADD COLUMN {column.name} "
                                      f"{column.type.compile(self.engine.dialect)}"))

    def forget_chat(self, platform: str, chat_id: str) -> None:
        """Start a new conversation: drop the chat's identifications and history (/new)."""
        with self.engine.begin() as conn:
            for table in (identifications, history):
                conn.execute(delete(table).where(table.c.platform == platform, table.c.chat_id == chat_id))

    # --- identifications -----------------------------------------------------------
    def add_identification(
        self,
        platform: str,
        chat_id: str,
        *,
        labels: list[str],
        probabilities: list[float],
        verdict: str,
        abstained: bool,
        danger_probability: float,
        photo_count: int,
        model_version: str,
        dangerous: list[tuple[str, float]] | None = None,
        exchange: list[tuple[str, str, str, dict | None]] | None = None,
        photo_hashes: list[str] | None = None,
    ) -> int:
        """Store an identification (and, in the same transaction, the history lines of `exchange`)."""
        with self.engine.begin() as conn:
            new_id = conn.execute(
                insert(identifications).values(
                    platform=platform,
                    chat_id=chat_id,
                    created_at=_utcnow(),
                    labels=json.dumps(labels),
                    probabilities=json.dumps([round(float(p), 6) for p in probabilities]),
                    verdict=verdict,
                    abstained=abstained,
                    danger_probability=float(danger_probability),
                    photo_count=photo_count,
                    model_version=model_version,
                    dangerous=json.dumps([[lab, round(float(p), 6)] for lab, p in dangerous or []]),
                    photo_hashes=json.dumps(list(photo_hashes or [])),
                )
            ).inserted_primary_key[0]
            self._prune(conn, identifications, platform, chat_id, self.keep_identifications)
            if exchange:
                # The bot's reply records which photo it was about: the chat's subject from now on.
                exchange = [(role, kind, line, {**(data or {}), "photo_id": int(new_id)} if role == "bot" else data)
                            for role, kind, line, data in exchange]
                self._insert_history(conn, platform, chat_id, exchange)
        return int(new_id)

    def recent_identifications(self, platform: str, chat_id: str) -> list[StoredIdentification]:
        """Oldest first (so 'the first one' is index 0 and 'the last one' is index -1)."""
        query = (
            select(identifications)
            .where(identifications.c.platform == platform, identifications.c.chat_id == chat_id)
            .order_by(identifications.c.id.desc())
            .limit(self.keep_identifications)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [self._identification(row) for row in reversed(rows)]

    def get_identification(self, platform: str, chat_id: str, ident_id: int) -> StoredIdentification | None:
        query = select(identifications).where(
            identifications.c.id == ident_id,
            identifications.c.platform == platform,
            identifications.c.chat_id == chat_id,  # a button from another chat cannot read this one
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return self._identification(row) if row else None

    @staticmethod
    def _identification(row) -> StoredIdentification:
        return StoredIdentification(
            id=row["id"],
            labels=json.loads(row["labels"]),
            probabilities=json.loads(row["probabilities"]),
            verdict=row["verdict"],
            abstained=bool(row["abstained"]),
            danger_probability=float(row["danger_probability"]),
            photo_count=int(row["photo_count"]),
            model_version=row["model_version"],
            created_at=row["created_at"],
            dangerous=[(lab, float(p)) for lab, p in json.loads(row["dangerous"] or "[]")],
            photo_hashes=json.loads(row["photo_hashes"] or "[]"),
        )

    # --- history -------------------------------------------------------------------
    def add_history(
        self, platform: str, chat_id: str, role: str, kind: str, text: str, data: dict | None = None
    ) -> None:
        self.add_exchange(platform, chat_id, [(role, kind, text, data)])

    def add_exchange(self, platform: str, chat_id: str, entries: list[tuple[str, str, str, dict | None]]) -> None:
        """Several history lines (role, kind, text, data) in one transaction."""
        with self.engine.begin() as conn:
            self._insert_history(conn, platform, chat_id, entries)

    def _insert_history(self, conn, platform: str, chat_id: str, entries) -> None:
        now = _utcnow()
        rows = [
            {"platform": platform, "chat_id": chat_id, "created_at": now, "role": role, "kind": kind,
             "text": text[:2000], "data": json.dumps(data) if data else None}
            for role, kind, text, data in entries
        ]
        conn.execute(insert(history), rows)
        self._prune(conn, history, platform, chat_id, self.keep_history)

    def recent_history(self, platform: str, chat_id: str, limit: int | None = None) -> list[HistoryEntry]:
        query = (
            select(history)
            .where(history.c.platform == platform, history.c.chat_id == chat_id)
            .order_by(history.c.id.desc())
            .limit(limit or self.keep_history)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            HistoryEntry(r["role"], r["kind"], r["text"], json.loads(r["data"]) if r["data"] else {}, r["created_at"])
            for r in reversed(rows)
        ]

    @staticmethod
    def _prune(conn, table: Table, platform: str, chat_id: str, keep: int) -> None:
        keep_ids = (
            select(table.c.id)
            .where(table.c.platform == platform, table.c.chat_id == chat_id)
            .order_by(table.c.id.desc())
            .limit(keep)
        )
        # Materialise first: MySQL-style "IN (subquery with LIMIT)" is not portable.
        kept = [row[0] for row in conn.execute(keep_ids)]
        if kept:
            conn.execute(
                delete(table).where(
                    table.c.platform == platform, table.c.chat_id == chat_id, table.c.id.notin_(kept)
                )
            )
