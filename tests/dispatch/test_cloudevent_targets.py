"""onec, walking_warehouse and http targets against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import TypeAdapter

from app.hubconfig import Target as TargetSpec
from dispatch.targets import build_target
from dispatch.targets.base import Outbound, Target
from dispatch.targets.transport import parse_retry_after
from tests.fake_target import FakeTarget

MakeOutbound = Callable[..., Outbound]
_SPEC: TypeAdapter[Any] = TypeAdapter(TargetSpec)


def target(kind: str, url: str, **extra: Any) -> Target:
    return build_target(kind, _SPEC.validate_python({"kind": kind, "url": url, **extra}))


BASIC = {"type": "basic", "username": "обмен", "password": "pa55-w0rd:x"}
BEARER = {"type": "bearer", "token": "ww-token-123456"}


@pytest.mark.parametrize("kind", ["onec", "walking_warehouse", "http"])
async def test_success_body_and_headers(
    kind: str, fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    out = make_outbound()
    result = await target(kind, fake_target.url + "/in").send(session, out, 5)

    assert (result.outcome, result.http_status, result.error_class) == ("delivered", 200, None)
    assert result.response_excerpt == '{"ok":true}'
    [request] = fake_target.requests
    assert (request.method, request.path) == ("POST", "/in")
    assert request.json() == out.event
    assert request.body == orjson.dumps(out.event)
    assert request.headers["Content-Type"] == "application/cloudevents+json"
    assert request.headers["Idempotency-Key"] == str(out.delivery_id)
    assert request.headers["X-Request-Id"] == "req-42"
    assert request.headers["traceparent"] == out.traceparent
    assert "Authorization" not in request.headers
    assert "webhook-signature" not in request.headers


async def test_same_idempotency_key_on_every_attempt(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(503)
    erp = target("onec", fake_target.url)
    delivery_id = uuid.uuid4()
    first = await erp.send(session, make_outbound(delivery_id=delivery_id), 5)
    second_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    second = await erp.send(
        session, make_outbound(delivery_id=delivery_id, traceparent=second_trace), 5
    )

    assert (first.outcome, second.outcome) == ("retry", "delivered")
    keys = [r.headers["Idempotency-Key"] for r in fake_target.requests]
    assert keys == [str(delivery_id), str(delivery_id)]
    assert fake_target.requests[1].headers["traceparent"] == second_trace


async def test_no_request_id_no_header(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    await target("http", fake_target.url).send(session, make_outbound(request_id=None), 5)
    assert "X-Request-Id" not in fake_target.requests[0].headers


async def test_basic_auth_utf8(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    await target("onec", fake_target.url, auth=BASIC).send(session, make_outbound(), 5)
    scheme, _, encoded = fake_target.requests[0].headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "обмен:pa55-w0rd:x"


async def test_bearer_auth(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    await target("walking_warehouse", fake_target.url, auth=BEARER).send(
        session, make_outbound(), 5
    )
    assert fake_target.requests[0].headers["Authorization"] == "Bearer ww-token-123456"


async def test_walking_warehouse_409_is_delivered(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(409, {"error": "duplicate"})
    result = await target("walking_warehouse", fake_target.url).send(session, make_outbound(), 5)
    assert (result.outcome, result.http_status, result.error_class) == ("delivered", 409, None)


async def test_409_elsewhere_is_dead(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(409)
    result = await target("onec", fake_target.url).send(session, make_outbound(), 5)
    assert (result.outcome, result.error_class) == ("dead", "http_409")


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
@pytest.mark.parametrize("kind", ["onec", "walking_warehouse", "http"])
async def test_retryable_statuses(
    kind: str,
    status: int,
    fake_target: FakeTarget,
    session: aiohttp.ClientSession,
    make_outbound: MakeOutbound,
) -> None:
    fake_target.reply(status, "busy")
    result = await target(kind, fake_target.url).send(session, make_outbound(), 5)
    assert (result.outcome, result.http_status, result.error_class) == (
        "retry",
        status,
        f"http_{status}",
    )
    assert result.error is not None and result.error.startswith(f"HTTP {status}")
    assert result.response_excerpt == "busy"


@pytest.mark.parametrize("status", [400, 401, 404, 422])
@pytest.mark.parametrize("kind", ["onec", "walking_warehouse", "http"])
async def test_permanent_statuses(
    kind: str,
    status: int,
    fake_target: FakeTarget,
    session: aiohttp.ClientSession,
    make_outbound: MakeOutbound,
) -> None:
    fake_target.reply(status, {"detail": "no"})
    result = await target(kind, fake_target.url).send(session, make_outbound(), 5)
    assert (result.outcome, result.http_status, result.error_class) == (
        "dead",
        status,
        f"http_{status}",
    )


async def test_redirect_is_not_followed(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(307, "", headers={"Location": "/elsewhere"})
    result = await target("http", fake_target.url + "/in").send(session, make_outbound(), 5)
    assert (result.outcome, result.error_class) == ("dead", "http_307")
    assert [r.path for r in fake_target.requests] == ["/in"]


async def test_timeout_is_retried(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(200, delay=30)
    result = await target("onec", fake_target.url).send(session, make_outbound(), 0.2)
    assert (result.outcome, result.http_status, result.error_class) == ("retry", None, "timeout")
    assert len(fake_target.requests) == 1


async def test_connection_refused_is_retried(
    session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    with socket.socket() as sock:  # a port nobody listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await target("onec", f"http://127.0.0.1:{port}/").send(session, make_outbound(), 5)
    assert (result.outcome, result.http_status, result.error_class) == ("retry", None, "connect")
    assert result.error is not None and "ClientConnectorError" in result.error


async def test_retry_after_seconds(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(429, "slow down", headers={"Retry-After": "120"})
    result = await target("http", fake_target.url).send(session, make_outbound(), 5)
    assert (result.outcome, result.retry_after) == ("retry", 120.0)


async def test_retry_after_http_date(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    when = datetime.now(UTC) + timedelta(minutes=10)
    fake_target.reply(503, "maintenance", headers={"Retry-After": format_datetime(when, True)})
    result = await target("onec", fake_target.url).send(session, make_outbound(), 5)
    assert result.retry_after is not None
    assert 500 < result.retry_after <= 600


async def test_onec_html_error_kept_and_truncated(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    page = "<html><body><h1>Ошибка</h1><p>" + "Обработчик не найден. " * 300 + "</p></body></html>"
    fake_target.reply(
        500,
        page.encode("windows-1251"),
        headers={"Content-Type": "text/html; charset=windows-1251"},
    )
    result = await target("onec", fake_target.url).send(session, make_outbound(), 5)
    assert (result.outcome, result.http_status) == ("retry", 500)
    assert result.response_excerpt == page[:2048]


async def test_excerpt_of_undecodable_bytes(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(400, b"\xff\xfe bad \xc3")
    result = await target("onec", fake_target.url).send(session, make_outbound(), 5)
    assert result.response_excerpt == "\ufffd\ufffd bad \ufffd"


async def test_secrets_echoed_by_the_target_are_masked(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(401, "bad token ww-token-123456 for Bearer ww-token-123456")
    result = await target("walking_warehouse", fake_target.url, auth=BEARER).send(
        session, make_outbound(), 5
    )
    assert result.response_excerpt == "bad token *** for Bearer ***"


async def test_large_body_is_cut(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(200, "x" * (512 * 1024))
    result = await target("http", fake_target.url).send(session, make_outbound(), 5)
    assert result.outcome == "delivered"
    assert result.response_excerpt == "x" * 2048


async def _raw_server(answer: bytes) -> tuple[asyncio.Server, str]:
    """A TCP server that reads the request head, writes `answer` and hangs up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/"


@pytest.mark.parametrize(
    ("answer", "error_class"),
    [
        (b"", "connect"),  # closed without a reply: ServerDisconnectedError
        (b"NOT HTTP AT ALL\r\n\r\n", "network"),  # a reply aiohttp cannot parse
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "network"),  # body cut short
    ],
)
async def test_broken_replies(
    answer: bytes, error_class: str, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    server, url = await _raw_server(answer)
    async with server:
        result = await target("onec", url).send(session, make_outbound(), 5)
    assert (result.outcome, result.error_class) == ("retry", error_class)


NOW = datetime(2025, 12, 18, 8, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        (" 3600 ", 3600.0),
        ("Thu, 18 Dec 2025 08:02:30 GMT", 150.0),
        ("Thu, 18 Dec 2025 07:00:00 GMT", 0.0),  # in the past: now
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds
