"""CLI: python -m ingest [run|rollback|status|gc] [--source PATH ...] [--force] [--chroma-path P] [--chroma-url U]"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class IngestArgs:
    command: str = "run"
    sources: list[Path] = field(default_factory=list)
    force: bool = False
    no_catalog: bool = False
    chroma_path: Path | None = None
    chroma_url: str | None = None
    json: bool = False


def parse_args(argv: list[str] | None = None) -> IngestArgs:
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="Build, inspect or roll back the knowledge-base index (guides + species catalog).",
    )
    parser.add_argument("command", nargs="?", default="run", choices=["run", "rollback", "status", "gc"],
                        help="run: re-ingest into a new version and switch to it (default); "
                             "rollback: switch back to the previous version; status: show what is serving; "
                             "gc: remove versions a killed run left half-built")
    parser.add_argument("--source", dest="sources", action="append", type=Path, default=[], metavar="PATH",
                        help="guide file or folder (repeatable; default: GUIDES_DIR, ../shared/data/guides)")
    parser.add_argument("--force", action="store_true", help="rebuild even if nothing changed")
    parser.add_argument("--no-catalog", action="store_true", help="leave the species catalog out of the index")
    parser.add_argument("--chroma-path", type=Path, help="local Chroma directory (overrides CHROMA_PATH)")
    parser.add_argument("--chroma-url", help="remote Chroma server, e.g. http://chroma:8000 (overrides CHROMA_URL)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    ns = parser.parse_args(argv)
    return IngestArgs(command=ns.command, sources=ns.sources, force=ns.force, no_catalog=ns.no_catalog,
                      chroma_path=ns.chroma_path, chroma_url=ns.chroma_url, json=ns.json)


def settings_for(args: IngestArgs):
    from config import get_settings

    settings = get_settings()
    update = {}
    if args.chroma_path:
        update.update(chroma_path=args.chroma_path.resolve(), chroma_url=None)
    if args.chroma_url:
        update["chroma_url"] = args.chroma_url
    return settings.model_copy(update=update) if update else settings


class TqdmProgress:
    """progress(done, total, stage) -> one tqdm bar per stage."""

    def __init__(self) -> None:
        self.bar = None
        self.stage = None

    def __call__(self, done: int, total: int, stage: str) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="chunk" if stage == "embed" else "step", leave=False)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ingest import pipeline, store

    settings = settings_for(args)
    if args.command == "gc":
        try:
            removed = pipeline.gc(settings)
        except (pipeline.IngestBusy, store.LeaseHeld) as exc:
            print(f"Nothing removed: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"removed": removed}) if args.json else
              f"Removed {len(removed)} half-built version(s): {', '.join(removed) or 'none'}.")
        return 0

    if args.command == "status":
        info = store.serving_info(settings)
        client = store.get_client(settings)
        info["lease"], info["orphaned_builds"] = store.lease_info(client), store.orphaned_builds(client)
        if args.json:
            print(json.dumps(info, indent=2, default=str))
        elif not info["available"]:
            print(f"No index at {info['target']}: run `python -m ingest run`.")
        else:
            m = info["manifest"]
            print(f"Serving {info['collection']} ({info['count']} chunks, built {info['built_at']}) at {info['target']}")
            for name, n in sorted(m["sources"].items()):
                print(f"  {name}: {n} chunks")
            print(f"  catalog: {m['catalog_species']} species, {m['catalog_chunks']} chunks; "
                  f"species-tagged chunks: {m['species_tagged']}")
            print(f"  previous (rollback target): {info['previous'] or 'none'}")
        if not args.json:
            lease = info["lease"]
            if lease and lease["live"]:
                print(f"  a re-ingest is running: {lease.get('host')}, pid {lease.get('pid')}, "
                      f"since {lease.get('since')}")
            if info["orphaned_builds"]:
                print(f"  half-built versions left by a killed run: {', '.join(info['orphaned_builds'])} "
                      "(`python -m ingest gc` removes them)")
        return 0 if info["available"] else 1

    if args.command == "rollback":
        try:
            info = pipeline.rollback(settings)
        except (pipeline.RollbackError, pipeline.IngestBusy) as exc:
            print(f"Rollback not done: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(info, indent=2, default=str) if args.json else f"Now serving {info['collection']}.")
        return 0

    progress = TqdmProgress()
    try:
        report = pipeline.reingest(settings, sources=args.sources or None, progress=progress, force=args.force,
                                   include_catalog=not args.no_catalog)
    finally:
        progress.close()
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
