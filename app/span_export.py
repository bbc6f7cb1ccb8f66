"""OTLP span export from a child process, so that encoding spans never holds a role's GIL.

The SDK's `BatchSpanProcessor` exports from a thread of the process that made the spans, and its
OTLP exporter builds the protobuf messages in Python: while it encodes a batch it holds the GIL,
and every request (or delivery) in flight on the event loop waits for it, besides the CPU it takes
from the one core the event loop can use.

`ChildProcessExporter` is the exporter the `BatchSpanProcessor` of every role calls: it flattens
each batch into plain tuples and hands it over a pipe (pickled) to `python -m app.span_export`,
which builds the OTLP request from the tuples (`encode_request`, the same message as the SDK's
encoder) and sends it with the HTTP client of the SDK's own `OTLPSpanExporter` (same environment
variables, same protocol, same retries). Batching, queue limits, `OTEL_BSP_*` and the export at
exit stay the `BatchSpanProcessor`'s. The child exits when the pipe closes (the API stopped or
died); a child that died is started again for the next batch.

Frames on the pipe are a 4-byte big-endian length and a pickle: `("spans", resources, spans)` or
`("flush",)`, which the child acknowledges with one byte on its stdout once everything before it
is exported.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from opentelemetry.exporter.otlp.proto.common._internal import _encode_value
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

log = logging.getLogger("app.span_export")  # also in the child, where __name__ is __main__

_LENGTH = struct.Struct(">I")
_FLUSHED = b"F"
_Context = tuple[int, int, bool, int, list[tuple[str, str]] | None]
_CHILD = (sys.executable, "-m", "app.span_export")
# A child that exits sooner than this after its start is failing (a broken install, say), not done:
# no other is started for _REST seconds, so that a role does not start a process for every batch.
_YOUNG = 10.0
_REST = 30.0


class ChildProcessExporter(SpanExporter):
    """Sends batches of spans to a child process that exports them over OTLP/HTTP."""

    def __init__(self, command: Sequence[str] = _CHILD) -> None:
        self._command = list(command)
        self._lock = threading.Lock()  # one writer at a time: the processor's thread, a flush
        self._child: subprocess.Popen[bytes] | None = None
        self._pid = 0  # the process that started the child (a fork must start its own)
        self._started = 0.0  # when the child started (time.monotonic)
        self._resting_until = 0.0  # no new child before this, after one exited young
        self._stopped = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped:
            return SpanExportResult.FAILURE
        resources: dict[int, int] = {}
        resource_list: list[tuple[dict[str, Any], str]] = []
        flat = []
        for span in spans:
            resource = span.resource
            index = resources.get(id(resource))
            if index is None:
                index = resources[id(resource)] = len(resource_list)
                resource_list.append((dict(resource.attributes), resource.schema_url))
            flat.append(_flatten(span, index))
        frame = pickle.dumps(("spans", resource_list, flat), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            for _ in range(2):  # a child that died since the last batch: once more on a new one
                try:
                    _write(self._running().stdin, frame)
                    return SpanExportResult.SUCCESS
                except (OSError, ValueError):
                    self._reap()
            resting = time.monotonic() < self._resting_until
        if not resting:  # a rest is announced once, when it begins
            log.warning("the span export process is not running; %d spans dropped", len(spans))
        return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until the child has exported every batch sent before this call."""
        with self._lock:
            child = self._child
            if child is None or child.poll() is not None or self._pid != os.getpid():
                return True
            try:
                _write(child.stdin, pickle.dumps(("flush",)))
                return _read_ack(child.stdout, timeout_millis / 1000)
            except (OSError, ValueError):
                return False

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Close the pipe: the child exports what it holds and exits."""
        with self._lock:
            self._stopped = True
            child, self._child = self._child, None
        if child is None or self._pid != os.getpid():
            return
        with contextlib.suppress(OSError, ValueError):
            assert child.stdin is not None
            child.stdin.close()
        try:
            child.wait(timeout_millis / 1000)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def _running(self) -> subprocess.Popen[bytes]:
        child = self._child
        if child is not None and self._pid == os.getpid():
            if child.poll() is None:
                return child
            self._reap()
        if time.monotonic() < self._resting_until:
            raise OSError("no span export process while resting")
        self._child = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
        )
        self._pid, self._started = os.getpid(), time.monotonic()
        return self._child

    def _reap(self) -> None:
        child, self._child = self._child, None
        if child is None or self._pid != os.getpid():
            return
        with contextlib.suppress(OSError, ValueError):
            assert child.stdin is not None
            child.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(1)
        lived = time.monotonic() - self._started
        if lived < _YOUNG:
            self._resting_until = time.monotonic() + _REST
            log.warning(
                "the span export process exited %.1f s after it started (status %s): "
                "spans are dropped for the next %d s",
                lived,
                child.returncode,
                _REST,
            )


def _write(pipe: IO[bytes] | None, frame: bytes) -> None:
    assert pipe is not None
    pipe.write(_LENGTH.pack(len(frame)) + frame)
    pipe.flush()


def _read_ack(pipe: IO[bytes] | None, timeout: float) -> bool:
    import select

    assert pipe is not None
    ready, _, _ = select.select([pipe], [], [], timeout)
    return bool(ready) and pipe.read(1) == _FLUSHED


# --- spans as plain tuples, and back --------------------------------------------------------------


def _context(ctx: SpanContext) -> _Context:
    state = list(ctx.trace_state.items()) if ctx.trace_state else None
    return (ctx.trace_id, ctx.span_id, ctx.is_remote, int(ctx.trace_flags), state)


def _flatten(span: ReadableSpan, resource: int) -> tuple[Any, ...]:
    context = span.get_span_context()
    assert context is not None
    scope = span.instrumentation_scope
    return (
        span.name,
        _context(context),
        None if span.parent is None else _context(span.parent),
        resource,
        dict(span.attributes) if span.attributes else None,
        [(e.name, dict(e.attributes or {}), e.timestamp) for e in span.events],
        [(_context(link.context), dict(link.attributes or {})) for link in span.links],
        span.kind.value,
        span.status.status_code.value,
        span.status.description,
        span.start_time,
        span.end_time,
        None if scope is None else (scope.name, scope.version, scope.schema_url),
    )


def _span_context(flat: _Context) -> SpanContext:
    trace_id, span_id, is_remote, flags, state = flat
    return SpanContext(
        trace_id,
        span_id,
        is_remote=is_remote,
        trace_flags=TraceFlags(flags),
        trace_state=TraceState(state) if state else None,
    )


def _rebuild(flat: tuple[Any, ...], resources: list[Resource]) -> ReadableSpan:
    name, context, parent, resource, attributes, events, links, kind = flat[:8]
    code, description, start, end, scope = flat[8:]
    status_code = StatusCode(code)
    return ReadableSpan(
        name=name,
        context=_span_context(context),
        parent=None if parent is None else _span_context(parent),
        resource=resources[resource],
        attributes=attributes,
        events=[Event(n, a, timestamp=t) for n, a, t in events],
        links=[Link(_span_context(c), a) for c, a in links],
        kind=SpanKind(kind),
        status=Status(status_code, description if status_code is StatusCode.ERROR else None),
        start_time=start,
        end_time=end,
        instrumentation_scope=None if scope is None else InstrumentationScope(*scope),
    )


# --- flat spans straight to OTLP ------------------------------------------------------------------
# The SDK's encoder, fed spans rebuilt from the tuples, took ~85 µs per span of the child's CPU
# (as much as the rest of a bare request); building the same protobuf message from the tuples, with
# the attributes that repeat made once, takes ~25 µs with the unpickling (attempt spans, two unique
# ids each). tests/observe/test_span_export.py checks that both give the same message.


def encode_request(
    resource_list: Sequence[tuple[dict[str, Any], str]], flat: Sequence[tuple[Any, ...]]
) -> ExportTraceServiceRequest:
    """The OTLP request for flattened spans, grouped by resource and scope as the SDK groups them."""
    request = ExportTraceServiceRequest()
    groups: dict[int, tuple[ResourceSpans, dict[Any, ScopeSpans]]] = {}
    for span in flat:
        resource, scope = span[3], span[12]
        group = groups.get(resource)
        if group is None:
            attributes, schema_url = resource_list[resource]
            resource_spans = request.resource_spans.add(schema_url=schema_url or "")
            resource_spans.resource.attributes.extend(_key_values(attributes))
            group = groups[resource] = (resource_spans, {})
        scopes = group[1]
        scope_spans = scopes.get(scope)
        if scope_spans is None:
            scope_spans = scopes[scope] = group[0].scope_spans.add()
            if scope is not None:
                name, version, schema_url = scope
                scope_spans.scope.name, scope_spans.scope.version = name, version or ""
                scope_spans.schema_url = schema_url or ""
        _encode_span(scope_spans.spans.add(), span)
    return request


def _encode_span(out: Any, flat: tuple[Any, ...]) -> None:
    name, context, parent, _, attributes, events, links, kind = flat[:8]
    code, description, start, end = flat[8:12]
    trace_id, span_id, _, _, state = context
    out.trace_id, out.span_id = trace_id.to_bytes(16, "big"), span_id.to_bytes(8, "big")
    out.name, out.kind = name, kind + 1  # OTLP's kinds count from UNSPECIFIED = 0
    out.start_time_unix_nano, out.end_time_unix_nano = start, end
    out.flags = _flags(parent)
    if state:
        out.trace_state = ",".join(f"{key}={value}" for key, value in state)
    if parent is not None:
        out.parent_span_id = parent[1].to_bytes(8, "big")
    if attributes:
        out.attributes.extend(_key_values(attributes))
    for event_name, event_attributes, timestamp in events:
        event = out.events.add(name=event_name, time_unix_nano=timestamp)
        event.attributes.extend(_key_values(event_attributes))
    for link_context, link_attributes in links:
        link = out.links.add(
            trace_id=link_context[0].to_bytes(16, "big"),
            span_id=link_context[1].to_bytes(8, "big"),
            flags=_flags(link_context),
        )
        link.attributes.extend(_key_values(link_attributes))
    out.status.code = code
    if description:
        out.status.message = description


def _flags(context: _Context | None) -> int:
    """The SDK's span flags: "is-remote is known", and whether the parent (or link) is remote."""
    remote = context is not None and context[2]
    return 0x100 | 0x200 if remote else 0x100


