"""The model registry (MLflow's): register evaluated models, promote one by the release rule, roll back,
and resolve `models:/<name>@champion` for serving (issue 28).

    python -m vision_model register --model var/runs/vision/model --report reports/vision
    python -m vision_model promote --model 3 [--data ... --splits ...]   # or --model latest
    python -m vision_model rollback

- `register` copies the model directory into the tracking store as a run's artifacts and creates a
  version of the registered model `mushroom-vision` ($VISION_REGISTERED_MODEL) tagged with the
  model's version, dataset version and, given evaluate's report, its figures.
- `promote` measures the challenger and the current champion on the same photos: the held-out split
  of --data / --splits (as `evaluate` reads them), less every photo either model learnt from (by
  the hashes in their dataset manifests), plus the same simulated open set. It moves the alias
  `champion` only when vision_model.release_rule allows it, and says which figure failed otherwise.
  The champions so far are kept in the registered model's tag `champion_history`.
- `rollback` moves `champion` back to the previous one.
- Serving (bot.engine) reads MODEL_URI: a folder, or `models:/<name>@champion`, which
  `local_model_dir` downloads once into <cache>/registry/<name>/<version>-<run>; `champion_version`
  is the cheap look the engine repeats to notice a moved alias.
The store is MLflow's: var/mlflow by default (vision_model.tracking), MLFLOW_TRACKING_URI for a server.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from vision_model import cli, tracking
from vision_model.heldout import HeldOutArguments
from vision_model.release_rule import Figures, release_rule

log = logging.getLogger(__name__)

CHAMPION = "champion"
HISTORY_TAG = "champion_history"


def model_name() -> str:
    return os.environ.get("VISION_REGISTERED_MODEL", "mushroom-vision")


def _client():
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    return mlflow.MlflowClient()


# --- serving: models:/<name>@<alias> or models:/<name>/<version> ----------------------------------
def is_registry_uri(uri: str | os.PathLike | None) -> bool:
    return str(uri or "").startswith("models:/")


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, alias, None
    name, _, version = rest.partition("/")
    return name, None, version or None


def champion_version(uri: str) -> str:
    """The version a models:/ URI names now (an alias is looked up: a moved alias gives another)."""
    name, alias, version = parse_uri(uri)
    client = _client()
    return str(client.get_model_version_by_alias(name, alias).version if alias else version)


def download(name: str, version: str) -> Path:
    """The registered version's model directory, downloaded once into the cache (complete or absent)."""
    import mlflow

    # Keyed by the run too: a registry rebuilt elsewhere may reuse a version number for another model.
    run_id = _client().get_model_version(name, str(version)).run_id or "norun"
    target = Path(cli.cache_dir("registry")) / name / f"{version}-{run_id[:12]}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{version}-{uuid.uuid4().hex[:8]}"
    try:
        mlflow.set_tracking_uri(tracking.tracking_uri())
        mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(staging))
        staging.rename(target)  # whole or not at all: a half download is never loaded
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def local_model_dir(uri: str) -> tuple[Path, str]:
    """(model directory, registry version) of a models:/ URI."""
    version = champion_version(uri)
    return download(parse_uri(uri)[0], version), version


# --- register --------------------------------------------------------------------------------------
@dataclass
class RegisterArguments:
    model: str = field(metadata={"help": "model directory to register (train's <output_dir>/model)"})
    report: str | None = field(
        default=None, metadata={"help": "evaluate's report directory for it (its figures become tags)"}
    )


def register(args: RegisterArguments) -> str:
    import mlflow

    from vision_model.release import read_train_info
    from vision_model.verdict import SafetyConfig

    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a model directory (no config.json)")
    version = SafetyConfig.load(model_dir).version
    info = read_train_info(model_dir)
    tags = {"model_version": str(version), "dataset_version": str(info.get("dataset", {}).get("version", ""))}
    if args.report:
        metrics = json.loads((Path(args.report) / "metrics.json").read_text())
        if metrics.get("held_out") is False:
            raise ValueError(f"{args.report} holds training figures (NOT held out): register held-out ones")
        tags.update(Figures.from_metrics(metrics).as_tags())
    with tracking.run(f"register {version}", True, tags={"command": "register", **tags}):
        mlflow.log_artifacts(str(model_dir), "model")
        run = mlflow.active_run()
    client = _client()
    name = model_name()
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description="Mushroom photo classifier (vision_model)")
    registered = client.create_model_version(name, source=f"{run.info.artifact_uri}/model",
                                             run_id=run.info.run_id, tags=tags)
    print(f"registered {name} version {registered.version} ({version})")
    return str(registered.version)


