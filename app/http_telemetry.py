"""The API's server span and HTTP metrics, in one pure ASGI middleware.

The span continues a caller's `traceparent` and is named after the route template
(`POST /webhooks/1c/{type}`); the metrics are `http_requests_total{method,route,status}` and
`http_request_duration_seconds`, the names the operators' dashboards use, with the template as
`route` so a path never becomes a series of its own.

Why not FastAPI's own telemetry (`FastAPI(telemetry=...)`), which makes the same span: it costs
several times more CPU per request than this (three attributes, no receive/send wrappers, no extra
exception layer), and ingest is measured against a minimal app (benchmarks/README.md).
"""

from __future__ import annotations

import time

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.telemetry import HTTP_DURATION, HTTP_REQUESTS, labelled
from app.tracing import context_from, tracer

_UNMATCHED = "unmatched"  # 404s of scanners must not each make a series
# Probes and scrapes every few seconds would bury the webhooks' traces.
UNTRACED = frozenset({"/metrics", "/health", "/healthz", "/readyz"})


class HttpTelemetry:
    """Wraps the app: a SERVER span per HTTP request (none for probes and scrapes),
    `http_requests_total` and its durations."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method: str = scope["method"]
        if scope["path"] in UNTRACED:
            span: trace.Span = trace.INVALID_SPAN
            parent = None
        else:
            parent = _caller_context(scope)
            span = tracer.start_span(method, context=parent, kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status = 500  # what the client sees if the app fails before it answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            otel_context.detach(token)
            route = scope.get("route")
            template = getattr(route, "path", None) or _UNMATCHED
            _end_span(span, method, template, status)
            labels = (method, template, str(status))
            labelled(HTTP_REQUESTS, *labels).inc()
            labelled(HTTP_DURATION, *labels).observe(time.perf_counter() - started)


def _caller_context(scope: Scope) -> otel_context.Context | None:
    """The caller's trace when it sent a `traceparent`; None makes the span a new trace's root."""
    for name, value in scope["headers"]:
        if name == b"traceparent":
            return context_from(value.decode("latin-1"))
    return None


def _end_span(span: trace.Span, method: str, template: str, status: int) -> None:
    if span.is_recording():
        span.update_name(f"{method} {template}")
        span.set_attribute("http.request.method", method)
        span.set_attribute("http.route", template)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()
