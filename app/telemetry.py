"""OpenTelemetry metrics, exported for Prometheus at /metrics (API) or a port (worker, relay)."""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

_meter = metrics.get_meter("mmhub")

INGESTED = _meter.create_counter(
    "mmhub_ingested_events", unit="{event}", description="Events accepted at /webhooks"
)
INGEST_REJECTED = _meter.create_counter(
    "mmhub_ingest_rejected", unit="{request}", description="Webhook requests refused, by status"
)
IDEMPOTENCY_CONFLICTS = _meter.create_counter(
    "mmhub_idempotency_conflicts",
    unit="{request}",
    description="Webhook requests refused with 409: an Idempotency-Key reused with another payload",
)
DELIVERY_ATTEMPTS = _meter.create_counter(
    "mmhub_delivery_attempts",
    unit="{attempt}",
    description="Delivery attempts by target and outcome",
)
DELIVERY_DURATION = _meter.create_histogram(
    "mmhub_delivery_duration", unit="s", description="Time a target took to answer"
)

_configured = False


def setup_metrics(service: str) -> None:
    """Install the Prometheus reader once per process (the first caller names the service)."""
    global _configured
    if _configured:
        return
    provider = MeterProvider(
        resource=Resource.create({"service.name": service}),
        metric_readers=[PrometheusMetricReader()],
    )
    metrics.set_meter_provider(provider)
    _configured = True