# --- promote and rollback --------------------------------------------------------------------------
@dataclass
class PromoteArguments(HeldOutArguments):
    model: str = field(default="latest", metadata={"help": "registered version to promote (a number, or latest)"})
    split: str = field(default="test", metadata={"help": "held-out split both models are measured on"})
    out: str = field(default=str(cli.REPORTS_DIR / "registry"), metadata={"help": "reports of both models"})


def _history(client, name: str) -> list[str]:
    return json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))


def _common_photos(args: PromoteArguments, dirs: dict[str, Path], work: Path) -> tuple[Path, int]:
    """A splits.json whose `split` holds only photos none of the models (version -> directory) learnt from."""
    from vision_model.data import file_sha256, load_splits
    from vision_model.dataset import learnt_hashes
    from vision_model.release import read_train_info, trained_splits

    every = load_splits(args.data_dir, args.splits, args.seed, args.min_photos)
    learnt: set[str] = set()
    for version, model_dir in dirs.items():
        hashes = learnt_hashes(model_dir)
        if hashes is None and args.split in trained_splits(read_train_info(model_dir)):
            raise ValueError(f"version {version} keeps no list of the photos it learnt from and learnt its "
                             f"{args.split} split")
        learnt |= hashes or set()
    kept = [(p, lab) for p, lab in every[args.split] if file_sha256(p) not in learnt]
    # Absolute paths under the root "/" (evaluate is given data_dir=["/"]); the other splits stay for the
    # per-class photo counts that decide which classes are "main".
    out = {name: [[str(p).lstrip("/"), lab] for p, lab in (kept if name == args.split else items)]
           for name, items in every.items()}
    out["roots"] = ["/"]
    path = work / "common-splits.json"
    path.write_text(json.dumps(out))
    return path, len(kept)


def _measure(args: PromoteArguments, model_dir: Path, splits: Path, out: Path) -> Figures:
    from vision_model import evaluate

    metrics = evaluate.main(evaluate.EvaluateArguments(
        model=str(model_dir), data_dir=["/"], splits=str(splits), seed=args.seed, min_photos=args.min_photos,
        synthetic_images=args.synthetic_images, backend=args.backend, cache_dir=args.cache_dir,
        out=str(out), split=args.split, parity_backend=""))  # the rule reads no parity: one pass per model
    return Figures.from_metrics(metrics)


def promote(args: PromoteArguments) -> int:
    client, name = _client(), model_name()
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    if not versions:
        print(f"promote refused: nothing is registered under {name}", file=sys.stderr)
        return 1
    challenger = str(versions[-1] if args.model == "latest" else int(args.model))
    history = _history(client, name)
    champion = client.get_registered_model(name).aliases.get(CHAMPION)  # the alias is the truth; history for rollback
    champion = None if champion is None else str(champion)
    if champion == challenger:
        print(f"version {challenger} is already the champion")
        return 0
    dirs = {version: download(name, version) for version in (challenger, champion) if version}
    with tempfile.TemporaryDirectory() as work:
        try:
            splits, n = _common_photos(args, dirs, Path(work))
        except ValueError as error:
            print(f"promote refused: {error}", file=sys.stderr)
            return 1
        if n == 0:
            print("promote refused: no held-out photo that neither model learnt from", file=sys.stderr)
            return 1
        figures = {v: _measure(args, d, splits, Path(args.out) / f"version-{v}") for v, d in dirs.items()}
    new, old = figures[challenger], figures.get(champion)
    reasons = release_rule(new, old)
    client.set_model_version_tag(name, challenger, "promotion", "refused: " + "; ".join(reasons) if reasons else "promoted")
    if reasons:
        print(f"promote refused: version {challenger} ({new.summary()}) against the champion"
              + (f" version {champion} ({old.summary()})" if old else "") + ":", file=sys.stderr)
        for reason in reasons:
            print(f"  - {reason}", file=sys.stderr)
        return 1
    client.set_registered_model_alias(name, CHAMPION, challenger)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history + [challenger]))
    print(f"promoted version {challenger} to {CHAMPION}: {new.summary()}"
          + (f" (was version {champion}: {old.summary()})" if old else " (the first champion)"))
    return 0


@dataclass
class RollbackArguments:
    pass


def rollback(args: RollbackArguments) -> int:
    client, name = _client(), model_name()
    history = _history(client, name)
    if len(history) < 2:
        print("rollback refused: there is no earlier champion to go back to", file=sys.stderr)
        return 1
    current = history.pop()
    client.set_registered_model_alias(name, CHAMPION, history[-1])
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    print(f"rolled back {CHAMPION} from version {current} to version {history[-1]}")
    return 0
