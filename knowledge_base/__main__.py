"""Command line for the knowledge base.

    python -m knowledge_base ask [--species LABEL] [--json] [QUESTION ...]   (no QUESTION: one per stdin line)
    python -m knowledge_base evaluate [--questions FILE] [--user-questions FILE] [--out reports/kb_eval.json]
    python -m knowledge_base species [--json]        (list + validate the catalog)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VISION_LABELS = PROJECT_ROOT / "docs" / "vision_labels_ge2.txt"


@dataclass
class AskArgs:
    question: list[str]
    species: str | None
    json: bool
    catalog_only: bool


def _open_answerer(catalog_only: bool):
    from knowledge_base.answer import Answerer

    if catalog_only:
        return Answerer(None)
    from config import get_settings

    settings = get_settings()
    # The knowledge base reads the index; building it is ingest's job (one direction between the two).
    try:
        from knowledge_base.vectorstore import serving_info

        available = serving_info(settings).get("available")
    except Exception as exc:  # a Chroma server that does not answer: the catalog still answers
        print(f"knowledge base: index unavailable ({exc}); answering from the species catalog only",
              file=sys.stderr)
    else:
        if not available:
            print("knowledge base: no index yet - answering from the species catalog only; build it with "
                  "`python -m ingest run` (the console bot builds it on its first start)", file=sys.stderr)
    return Answerer.from_settings(settings)


def _print_answer(answer, as_json: bool) -> None:
    if as_json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False), flush=True)
        return
    verdict = f" [{answer.verdict}]" if answer.verdict else ""
    species = f"{answer.species}{verdict}: " if answer.species else ""
    print(f"{species}{answer.answer}")
    if answer.more:
        print(f"More: {answer.more}")
    for c in answer.citations:
        print(f"  - {c.title} ({c.source}): {c.excerpt}")
    print(flush=True)


def cmd_ask(args: AskArgs) -> int:
    answerer = _open_answerer(args.catalog_only)
    if args.question:  # the answerer cleans the text (invalid Unicode, control characters, length)
        _print_answer(answerer.ask(" ".join(args.question), species=args.species), args.json)
        return 0
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = answerer.ask(line, species=args.species)
        except Exception as exc:  # one bad line must not end a batch
            print(f"knowledge base: could not answer {line.strip()[:60]!r}: {exc}", file=sys.stderr)
            from knowledge_base.answer_types import Answer

            answer = Answer("Sorry, something went wrong answering that question. "
                            "Treat any unidentified mushroom as poisonous.", None, None, [], True)
        _print_answer(answer, args.json)
    return 0


def cmd_species(as_json: bool) -> int:
    from knowledge_base.catalog import CATALOG_DIR, SEVERITY, load_profile

    profiles, errors = {}, {}
    for path in sorted(CATALOG_DIR.glob("*.yaml")):
        try:
            profiles[path.stem] = load_profile(path)
        except Exception as exc:
            errors[path.name] = " ".join(str(exc).split())[:500]
    wanted = [w.strip() for w in VISION_LABELS.read_text().splitlines() if w.strip()] if VISION_LABELS.exists() else []
    missing = [label for label in wanted if label not in profiles]
    # Lookalike labels that point at nothing are worth knowing, but are not errors.
    dangling = sorted({lk.species for p in profiles.values() for lk in p.lookalikes
                       if "_" in lk.species and lk.species not in profiles})
    if as_json:
        print(json.dumps({"count": len(profiles), "errors": errors, "missing_vision_labels": missing,
                          "dangling_lookalikes": dangling,
                          "species": {k: p.edibility for k, p in profiles.items()}}, indent=2))
    else:
        for label, p in sorted(profiles.items(), key=lambda kv: (SEVERITY[kv[1].edibility], kv[0])):
            print(f"{p.edibility:20s} {label:35s} {p.display_name}")
        print(f"\n{len(profiles)} species; {len(errors)} with schema errors; "
              f"{len(missing)} of {len(wanted)} vision labels missing from the catalog")
        for name, err in errors.items():
            print(f"ERROR {name}: {err}")
        if missing:
            print("missing: " + ", ".join(missing))
        if dangling:
            print(f"lookalike labels without a profile ({len(dangling)}): " + ", ".join(dangling))
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m knowledge_base", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="answer a question (or one per stdin line)")
    ask.add_argument("question", nargs="*", help="the question; omit to read one question per line from stdin")
    ask.add_argument("--species", help="catalog label of the mushroom in context (e.g. from the last photo)")
    ask.add_argument("--json", action="store_true", help="print one JSON object per answer")
    ask.add_argument("--catalog-only", action="store_true", help="do not open the index (catalog facts only)")
    ev = sub.add_parser("evaluate", help="run the evaluation questions and write a JSON report")
    ev.add_argument("--questions", type=Path, default=None, help="questions YAML (default: the bundled set)")
    ev.add_argument("--user-questions", type=Path, default=None,
                    help="the user-phrased set (default knowledge_base/eval/user_questions.yaml)")
    ev.add_argument("--out", type=Path, default=PROJECT_ROOT / "reports" / "kb_eval.json")
    ev.add_argument("--catalog-only", action="store_true", help="evaluate without the index")
    sp = sub.add_parser("species", help="list and validate the species catalog")
    sp.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "ask":
        return cmd_ask(AskArgs(args.question, args.species, args.json, args.catalog_only))
    if args.command == "species":
        return cmd_species(args.json)
    from knowledge_base.evaluate import EvalArgs, run_evaluation

    return run_evaluation(EvalArgs(questions=args.questions, user_questions=args.user_questions, out=args.out,
                                    catalog_only=args.catalog_only),
                          answerer=_open_answerer(args.catalog_only))


if __name__ == "__main__":
    sys.exit(main())
