"""Experiment tracking with MLflow: one run per `train`, its parameters, data, metrics and files.

Local by default, so a fresh machine needs no server: a SQLite database and an artifact folder
under var/mlflow (`mlflow ui --backend-store-uri sqlite:///var/mlflow/mlflow.db` shows them);
MLFLOW_TRACKING_URI points at a server instead. VISION_TRACKING=off (or `train --no-track`)
switches it off, and training works the same without it. mlflow is imported only when a run
starts, so nothing else pays for it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vision_model.cli import PROJECT_ROOT

log = logging.getLogger(__name__)

EXPERIMENT = "mushroom-vision"
LOCAL_DIR = PROJECT_ROOT / "var" / "mlflow"
OFF = {"0", "off", "false", "no"}


_switched_off = False  # inside `off()`: a command run by another that is not tracked records nothing either


def enabled_by_default() -> bool:
    return not _switched_off and os.environ.get("VISION_TRACKING", "on").strip().lower() not in OFF


@contextmanager
def off() -> Iterator[None]:
    """No tracking inside: `train --no-track` runs calibrate, which must not open a run of its own."""
    global _switched_off
    before, _switched_off = _switched_off, True
    try:
        yield
    finally:
        _switched_off = before


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{LOCAL_DIR / 'mlflow.db'}"


def _experiment_id(mlflow) -> str:
    found = mlflow.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    # Without an artifact location a local store writes ./mlruns wherever the command runs: keep
    # the files beside the database instead (a server chooses its own).
    location = None
    if tracking_uri().startswith("sqlite:///"):
        location = (Path(tracking_uri().removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return mlflow.create_experiment(EXPERIMENT, artifact_location=location)


@contextmanager
def run(name: str, enabled: bool = True, tags: dict | None = None) -> Iterator[object | None]:
    """An active MLflow run (the `mlflow` module is returned to log with), or None when off."""
    if not enabled:
        yield None
        return
    import mlflow

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=_experiment_id(mlflow), run_name=name, tags=tags or {}) as active:
        log.info("tracking run %s in %s (experiment %s)", active.info.run_id, uri, EXPERIMENT)
        yield mlflow


def flat_params(args: dict, prefix: str = "") -> dict[str, str]:
    """Dataclass arguments as MLflow parameters (lists and dicts as JSON, values cut to MLflow's limit)."""
    out = {}
    for key, value in args.items():
        text = value if isinstance(value, str) else json.dumps(value)
        out[prefix + key] = text[:6000]
    return out


def log_history(mlflow, history: list[dict]) -> None:
    """Per-epoch metrics (each history row is one epoch; non-numbers skipped)."""
    for row in history:
        step = int(row.get("epoch", 0))
        metrics = {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, int | float)}
        if metrics:
            mlflow.log_metrics(metrics, step=step)


def flat_metrics(values: dict, prefix: str = "") -> dict[str, float]:
    """Nested figures as MLflow metrics ('safety.all.dangerous_errors'); None, text and lists skipped."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_metrics(value, name + "."))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, int | float) and value == value:  # not NaN
            out[name] = float(value)
    return out


def record(command: str, args, metrics: dict | None = None, files=(), tags: dict | None = None) -> None:
    """One pipeline command's record: its arguments, figures and files, in a run of its own, or under
    `<command>.` in the active run (calibrate inside train). Off with VISION_TRACKING=off; a tracking
    failure is logged, never raised (the command's own result stands)."""
    if not enabled_by_default():
        return
    import dataclasses

    try:
        import mlflow

        def log_all(prefix: str) -> None:
            mlflow.log_params(flat_params(dataclasses.asdict(args), prefix))
            if metrics:
                mlflow.log_metrics(flat_metrics(metrics, prefix))
            for path in files:
                if Path(path).is_file():
                    mlflow.log_artifact(str(path), command)

        if mlflow.active_run() is not None:
            log_all(f"{command}.")
            return
        with run(f"{command} {(tags or {}).get('model_version', '')}".strip(), True,
                 tags={"command": command, **(tags or {})}):
            log_all("")
    except Exception as error:  # noqa: BLE001 - tracking never fails the command it records
        log.warning("tracking the %s run failed: %s", command, error)
