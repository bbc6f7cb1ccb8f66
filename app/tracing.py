"""OpenTelemetry traces, configured by OpenTelemetry's own environment variables.

Every process records spans (so trace ids reach the logs and the targets' `traceparent` whatever the
configuration); they leave the process only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (OTLP over HTTP/protobuf, batched off the request
path). `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER[_ARG]` are the
SDK's to read.

A trace is carried between processes as a W3C `traceparent` string: the event row keeps the ingest
request span's, so a delivery attempt made hours later is still a span of the webhook's trace.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

tracer = trace.get_tracer("mmhub")
_propagator = TraceContextTextMapPropagator()
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Spans leave in batches of this many (the SDK's default is 512) unless
# OTEL_BSP_MAX_EXPORT_BATCH_SIZE says otherwise: the export thread holds the GIL while it flattens a
# batch, ~8 ms for 512 spans, during which no request in flight moves; 64 take ~1 ms.
_EXPORT_BATCH = 64
_provider: TracerProvider | None = None


def setup_tracing(service: str) -> TracerProvider:
    """Install this process's tracer provider once; `service` unless OTEL_SERVICE_NAME says else.

    Spans are encoded and sent by a child process (app.span_export): an event loop must not wait
    for an exporter thread that holds the GIL while it encodes.
    """
    global _provider
    if _provider is not None:
        return _provider
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler from OTEL_TRACES_*
    if any(os.environ.get(name) for name in _ENDPOINTS):
        from app.span_export import ChildProcessExporter

        batch_size = None if os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") else _EXPORT_BATCH
        processor = BatchSpanProcessor(ChildProcessExporter(), max_export_batch_size=batch_size)
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)  # its atexit hook exports what is still buffered
    _provider = provider
    return provider


def traceparent(span: trace.Span | None = None) -> str | None:
    """The W3C `traceparent` of `span` (default: the current one); None outside any valid span."""
    ctx = (span or trace.get_current_span()).get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def context_from(value: str | None) -> otel_context.Context:
    """A context whose parent is the span a `traceparent` names (an empty one if it names none)."""
    if not value:
        return otel_context.Context()
    return _propagator.extract({"traceparent": value}, context=otel_context.Context())


def batch_span(name: str, traceparents: Sequence[str | None]) -> AbstractContextManager[trace.Span]:
    """A span for work done once for many traced requests (a group commit).

    It is a child of the first request's span, so it shows in that trace, and links to all of them,
    so each trace can find the commit its event waited for.
    """
    contexts = [context_from(value) for value in traceparents if value]
    links = [trace.Link(trace.get_current_span(ctx).get_span_context()) for ctx in contexts]
    parent = contexts[0] if contexts else None
    return tracer.start_as_current_span(
        name, context=parent, links=links, attributes={"mmhub.batch_size": len(traceparents)}
    )
