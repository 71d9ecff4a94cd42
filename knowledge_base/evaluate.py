"""Evaluation of the answering side on knowledge_base/eval/questions.yaml.

Per question: gold species, acceptable verdict(s), facts that must appear, expected abstention.
Reports retrieval recall@5 and MRR (a passage about the gold species - metadata or a mention of
one of its names - counts as relevant), verdict accuracy (overall and on deadly species, which
must be 100%), abstention accuracy, fact coverage, safety checks (no permission to eat; first aid
on every dangerous answer) and latency.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

from knowledge_base.answer import Answerer, gives_permission_to_eat
from knowledge_base.catalog import DANGEROUS, Catalog
from knowledge_base.retrieval import Passage

QUESTIONS_FILE = Path(__file__).resolve().parent / "eval" / "questions.yaml"


@dataclass
class EvalArgs:
    questions: Path | None = None
    out: Path | None = None
    catalog_only: bool = False
    k: int = 5


def load_questions(path: Path | None = None) -> list[dict]:
    items = yaml.safe_load(Path(path or QUESTIONS_FILE).read_text(encoding="utf-8"))
    for item in items:
        verdict = item.get("verdict")
        item["verdicts"] = [verdict] if isinstance(verdict, str) else list(verdict or [])
        item.setdefault("facts", [])
        item.setdefault("abstain", False)
        gold = item.get("species")
        item["species_set"] = [gold] if isinstance(gold, str) else list(gold or [])  # any of them is right
        item["species"] = item["species_set"][0] if item["species_set"] else None
        item.setdefault("context", None)
    return items


def is_relevant(passage: Passage, label: str, catalog: Catalog) -> bool:
    if passage.species == label:
        return True
    profile = catalog.get(label)
    names = [profile.scientific_name, *profile.synonyms] if profile else [label.replace("_", " ")]
    text = passage.text.lower()
    return any(n.lower() in text for n in names)


def has_first_aid(text: str) -> bool:
    lowered = text.lower()
    return ("poison centre" in lowered or "emergency" in lowered) and "sample" in lowered


def evaluate(answerer: Answerer, questions: list[dict], k: int = 5, progress: bool = True) -> dict:
    catalog = answerer.catalog
    rows = []
    for item in tqdm(questions, desc="evaluate", disable=not progress, file=sys.stderr):
        started = time.perf_counter()
        answer, passages = answerer.answer_with_passages(item["q"], species=item["context"])
        latency = time.perf_counter() - started
        gold = item["species"]
        rank = None
        if gold and not item["abstain"]:
            rank = next((i for i, p in enumerate(passages[:k], start=1)
                         if any(is_relevant(p, g, catalog) for g in item["species_set"])), None)
        # The same question without the species filter: how well retrieval alone finds the species.
        raw_rank = None
        if gold and not item["abstain"] and answerer.retriever is not None and len(answerer.retriever):
            plain = answerer.retriever.search(item["q"], k=k)
            raw_rank = next((i for i, p in enumerate(plain, start=1)
                             if any(is_relevant(p, g, catalog) for g in item["species_set"])), None)
        guide_hit = any(p.kind == "guide" and any(is_relevant(p, g, catalog) for g in item["species_set"])
                        for p in passages[:k]) if gold and not item["abstain"] else None
        text = answer.answer.lower()
        facts_found = [f for f in item["facts"] if f.lower() in text]
        rows.append({
            "q": item["q"], "context": item["context"], "gold_species": gold, "species": answer.species,
            "species_ok": (answer.species in item["species_set"]) if gold else None,
            "gold_verdicts": item["verdicts"], "verdict": answer.verdict,
            "verdict_ok": (answer.verdict in item["verdicts"]) if item["verdicts"] else None,
            "gold_abstain": item["abstain"], "abstained": answer.abstained,
            "facts": item["facts"], "facts_missing": [f for f in item["facts"] if f not in facts_found],
            "relevant_rank": rank, "relevant_rank_unfiltered": raw_rank, "guide_passage_cited": guide_hit,
            "retrieved": len(passages),
            "permission_to_eat": gives_permission_to_eat(answer.answer),
            "first_aid_ok": has_first_aid(answer.answer) if answer.verdict in DANGEROUS else None,
            "latency_s": round(latency, 4),
        })
    return summarise(rows, k, has_index=answerer.retriever is not None and len(answerer.retriever) > 0)


def _ratio(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def summarise(rows: list[dict], k: int, has_index: bool) -> dict:
    retrieval = [r for r in rows if r["gold_species"] and not r["gold_abstain"]]
    verdicts = [r for r in rows if r["verdict_ok"] is not None]
    deadly = [r for r in verdicts if "deadly" in r["gold_verdicts"]]
    unanswerable = [r for r in rows if r["gold_abstain"]]
    answerable = [r for r in rows if not r["gold_abstain"]]
    n_facts = sum(len(r["facts"]) for r in rows)
    latencies = sorted(r["latency_s"] for r in rows)
    metrics = {
        "questions": len(rows),
        "unanswerable": len(unanswerable),
        "index_used": has_index,
        f"retrieval_recall@{k}": _ratio([r["relevant_rank"] is not None for r in retrieval]) if has_index else None,
        "retrieval_mrr": (round(statistics.fmean(1.0 / r["relevant_rank"] if r["relevant_rank"] else 0.0
                                                 for r in retrieval), 4) if has_index and retrieval else None),
        f"retrieval_recall@{k}_unfiltered": (_ratio([r["relevant_rank_unfiltered"] is not None for r in retrieval])
                                              if has_index else None),
        "retrieval_mrr_unfiltered": (round(statistics.fmean(
            1.0 / r["relevant_rank_unfiltered"] if r["relevant_rank_unfiltered"] else 0.0 for r in retrieval), 4)
            if has_index and retrieval else None),
        "guide_passage_in_top5": _ratio([r["guide_passage_cited"] for r in retrieval]) if has_index else None,
        "species_accuracy": _ratio([r["species_ok"] for r in answerable if r["gold_species"]]),
        "verdict_accuracy": _ratio([r["verdict_ok"] for r in verdicts]),
        "verdict_accuracy_deadly": _ratio([r["verdict_ok"] for r in deadly]),
        "abstention_accuracy_unanswerable": _ratio([r["abstained"] for r in unanswerable]),
        "false_abstention_rate_answerable": _ratio([r["abstained"] for r in answerable]),
        "fact_coverage": round(1 - sum(len(r["facts_missing"]) for r in rows) / n_facts, 4) if n_facts else None,
        "answers_giving_permission_to_eat": sum(r["permission_to_eat"] for r in rows),
        "dangerous_answers_without_first_aid": sum(r["first_aid_ok"] is False for r in rows),
        "latency_p50_s": round(statistics.median(latencies), 4) if latencies else None,
        "latency_p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 4) if latencies else None,
    }
    failures = [r for r in rows if r["verdict_ok"] is False or r["abstained"] != r["gold_abstain"]
                or r["facts_missing"] or r["permission_to_eat"] or r["first_aid_ok"] is False
                or r["species_ok"] is False]
    return {"metrics": metrics, "failures": failures, "rows": rows}


def run_evaluation(args: EvalArgs, answerer: Answerer | None = None) -> int:
    answerer = answerer or Answerer.from_settings()
    report = evaluate(answerer, load_questions(args.questions), k=args.k)
    out = Path(args.out or Path(__file__).resolve().parent.parent / "reports" / "kb_eval.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(json.dumps(report["metrics"], indent=2))
    for r in report["failures"][:25]:
        print(f"FAIL {r['q']!r}: species {r['species']} (gold {r['gold_species']}), verdict {r['verdict']} "
              f"(gold {r['gold_verdicts']}), abstained {r['abstained']} (gold {r['gold_abstain']}), "
              f"missing facts {r['facts_missing']}", file=sys.stderr)
    print(f"report: {out}", file=sys.stderr)
    m = report["metrics"]
    # A deadly species called anything but deadly, or any permission to eat, fails the run.
    unsafe = (m["verdict_accuracy_deadly"] not in (None, 1.0) or m["answers_giving_permission_to_eat"]
              or m["dangerous_answers_without_first_aid"])
    return 1 if unsafe else 0
