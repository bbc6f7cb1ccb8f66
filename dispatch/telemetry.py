"""What a delivery attempt tells the traces and the metrics.

Each attempt is an HTTP CLIENT span in the trace of the webhook that brought its event (the event
row keeps that request span's `traceparent`), and the target receives the attempt span's own
`traceparent`, so the target's spans hang under it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from app.telemetry import (
    DEAD,
    DELIVERY_ATTEMPTS,
    DELIVERY_DURATION,
    EVENT_TO_DELIVERY,
    SUPPRESSED,
    labelled,
)
from app.tracing import context_from, tracer
from dispatch.targets.base import AttemptResult

# The relay's hand-over span that enqueued the running drain job: every attempt links to it.
handover: ContextVar[list[trace.Link] | None] = ContextVar("handover", default=None)


def handover_links(relay_traceparent: str | None) -> list[trace.Link] | None:
    """The link to the relay's hand-over span, parsed once for a whole drain job."""
    if not relay_traceparent:
        return None
    return [trace.Link(trace.get_current_span(context_from(relay_traceparent)).get_span_context())]


@contextmanager
def attempt_span(
    target: str, event_traceparent: str | None, attributes: dict[str, str | int]
) -> Iterator[trace.Span]:
    """The CLIENT span of one attempt, a child of the event's ingest span when it has one, linked
    to the relay's hand-over that started its drain job.

    Not made the current span: nothing inside an attempt logs or makes spans, and attaching a
    context costs as much as the rest of the span on the worker's hot path.
    """
    span = tracer.start_span(
        "POST",
        context=context_from(event_traceparent),
        kind=SpanKind.CLIENT,
        links=handover.get(),
        attributes={"http.request.method": "POST", "mmhub.target": target, **attributes},
    )
    try:
        yield span
    finally:
        span.end()


def record_attempt(span: trace.Span, target: str, result: AttemptResult) -> None:
    """Count the attempt, time it, and describe it on its span."""
    status = str(result.http_status) if result.http_status else (result.error_class or "none")
    labelled(DELIVERY_ATTEMPTS, target, result.outcome, status).inc()
    labelled(DELIVERY_DURATION, target).observe(result.duration_ms / 1000)
    if not span.is_recording():
        return
    span.set_attribute("mmhub.outcome", result.outcome)
    if result.http_status is not None:
        span.set_attribute("http.response.status_code", result.http_status)
    if result.outcome != "delivered":
        span.set_attribute("error.type", result.error_class or "unknown")
        span.set_status(Status(StatusCode.ERROR, result.error_class))


def record_settled(target: str, state: str, received_at: datetime, now: datetime) -> None:
    """A delivery reached `delivered` (its end-to-end time counts) or `dead` (it counts)."""
    if state == "delivered":
        labelled(EVENT_TO_DELIVERY, target).observe(max((now - received_at).total_seconds(), 0.0))
    elif state == "dead":
        DEAD.labels(target).inc()
    elif state == "suppressed":
        SUPPRESSED.labels(target).inc()


def declare_targets(targets: list[str]) -> None:
    """Show every target's dead count from 0, so the first dead delivery is an increase."""
    for target in targets:
        DEAD.labels(target)
