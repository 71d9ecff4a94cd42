"""Prediction monitoring (issue 28): the stream of served predictions, and how it compares with the model's
evaluation.

- `PredictionLog`: one JSON line per identification (time, model version, top-k, verdict, abstained, danger
  probability, number of photos; never a user or a photo), written through the standard library's rotating
  log handler to PREDICTION_LOG (bot.engine writes it for every front door when the setting is given).
- `python -m vision_model monitor --predictions var/predictions.jsonl --report reports/vision --out DIR`:
  the recent predictions of one model version against the same model's held-out evaluation
  (`evaluate` writes reference.json beside metrics.json): the distribution of the top-1 probability
  (two-sample Kolmogorov-Smirnov test and the population stability index), the verdict mix, the
  abstention rate, and the drift of the images' embeddings (`verdict.output_embedding`: a classifier two-sample
  test, the AUC of a logistic regression separating served from evaluation embeddings). Writes
  report.json, two PNG plots and report.html; exits 1 when a check fails.
SciPy's and scikit-learn's tests are enough for these; a drift library (Evidently) would add a large
dependency for the same numbers.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import logging.handlers
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from vision_model import cli
from vision_model.verdict import EMBEDDING_DIMS

REFERENCE_FILE = "reference.json"
BINS = np.linspace(0.0, 1.0, 11)
# The checks, fixed here: p-value of the KS test, PSI (0.1 small, 0.25 large shift by the usual reading),
# how far the abstention rate may move (absolute), and the AUC at which served images are told apart from
# the evaluation's by their embeddings.
KS_P_MIN, PSI_MAX, ABSTENTION_SHIFT_MAX, EMBEDDING_AUC_MAX = 0.01, 0.25, 0.15, 0.75


def embedding_drift(reference: np.ndarray, live: np.ndarray) -> float | None:
    """Classifier two-sample test: cross-validated ROC AUC of a logistic regression told to separate the
    evaluation's embeddings from the served ones (0.5: indistinguishable; 1: wholly different). None when
    either side has fewer than 10."""
    if len(reference) < 10 or len(live) < 10:
        return None
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([reference, live])
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(live))])
    folds = StratifiedKFold(n_splits=min(5, len(reference), len(live)), shuffle=True, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))
    return float(cross_val_score(model, x, y, cv=folds, scoring="roc_auc").mean())


class PredictionLog:
    """Appends identifications as JSON lines to a rotating file (50 MB x 5), thread-safe."""

    def __init__(self, path: str | Path, max_bytes: int = 50 * 2**20, backups: int = 5) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._logger = logging.getLogger(f"mushroom.predictions.{Path(path).resolve()}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        if not self._logger.handlers:
            handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                           encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(handler)

    def record(self, result, door: str = "", photos: int = 1) -> None:
        line = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "model_version": str(result.model_version),
            "top_k": [[p.label, round(float(p.probability), 6)] for p in result.top_k],
            "verdict": result.verdict,
            "abstained": bool(result.abstained),
            "danger_probability": round(float(result.danger_probability), 6),
            "photos": photos,
            "door": door,
        }
        if getattr(result, "embedding", None) is not None:
            line["embedding"] = [round(float(x), 4) for x in result.embedding]
        self._logger.info(json.dumps(line, ensure_ascii=False))


def read_predictions(path: str | Path) -> list[dict]:
    """Every line of the log and its rotated files (oldest first); unreadable lines are skipped."""
    path = Path(path)
    files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    rows = []
    for file in [*files, path]:
        if not file.is_file():
            continue
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index over ten probability bins (a small floor keeps empty bins finite)."""
    e = np.histogram(expected, BINS)[0] / max(1, len(expected))
    a = np.histogram(actual, BINS)[0] / max(1, len(actual))
    e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def compare(recent: list[dict], reference: dict) -> dict:
    """The checks of one model version's recent predictions against its evaluation."""
    from scipy.stats import ks_2samp

    live = np.array([row["top_k"][0][1] for row in recent if row.get("top_k")], dtype=float)
    ref = np.array(reference["top1_probability"], dtype=float)
    ks = ks_2samp(ref, live) if len(live) and len(ref) else None
    live_verdicts = Counter(row["verdict"] for row in recent)
    ref_verdicts = Counter(reference["verdicts"])
    live_abstain = float(np.mean([bool(row.get("abstained")) for row in recent])) if recent else 0.0
    ref_abstain = float(reference.get("abstention_rate", 0.0))
    report = {
        "predictions": len(recent),
        "reference_photos": len(ref),
        "top1_probability": {
            "recent_mean": float(live.mean()) if len(live) else None,
            "reference_mean": float(ref.mean()) if len(ref) else None,
            "ks_statistic": float(ks.statistic) if ks else None,
            "ks_p_value": float(ks.pvalue) if ks else None,
            "psi": psi(ref, live) if len(live) else None,
        },
        "verdicts": {
            v: {"recent": live_verdicts[v] / max(1, len(recent)), "reference": ref_verdicts[v] / max(1, len(ref))}
            for v in sorted(set(live_verdicts) | set(ref_verdicts))
        },
        "abstention_rate": {"recent": live_abstain, "reference": ref_abstain},
        "embedding_drift_auc": embedding_drift(
            np.array(reference.get("embeddings") or [], dtype=float).reshape(-1, EMBEDDING_DIMS),
            np.array([row["embedding"] for row in recent if row.get("embedding")], dtype=float).reshape(
                -1, EMBEDDING_DIMS),
        ),
    }
    alerts = []
    stats = report["top1_probability"]
    if stats["ks_p_value"] is not None and stats["ks_p_value"] < KS_P_MIN:
        alerts.append(f"the top-1 probability moved (KS p = {stats['ks_p_value']:.2g} < {KS_P_MIN})")
    if stats["psi"] is not None and stats["psi"] > PSI_MAX:
        alerts.append(f"population stability index {stats['psi']:.2f} > {PSI_MAX}")
    if abs(live_abstain - ref_abstain) > ABSTENTION_SHIFT_MAX:
        alerts.append(f"abstention rate {live_abstain:.0%} against {ref_abstain:.0%} in evaluation")
    auc = report["embedding_drift_auc"]
    if auc is not None and auc > EMBEDDING_AUC_MAX:
        alerts.append(f"served images are told apart from the evaluation's by their embeddings (AUC {auc:.2f} "
                      f"> {EMBEDDING_AUC_MAX})")
    report["alerts"] = alerts
    return report


