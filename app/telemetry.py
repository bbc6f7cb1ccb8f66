"""The hub's Prometheus metrics (CONTRACT § Observability), one registry per process.

The API serves them at /metrics, the relay and the worker on `MMHUB_METRICS_PORT`. They are
prometheus_client instruments rather than OpenTelemetry metrics: an increment costs a fraction of
OpenTelemetry's, which matters on the ingest path, and the names are exactly the contract's (no unit or scope
suffixes added). Traces are OpenTelemetry's (`app.tracing`).

Gauges read from PostgreSQL (backlog, lag, pauses, breakers) are computed by the relay every few
seconds (`dispatch.gauges`), never per scrape: a scrape only reads the last snapshot.
"""

from __future__ import annotations

import functools
from typing import TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

# `*_created` series double every counter's output and no dashboard or alert reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Seconds: ingest replies are milliseconds, deliveries up to the 30 s timeout.
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Accepted -> delivered spans retries hours apart.
_END_TO_END = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 12 * 3600)

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests served, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to the end of the reply, by method, route template and status",
    ["method", "route", "status"],
    buckets=_LATENCY,
)
INGESTED = Counter(
    "mmhub_ingested_events",
    "Events accepted at /webhooks (duplicates not counted)",
    ["source", "type"],
)
INGEST_REJECTED = Counter(
    "mmhub_ingest_rejected", "Webhook requests refused, by source and status", ["source", "status"]
)
COMMIT_DELAY_WAITS = Counter(
    "mmhub_ingest_commit_delay_waits",
    "Group commits that waited MMHUB_INGEST_COMMIT_DELAY for more requests to share them",
)
IDEMPOTENCY_CONFLICTS = Counter(
    "mmhub_idempotency_conflicts",
    "Webhook requests refused with 409: an Idempotency-Key reused with another payload",
    ["source"],
)
DELIVERY_ATTEMPTS = Counter(
    "mmhub_delivery_attempts",
    "Delivery attempts by target, outcome (delivered, retry, dead) and HTTP status or error class",
    ["target", "outcome", "status"],
)
DELIVERY_DURATION = Histogram(
    "mmhub_delivery_duration_seconds",
    "Time a target took to answer one attempt",
    ["target"],
    buckets=_LATENCY,
)
EVENT_TO_DELIVERY = Histogram(
    "mmhub_event_to_delivery_seconds",
    "From the event's acceptance to its successful delivery",
    ["target"],
    buckets=_END_TO_END,
)
DEAD = Counter("mmhub_dead", "Deliveries that went dead", ["target"])
SUPPRESSED = Counter(
    "mmhub_suppressed", "Deliveries suppressed as the hub's own echo (echo_user_id)", ["target"]
)
SPOOL_EVENTS = Gauge(
    "mmhub_spool_events",
    "Events waiting in this API process's outage spool until PostgreSQL is back",
)
BACKLOG = Gauge(
    "mmhub_deliveries",
    "Deliveries not finished, by target and status (computed by the relay)",
    ["target", "status"],
)
OLDEST_DUE = Gauge(
    "mmhub_oldest_due_seconds",
    "Age of the oldest delivery that is due and waiting, per target (0 when none; the relay's)",
    ["target"],
)
CIRCUIT_OPEN = Gauge(
    "mmhub_circuit_open", "1 while the target's circuit breaker is open (the relay's)", ["target"]
)
TARGET_PAUSED = Gauge(
    "mmhub_target_paused", "1 while an operator holds the target (the relay's)", ["target"]
)


def labelled(metric: M, *labels: str) -> M:
    """`metric.labels(*labels)`, looked up once per label set: `labels()` takes a lock and builds
    its key on every call, which the ingest path paid on every request."""
    return cast(M, _labelled(metric, labels))


@functools.lru_cache(maxsize=4096)  # routes x statuses, sources x event types: a few hundred
def _labelled(metric: MetricWrapperBase, labels: tuple[str, ...]) -> MetricWrapperBase:
    return metric.labels(*labels)


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_series() -> frozenset[str]:
    """The series names the instruments above expose (`_total`, `_bucket`, … included): the one
    list a dashboard or an alert may read from, besides Prometheus' own `up`."""
    names: set[str] = set()
    for instrument in globals().values():
        if isinstance(instrument, MetricWrapperBase):
            for family in instrument.describe():
                names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return frozenset(names)