def _key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    values = []
    for key, value in attributes.items():
        try:
            values.append(
                _key_value(key, value) if type(value) in _CACHED else _new_key_value(key, value)
            )
        except Exception as exc:  # e.g. an integer over 64 bits: left out, as the SDK does
            log.warning("span attribute %r left out: %s", key, exc)
    return values


# Scalars only, and typed: 1, 1.0 and True are equal keys to a plain cache, and a tuple's items'
# types are not part of a typed cache's key.
_CACHED = frozenset({str, int, float, bool})


def _new_key_value(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=_encode_value(value))  # the SDK encoder's own value mapping


# Most attributes repeat (method, route, target, status): each such pair is built once.
_key_value = functools.lru_cache(maxsize=1024, typed=True)(_new_key_value)


# --- the child ------------------------------------------------------------------------------------


def _read_frame(pipe: IO[bytes]) -> Any:
    header = pipe.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(header)
    return pickle.loads(pipe.read(size))  # noqa: S301 - written by our own parent process


def main() -> None:
    """Export what the parent sends until it closes the pipe."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from app.logs import setup_logging

    setup_logging("WARNING")  # JSON lines on stderr, as the role that started it writes
    # Ctrl-C reaches the whole process group: the parent closes the pipe when it stops, and what
    # it had sent is still exported.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exporter = OTLPSpanExporter()
    # The exporter's HTTP client (endpoint, headers, compression, TLS, retries: all from OTel's
    # variables) sends the request encoded here; an SDK without it gets rebuilt spans instead.
    client = getattr(exporter, "_client", None)
    send = getattr(client, "export", None)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        while (frame := _read_frame(stdin)) is not None:
            if frame[0] == "flush":
                stdout.write(_FLUSHED)
                stdout.flush()
                continue
            _, resource_list, flat = frame
            if send is not None:  # it logs a failed export itself
                try:
                    send(encode_request(resource_list, flat).SerializeToString())
                except Exception:  # one bad batch must not stop the export of the next ones
                    log.exception("a batch of %d spans could not be exported", len(flat))
                continue
            resources = [
                Resource(attributes, schema_url) for attributes, schema_url in resource_list
            ]
            exporter.export([_rebuild(span, resources) for span in flat])
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
