"""Prometheus metrics: requests, latencies per endpoint and per funnel stage, errors, skips.

Each app gets a registry of its own (tests build many apps in one process). With several
uvicorn workers each worker reports its own numbers; scrape them per process or put the
service behind one worker per container.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from recfunnel.funnel import Trace

disable_created_metrics()  # the *_created series only double the output
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "recfunnel_http_requests", "HTTP requests by route template, method and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "recfunnel_http_request_seconds", "request latency by route template", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.errors = Counter("recfunnel_http_errors", "unhandled errors (5xx) by route", ["route", "kind"], registry=r)
        self.stage = Histogram(
            "recfunnel_stage_seconds", "funnel stage latency per recommendation", ["stage"], buckets=STAGE_BUCKETS, registry=r
        )
        self.skipped = Counter("recfunnel_stage_skipped", "stages or channels skipped (errors, budgets)", ["stage"], registry=r)
        self.events = Counter("recfunnel_events", "events received", ["result"], registry=r)
        self.reloads = Counter("recfunnel_reloads", "artifact reloads", ["result"], registry=r)
        self.version = Gauge("recfunnel_artifact_info", "the artifact version served (value 1)", ["version"], registry=r)
        self._version: str | None = None

    def observe_trace(self, trace: Trace) -> None:
        self.observe_stages(trace.ms, trace.skipped)

    def observe_stages(self, ms: dict[str, float], skipped: dict[str, str]) -> None:
        for stage, v in ms.items():
            self.stage.labels(stage).observe(v / 1000)
        for stage in skipped:
            self.skipped.labels(stage).inc()

    def set_version(self, version: str) -> None:
        if version != self._version:
            if self._version is not None:
                self.version.remove(self._version)
            self.version.labels(version).set(1)
            self._version = version

    def render(self) -> bytes:
        return generate_latest(self.registry)
