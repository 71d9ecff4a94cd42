"""Users' feedback on identifications, their consent to keep photos, the photos kept, and the experts'
review of it all (issue 27): the data side of the learning loop, so it lives with the model's data.

The front doors (bot.core) record votes; `python -m vision_model feedback list|show|accept|reject|export`
reviews them and exports the accepted ones in the training pool's layout. Stored in the chat database
(DATABASE_URL; SQLAlchemy: SQLite by default, PostgreSQL at scale), in tables of its own.
Users are never stored by their platform id: `user_key` is an HMAC-SHA256 of "platform:user_id" under a
salt (FEEDBACK_SALT, or one generated once and kept in the database), so the rows cannot be traced back to
an account without the salt, and /forget can still find them. Photos are kept only for users who said
`/consent on`, in a photo store reached through fsspec (FEEDBACK_PHOTOS: a local folder by default, or
any fsspec URL such as s3://bucket/prefix with s3fs installed); otherwise only their SHA-256 is stored.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

metadata = MetaData()
REVIEW_STATES = ("pending", "accepted", "rejected")
LICENCE = "contributed with consent"
MANIFEST_FIELDS = ["path", "label", "source", "reviewer", "reviewed_at", "license", "sha256", "model_label",
                   "model_version", "vote"]

VOTES = ("right", "wrong", "unsure")
UNKNOWN_SPECIES = "unknown"  # the user's label when they say it is wrong but do not know what it is

feedback = Table(
    "bot_feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("user_key", String(64), nullable=False, index=True),
    Column("platform", String(32), nullable=False),
    Column("identification_id", Integer, nullable=False),
    Column("model_version", String(128), nullable=False),
    Column("labels", Text, nullable=False),  # the model's top-k (JSON), best first
    Column("probabilities", Text, nullable=False),
    Column("verdict", String(32), nullable=False),
    Column("vote", String(8), nullable=False),  # right / wrong / unsure
    Column("user_label", String(128), nullable=True),  # a catalog label or "unknown" (after "wrong")
    Column("photo_sha256", Text, nullable=False),  # JSON list of the observation's photo hashes
    Column("photos_kept", Boolean, nullable=False),
    Column("review", String(16), nullable=False, default="pending"),  # pending / accepted / rejected
    Column("reviewer", String(128), nullable=True),
    Column("reviewed_at", DateTime(timezone=True), nullable=True),
    Column("reviewed_label", String(128), nullable=True),  # the expert's label (accepted items)
)

consent = Table(
    "bot_consent",
    metadata,
    Column("user_key", String(64), primary_key=True),
    Column("photos", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

kept_photos = Table(
    "bot_kept_photos",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_key", String(64), nullable=False, index=True),
    Column("sha256", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

salt_table = Table("bot_feedback_salt", metadata, Column("id", Integer, primary_key=True), Column("salt", String(64)))


def _now() -> datetime:
    return datetime.now(UTC)


def photo_sha256(photo: bytes) -> str:
    return hashlib.sha256(photo).hexdigest()


@dataclass
class Vote:
    vote: str
    user_label: str | None
    changed_from: str | None  # the earlier vote when this one replaced it


class FeedbackStore:
    @classmethod
    def from_url(cls, database_url: str, **kwargs) -> FeedbackStore:
        return cls(create_engine(database_url, pool_pre_ping=True), **kwargs)

    def __init__(self, engine: Engine, *, salt: str | None = None, photos_url: str = "var/feedback/photos") -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[feedback, consent, kept_photos, salt_table])
        self._salt = (salt or self._stored_salt()).encode()
        self.photos_url = photos_url

    def _stored_salt(self) -> str:
        with self.engine.begin() as conn:
            row = conn.execute(select(salt_table.c.salt).where(salt_table.c.id == 1)).first()
            if row is None:
                conn.execute(insert(salt_table).values(id=1, salt=secrets.token_hex(32)))
                row = conn.execute(select(salt_table.c.salt).where(salt_table.c.id == 1)).first()
        return str(row[0])

    def user_key(self, platform: str, user_id: str) -> str:
        return hmac.new(self._salt, f"{platform}:{user_id}".encode(), hashlib.sha256).hexdigest()

    # --- identifications handed out by a stateless door (the HTTP API) -----------------------------------
    def sign(self, ident: dict) -> str:
        """A token carrying an identification (model version, top-k, verdict, photo hashes), signed with the
        salt: the API keeps no conversation, so the client sends this back with its feedback."""
        body = base64.urlsafe_b64encode(json.dumps(ident, separators=(",", ":")).encode()).decode().rstrip("=")
        mac = hmac.new(self._salt, f"token:{body}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"{body}.{mac}"

    def verify(self, token: str) -> dict | None:
        """The identification in a token made by `sign`, or None for a forged or damaged one."""
        body, _, mac = (token or "").partition(".")
        expected = hmac.new(self._salt, f"token:{body}".encode(), hashlib.sha256).hexdigest()[:32]
        if not body or not hmac.compare_digest(mac, expected):
            return None
        try:
            ident = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        # A stable id per identification (what a chat's row id is elsewhere): one vote per user on it.
        ident["id"] = int(hashlib.sha256(body.encode()).hexdigest()[:7], 16)
        return ident

    # --- consent ---------------------------------------------------------------------------------
    def consent(self, key: str) -> bool | None:
        """True/False as the user said; None when never asked."""
        with self.engine.connect() as conn:
            row = conn.execute(select(consent.c.photos).where(consent.c.user_key == key)).first()
        return None if row is None else bool(row[0])

    def set_consent(self, key: str, photos: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(consent).where(consent.c.user_key == key))
            conn.execute(insert(consent).values(user_key=key, photos=photos, updated_at=_now()))

    # --- photos ----------------------------------------------------------------------------------
    def _fs(self):
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.photos_url)
        return fs, root.rstrip("/")

    def keep_photos(self, key: str, photos: list[bytes]) -> int:
        """Store the photos of a consenting user (content-addressed); returns how many were written."""
        fs, root = self._fs()
        fs.makedirs(root, exist_ok=True)
        written = 0
        with self.engine.begin() as conn:
            for photo in photos:
                digest = photo_sha256(photo)
                path = f"{root}/{digest[:2]}/{digest}.jpg"
                if not fs.exists(path):
                    fs.makedirs(f"{root}/{digest[:2]}", exist_ok=True)
                    with fs.open(path, "wb") as fh:
                        fh.write(photo)
                    written += 1
                conn.execute(insert(kept_photos).values(user_key=key, sha256=digest, path=path, created_at=_now()))
        return written

    def kept_photo_paths(self, key: str | None = None) -> list[str]:
        query = select(kept_photos.c.path)
        if key is not None:
            query = query.where(kept_photos.c.user_key == key)
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]

    # --- votes -----------------------------------------------------------------------------------
    def record(self, key: str, platform: str, ident, vote: str, user_label: str | None = None) -> Vote:
        """One vote per user and identification: a second one replaces the first (and says so)."""
        if vote not in VOTES:
            raise ValueError(f"unknown vote {vote!r}")
        hashes = list(ident.photo_hashes or [])
        with self.engine.begin() as conn:
            earlier = conn.execute(select(feedback.c.id, feedback.c.vote, feedback.c.user_label).where(
                feedback.c.user_key == key, feedback.c.platform == platform,
                feedback.c.identification_id == ident.id)).first()
            values = {"vote": vote, "user_label": user_label, "updated_at": _now()}
            if earlier is not None:  # a changed vote goes back to the review queue
                conn.execute(update(feedback).where(feedback.c.id == earlier[0]).values(
                    **values, review="pending", reviewer=None, reviewed_at=None, reviewed_label=None))
                changed = None if (earlier[1], earlier[2]) == (vote, user_label) else earlier[1]
                return Vote(vote, user_label, changed)
            consented = conn.execute(select(consent.c.photos).where(consent.c.user_key == key)).scalar()
            kept = bool(consented) and bool(hashes)
            conn.execute(insert(feedback).values(
                created_at=_now(), user_key=key, platform=platform, identification_id=ident.id,
                model_version=ident.model_version, labels=json.dumps(ident.labels),
                probabilities=json.dumps(ident.probabilities), verdict=ident.verdict,
                photo_sha256=json.dumps(hashes), photos_kept=kept, review="pending", **values))
        return Vote(vote, user_label, None)

    def rows(self, key: str | None = None, review: str | None = None) -> list[dict]:
        query = select(feedback).order_by(feedback.c.id)
        if key is not None:
            query = query.where(feedback.c.user_key == key)
        if review is not None:
            query = query.where(feedback.c.review == review)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    # --- forgetting ------------------------------------------------------------------------------
    def forget_user(self, key: str) -> tuple[int, int]:
        """Delete the user's votes, consent and kept photos (files and rows). Returns (votes, photos)."""
        paths = self.kept_photo_paths(key)
        fs, _ = self._fs() if paths else (None, None)
        with self.engine.begin() as conn:
            shared = {row[0] for row in conn.execute(select(kept_photos.c.path).where(
                kept_photos.c.user_key != key, kept_photos.c.path.in_(paths)))} if paths else set()
            votes = conn.execute(delete(feedback).where(feedback.c.user_key == key)).rowcount
            conn.execute(delete(consent).where(consent.c.user_key == key))
            conn.execute(delete(kept_photos).where(kept_photos.c.user_key == key))
        removed = 0
        for path in set(paths) - shared:  # a photo another consenting user also sent stays for them
            if fs.exists(path):
                fs.rm(path)
                removed += 1
        return int(votes or 0), removed

    def delete_older_than(self, days: float) -> tuple[int, int]:
        """Retention: votes and kept photos older than `days` go. Returns (votes, photos) deleted."""
        cutoff = _now() - timedelta(days=days)
        with self.engine.begin() as conn:
            old = [row[0] for row in conn.execute(select(kept_photos.c.path).where(kept_photos.c.created_at < cutoff))]
            votes = conn.execute(delete(feedback).where(feedback.c.created_at < cutoff)).rowcount
            conn.execute(delete(kept_photos).where(kept_photos.c.created_at < cutoff))
            still = {row[0] for row in conn.execute(select(kept_photos.c.path))}
        removed = 0
        if old:
            fs, _ = self._fs()
            for path in set(old) - still:
                if fs.exists(path):
                    fs.rm(path)
                    removed += 1
        return int(votes or 0), removed


    # --- the experts' review -----------------------------------------------------------------------
    def get(self, item: int) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(feedback).where(feedback.c.id == item)).mappings().first()
        return dict(row) if row else None

    def review(self, item: int, state: str, reviewer: str, label: str | None = None) -> dict:
        """Accept (with the expert's label: theirs, else the user's, else the model's for a "right" vote) or
        reject an item."""
        if state not in ("accepted", "rejected"):
            raise ValueError(f"unknown review state {state!r}")
        row = self.get(item)
        if row is None:
            raise KeyError(f"no feedback item {item}")
        if state == "accepted":
            label = label or row["user_label"] or (json.loads(row["labels"])[0] if row["vote"] == "right" else None)
            if not label or label == UNKNOWN_SPECIES:
                raise ValueError("an accepted item needs a species: give --label")
        with self.engine.begin() as conn:
            conn.execute(update(feedback).where(feedback.c.id == item).values(
                review=state, reviewer=reviewer, reviewed_at=_now(),
                reviewed_label=label if state == "accepted" else None))
        return self.get(item)

    def export(self, out_dir: Path) -> list[dict]:
        """Accepted items whose photos were kept, as a dataset folder in the training pool's layout:
        `<label>/<sha256>.jpg` and `manifest.csv` (source "feedback", reviewer, time, licence). No user
        ids or keys go out. The folder is replaced as a whole, so a photo forgotten or rejected since the
        last export leaves it. Returns the manifest rows."""
        import shutil
        import tempfile

        final = Path(out_dir)
        final.parent.mkdir(parents=True, exist_ok=True)
        out_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        fs, _ = self._fs()
        with self.engine.connect() as conn:
            paths = {row[0]: row[1] for row in conn.execute(select(kept_photos.c.sha256, kept_photos.c.path))}
        rows, seen = [], set()
        for item in self.rows(review="accepted"):
            for digest in json.loads(item["photo_sha256"]):
                label = item["reviewed_label"]
                if digest not in paths or (digest, label) in seen or not fs.exists(paths[digest]):
                    continue  # no consent, or forgotten since: only the hash was kept
                seen.add((digest, label))
                target = out_dir / label / f"{digest}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                with fs.open(paths[digest], "rb") as fh:
                    target.write_bytes(fh.read())
                rows.append({"path": f"{label}/{digest}.jpg", "label": label, "source": "feedback",
                             "reviewer": item["reviewer"],
                             "reviewed_at": item["reviewed_at"].isoformat() if item["reviewed_at"] else "",
                             "license": LICENCE, "sha256": digest, "model_label": json.loads(item["labels"])[0],
                             "model_version": item["model_version"], "vote": item["vote"]})
        with (out_dir / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        if final.exists():
            shutil.rmtree(final)
        out_dir.rename(final)
        return rows


# --- the review queue's command line: python -m vision_model feedback ... ----------------------------
def _public(row: dict) -> dict:
    """An item as experts see it: never the user key."""
    out = {k: v for k, v in row.items() if k != "user_key"}
    for name in ("labels", "probabilities", "photo_sha256"):
        out[name] = json.loads(out[name])
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import getpass
    import sys

    parser = argparse.ArgumentParser(prog="python -m vision_model feedback",
                                     description="Review users' feedback on identifications and export it.")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="the review queue (default: pending items)")
    listing.add_argument("--state", choices=[*REVIEW_STATES, "all"], default="pending")
    show = sub.add_parser("show", help="one item, as JSON")
    show.add_argument("item", type=int)
    for name in ("accept", "reject"):
        action = sub.add_parser(name, help=f"{name} an item")
        action.add_argument("item", type=int)
        action.add_argument("--reviewer", default=None, help="who reviewed it (default: the login name)")
        if name == "accept":
            action.add_argument("--label", default=None,
                                help="the species (a catalog label); default: the user's, or the model's if right")
    export = sub.add_parser("export", help="accepted items with kept photos as a dataset folder")
    export.add_argument("--out", type=Path, default=Path("var/feedback/accepted"))
    args = parser.parse_args(argv)

    from config import get_settings

    settings = get_settings()
    store = FeedbackStore.from_url(settings.database_url, photos_url=settings.feedback_photos,
                                   salt=settings.feedback_salt.get_secret_value() if settings.feedback_salt else None)
    if args.action == "list":
        items = store.rows(review=None if args.state == "all" else args.state)
        for row in items:
            model_label = json.loads(row["labels"])[0]
            said = row["user_label"] or ("(same)" if row["vote"] == "right" else "?")
            print(f"{row['id']:>5}  {row['created_at']:%Y-%m-%d}  {row['review']:<8}  {row['vote']:<6}  "
                  f"model: {model_label} ({row['verdict']}, {row['model_version']})  user: {said}  "
                  f"photos kept: {'yes' if row['photos_kept'] else 'no'}")
        print(f"{len(items)} item(s)")
        return 0
    if args.action == "show":
        row = store.get(args.item)
        if row is None:
            print(f"no feedback item {args.item}", file=sys.stderr)
            return 1
        print(json.dumps(_public(row), indent=2, ensure_ascii=False))
        return 0
    if args.action == "export":
        rows = store.export(args.out)
        print(f"exported {len(rows)} photo(s) of {len({r['label'] for r in rows})} species to {args.out}")
        return 0
    label = getattr(args, "label", None)
    if label is not None:
        from knowledge_base.catalog import default_catalog

        if label not in default_catalog().labels:
            print(f"{label!r} is not a catalog label (e.g. amanita_phalloides)", file=sys.stderr)
            return 2
    try:
        row = store.review(args.item, "accepted" if args.action == "accept" else "rejected",
                           args.reviewer or getpass.getuser(), label)
    except (KeyError, ValueError) as exc:
        print(str(exc).strip("'\""), file=sys.stderr)
        return 1
    print(f"item {row['id']}: {row['review']}" + (f" as {row['reviewed_label']}" if row["reviewed_label"] else ""))
    return 0
