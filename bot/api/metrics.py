"""Prometheus metrics of the HTTP API, in a registry of their own (one per app, so tests can build many)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Fields of knowledge_base.vectorstore.serving_info published on /metrics (stable, bounded values only).
INDEX_INFO_LABELS = ("version", "collection", "built_at")


class ApiMetrics:
    """Prometheus metrics in a registry of their own (one per app, so tests can build many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mushroom_api_requests", "HTTP requests handled, by route template, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "mushroom_api_request_duration_seconds", "Time to answer a request, by route template.",
            ["route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.images = Counter(
            "mushroom_api_images", "Photos classified.", registry=self.registry,
        )
        self.verdicts = Counter(
            "mushroom_api_verdicts", "Identification verdicts returned.", ["verdict"], registry=self.registry,
        )
        # By model version, so a swapped-in model is watched apart from the one it replaced.
        self.predictions = Counter(
            "mushroom_api_predictions", "Identifications returned, by model version and verdict.",
            ["model_version", "verdict"], registry=self.registry,
        )
        self.abstentions = Counter(
            "mushroom_api_abstentions", "Identifications where the model was not sure (answered 'unknown').",
            ["model_version"], registry=self.registry,
        )
        self.top1_probability = Histogram(
            "mushroom_api_top1_probability", "Probability of the best guess, by model version.",
            ["model_version"], registry=self.registry,
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
        )
        self.feedback = Counter(
            "mushroom_api_feedback", "Users' votes on identifications, by the model version voted on "
            "(agreement = right / (right + wrong)).", ["model_version", "vote"], registry=self.registry,
        )
        self.batch_size = Histogram(
            "mushroom_api_batch_size", "Single-photo requests run together in one model call.",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32),
        )
        self.ready = Gauge(
            "mushroom_api_ready", "1 when the component is loaded.", ["component"], registry=self.registry,
        )
        self.model_info = Info("mushroom_api_model", "The vision model being served.", registry=self.registry)
        self.index_info = Info("mushroom_api_index", "The knowledge-base index being served.",
                               registry=self.registry)

    def count_prediction(self, result: dict) -> None:
        version = str(result.get("model_version") or "unknown")
        self.predictions.labels(version, str(result.get("verdict"))).inc()
        if result.get("abstained"):
            self.abstentions.labels(version).inc()
        top = result.get("top_k") or []
        if top:
            self.top1_probability.labels(version).observe(float(top[0]["probability"]))

    def publish(self, engine: Any) -> None:
        """Readiness and versions of what the engine serves (read at each scrape)."""
        self.ready.labels("model").set(1 if engine.classifier is not None else 0)
        self.ready.labels("index").set(1 if engine.index_loaded else 0)
        if engine.classifier is not None:
            self.model_info.info({"version": str(engine.model_version or "unknown"),
                                  "source": str(getattr(engine, "model_source", None) or "folder")})
        if engine.index_info:
            self.index_info.info({key: str(engine.index_info.get(key)) for key in INDEX_INFO_LABELS})
