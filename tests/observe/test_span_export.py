"""The API's spans leave through a child process (app.span_export): nothing of a span is lost."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app.span_export import ChildProcessExporter, _flatten, _rebuild, encode_request
from tests.observe.otlp_receiver import OtlpReceiver

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class _Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: object) -> SpanExportResult:
        self.spans.extend(spans)  # type: ignore[call-overload]
        return SpanExportResult.SUCCESS


def _some_spans() -> list[ReadableSpan]:
    """A server span continuing a caller's trace (remote parent, trace state, an error), and a
    commit span with links, an event and attributes of every kind."""
    kept = _Kept()
    provider = TracerProvider(resource=Resource.create({"service.name": "mmhub-api"}))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("mmhub", "1.0")
    carrier = {"traceparent": CALLER, "tracestate": "vendor=abc"}
    parent = TraceContextTextMapPropagator().extract(carrier)
    with tracer.start_as_current_span("POST /webhooks/bitrix24", parent, SpanKind.SERVER) as span:
        span.set_attribute("http.response.status_code", 500)
        span.set_status(Status(StatusCode.ERROR, "boom"))
        links = [Link(span.get_span_context(), {"why": "batch"})]
        with tracer.start_as_current_span("ingest group commit", links=links) as commit:
            commit.set_attributes({"n": 3, "f": 0.5, "ok": True, "ids": ("a", "b")})
            commit.add_event("retried", {"attempt": 2})
    return kept.spans


def test_a_rebuilt_span_encodes_exactly_as_the_original() -> None:
    spans = _some_spans()
    resources = [spans[0].resource]
    rebuilt = [_rebuild(_flatten(span, 0), resources) for span in spans]
    assert encode_spans(rebuilt) == encode_spans(spans)
    assert [s.name for s in rebuilt] == ["ingest group commit", "POST /webhooks/bitrix24"]


def test_the_child_encodes_flat_spans_as_the_sdk_encodes_the_spans() -> None:
    spans = _some_spans()
    other = Resource.create({"service.name": "mmhub-worker"})
    spans.append(_rebuild(_flatten(spans[0], 0), [other]))  # a second resource: its own group
    resources = [(dict(r.attributes), r.schema_url) for r in (spans[0].resource, other)]
    flat = [_flatten(span, 1 if span.resource is other else 0) for span in spans]
    encoded = encode_request(resources, flat)
    assert encoded == encode_spans(spans)
    assert [len(group.scope_spans[0].spans) for group in encoded.resource_spans] == [2, 1]
    again = encode_request(resources, flat)  # the cached attribute pairs are copied, not moved
    assert again == encoded


def test_attribute_values_that_compare_equal_keep_their_types() -> None:
    kept = _Kept()
    provider = TracerProvider(resource=Resource.create({"service.name": "mmhub-api"}))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    for value in [1, True, 1.0, "1", (1,), (True,), (1.0,), 2**70, (1, 2**70)]:
        # Over 64 bits OTLP cannot carry: the attribute is left out, the span kept, as by the SDK.
        provider.get_tracer("mmhub").start_span("x", attributes={"v": value, "k": 1}).end()
    resources = [(dict(kept.spans[0].resource.attributes), kept.spans[0].resource.schema_url)]
    for span in kept.spans:  # one at a time: a cache must not hand back an equal value's encoding
        assert encode_request(resources, [_flatten(span, 0)]) == encode_spans([span])


async def test_the_child_process_exports_every_span_to_the_endpoint() -> None:
    spans = _some_spans()
    async with OtlpReceiver() as receiver:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        try:
            exporter = ChildProcessExporter()
            assert exporter.export(spans) is SpanExportResult.SUCCESS
            assert await asyncio.to_thread(exporter.force_flush, 30_000)
            await asyncio.to_thread(exporter.shutdown, 30_000)
        finally:
            del os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert exporter.export(spans) is SpanExportResult.FAILURE  # after shutdown
    received = {span.name: span for span in receiver.spans}
    assert sorted(received) == ["POST /webhooks/bitrix24", "ingest group commit"]
    server, commit = received["POST /webhooks/bitrix24"], received["ingest group commit"]
    assert (server.service, server.kind, server.trace_id) == (
        "mmhub-api",
        "SERVER",
        "0af7651916cd43dd8448eb211c80319c",
    )
    assert server.parent_span_id == "b7ad6b7169203331"
    assert (commit.parent_span_id, commit.links) == (server.span_id, (server.span_id,))
    assert commit.attributes["n"] == 3


async def test_the_child_logs_json_lines_and_exports_what_it_can(
    capfd: pytest.CaptureFixture[str],
) -> None:
    kept = _Kept()
    provider = TracerProvider(resource=Resource.create({"service.name": "mmhub-worker"}))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    provider.get_tracer("mmhub").start_span("POST", attributes={"big": 2**70, "k": 1}).end()
    async with OtlpReceiver() as receiver:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        try:
            exporter = ChildProcessExporter()
            assert exporter.export(kept.spans) is SpanExportResult.SUCCESS
            assert await asyncio.to_thread(exporter.force_flush, 30_000)
            await asyncio.to_thread(exporter.shutdown, 30_000)
        finally:
            del os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
    [span] = receiver.spans
    assert span.attributes == {"k": 1}
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert [(line["level"], line["logger"]) for line in lines] == [("WARNING", "app.span_export")]
    assert "'big' left out" in lines[0]["message"]


def test_a_child_that_keeps_exiting_is_not_restarted_for_every_batch(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    # A child that fails at once (a broken install, say), noting each start.
    failing = [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x')"]
    exporter = ChildProcessExporter(command=failing)
    spans = _some_spans()
    exporter.export(spans)  # starts it; the frame may still fit in the pipe before it exits
    deadline = time.monotonic() + 10
    while exporter._child is not None and exporter._child.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for _ in range(5):  # batches while it rests: dropped, nothing started
        assert exporter.export(spans) is SpanExportResult.FAILURE
    assert starts.read_text() == "x"
    exporter.shutdown()