def _plots(recent: list[dict], reference: dict, report: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, ax, title: str, ylabel: str, name: str) -> Path:
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        return out / name

    live = [row["top_k"][0][1] for row in recent if row.get("top_k")]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist([reference["top1_probability"], live], bins=BINS, density=True,
            label=["evaluation (held-out photos)", "served (recent)"])
    ax.set_xlabel("top-1 probability")
    confidence = save(fig, ax, "Confidence: served vs evaluation", "density", "confidence.png")
    verdicts = report["verdicts"]
    names = list(verdicts)
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [verdicts[n]["reference"] for n in names], 0.4, label="evaluation")
    ax.bar(x + 0.2, [verdicts[n]["recent"] for n in names], 0.4, label="served")
    ax.set_xticks(x, names, rotation=20)
    return [confidence, save(fig, ax, "Verdicts: served vs evaluation", "share", "verdicts.png")]


def write_html(report: dict, plots: list[Path], out: Path) -> Path:
    images = "".join(
        f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">' for p in plots
    )
    alerts = "".join(f"<li>{html.escape(a)}</li>" for a in report["alerts"]) or "<li>none</li>"
    page = (f"<!doctype html><meta charset=utf-8><title>Model monitor: {html.escape(report['model_version'])}</title>"
            f"<h1>Model {html.escape(report['model_version'])}: {report['predictions']} predictions</h1>"
            f"<h2>Alerts</h2><ul>{alerts}</ul>{images}"
            f"<h2>Figures</h2><pre>{html.escape(json.dumps(report, indent=2))}</pre>")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


@dataclass
class MonitorArguments:
    predictions: str = field(metadata={"help": "the prediction log (PREDICTION_LOG; rotated files are read too)"})
    report: str = field(default=str(cli.REPORTS_DIR / "vision"),
                        metadata={"help": "evaluate's report directory of the served model (reference.json)"})
    model_version: str | None = field(default=None, metadata={"help": "default: the version evaluated in --report"})
    last: int = field(default=5000, metadata={"help": "compare the last N predictions of that version"})
    out: str = field(default=str(cli.REPORTS_DIR / "monitor"), metadata={"help": "report directory"})


def main(args: MonitorArguments) -> int:
    reference = json.loads((Path(args.report) / REFERENCE_FILE).read_text())
    version = args.model_version or reference["model_version"]
    recent = [row for row in read_predictions(args.predictions) if row.get("model_version") == version][-args.last:]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not recent:
        print(f"no predictions of model {version} in {args.predictions}", file=sys.stderr)
        return 1
    report = {"model_version": version, **compare(recent, reference)}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    write_html(report, _plots(recent, reference, report, out), out)
    state = "; ".join(report["alerts"]) or "no drift found"
    print(f"model {version}: {len(recent)} predictions against {report['reference_photos']} evaluation photos: "
          f"{state} -> {out / 'report.html'}")
    return 1 if report["alerts"] else 0
