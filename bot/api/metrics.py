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

    def publish(self, engine: Any) -> None:
        """Readiness and versions of what the engine serves (read at each scrape)."""
        self.ready.labels("model").set(1 if engine.classifier is not None else 0)
        self.ready.labels("index").set(1 if engine.index_loaded else 0)
        if engine.classifier is not None:
            self.model_info.info({"version": str(engine.model_version or "unknown")})
        if engine.index_info:
            self.index_info.info({key: str(engine.index_info.get(key)) for key in INDEX_INFO_LABELS})
