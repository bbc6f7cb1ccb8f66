"""Nothing a client sends yields a 500: depth, key count, dates, NUL, sizes and slow bodies get a
problem+json 4xx, and nothing is stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from app.sources.bitrix24.phpform import MAX_DEPTH as FORM_DEPTH
from app.sources.jsonlimits import MAX_DEPTH, MAX_KEYS, JsonLimitError, check_json_limits
from tests.http_app import HubClient, running_app
from tests.hub_config import HUB_CONFIG
from tests.ingest.test_errors import BASIC, DEAL, FORM, assert_problem, count

JSON = {"content-type": "application/json", "authorization": BASIC}
REF = "b1c89da7-cb6a-11e6-aede-5404a6b4b8ed"
DEAL_JSON = (
    '{"event": "ONCRMDEALADD", "ts": "1766047124", "data": {"FIELDS": {"ID": "7405", "X": %s}},'
    ' "auth": {"domain": "some-domain.bitrix24.ru", "member_id": "d897063e1ce7c5eb9f04b9751eef5915",'
    ' "application_token": "jvh9y1ulvt2m6k5or90v9mg8nn32ozas"}}'
)


def nested(levels: int) -> str:
    """JSON text of `levels` objects inside one another (built as text: orjson stops at 254)."""
    return '{"k": ' * levels + '"leaf"' + "}" * levels


def onec(data: str, **extra: str) -> bytes:
    """An envelope whose `data` is the JSON text given (the body nests one level deeper)."""
    fields = "".join(f', "{k}": {orjson.dumps(v).decode()}' for k, v in extra.items())
    return f'{{"type": "Справочник.X", "ref": "{REF}", "data": {data}{fields}}}'.encode()


def b24_json(data: str) -> bytes:
    """The deal as JSON with `data[FIELDS][X]` the JSON text given (three levels deeper)."""
    return (DEAL_JSON % data).encode()


def test_depth_and_keys_are_counted_outside_strings() -> None:
    check_json_limits('{"a": "' + "[{:" * 1000 + '"}')  # brackets inside a string: depth 1
    check_json_limits("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(JsonLimitError, match="deeper than 64"):
        check_json_limits("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(JsonLimitError, match="deeper than 64"):
        check_json_limits('{"a\\"": ' + "[" * 65)  # an escaped quote does not end the string
    keys = ",".join(f'"k{i}":0' for i in range(MAX_KEYS + 1))
    with pytest.raises(JsonLimitError, match="more than"):
        check_json_limits("{" + keys + "}")


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/webhooks/1c", onec(nested(300)), JSON),
        ("/webhooks/1c", b"[" * 300 + b"]" * 300, JSON),
        ("/webhooks/1c/Справочник.X", f'{{"Ref_Key": "{REF}", "x": {nested(64)}}}'.encode(), JSON),
        ("/webhooks/bitrix24", b24_json(nested(300)), {"content-type": "application/json"}),
        ("/webhooks/1c", onec(orjson.dumps({f"k{i}": 0 for i in range(MAX_KEYS)}).decode()), JSON),
    ],
    ids=["1c-300", "1c-arrays", "odata-65", "bitrix24-json-300", "1c-keys"],
)
async def test_json_over_the_limits_is_refused(
    hub: HubClient, engine: AsyncEngine, path: str, body: bytes, headers: dict[str, str]
) -> None:
    reply = await hub.post(path, content=body, headers=headers)
    assert_problem(reply, 400)
    assert await count(engine) == (0, 0)


async def test_json_at_the_limits_is_stored(hub: HubClient, engine: AsyncEngine) -> None:
    # Each body nests exactly 64 deep.
    reply = await hub.post("/webhooks/1c", content=onec(nested(MAX_DEPTH - 1)), headers=JSON)
    assert reply.status_code == 200, reply.text
    headers = {"content-type": "application/json"}
    reply = await hub.post("/webhooks/bitrix24", content=b24_json(nested(61)), headers=headers)
    assert reply.status_code == 200, reply.text
    assert await count(engine) == (2, 3)


async def test_php_keys_deeper_than_32_are_refused(hub: HubClient, engine: AsyncEngine) -> None:
    deep = b"&data[X]" + b"[k]" * (FORM_DEPTH - 1) + b"=v"
    assert (await hub.post("/webhooks/bitrix24", content=DEAL + deep, headers=FORM)).is_success
    too_deep = b"&data[X]" + b"[k]" * FORM_DEPTH + b"=v"
    other = DEAL.replace(b"7405", b"7406") + too_deep
    assert_problem(await hub.post("/webhooks/bitrix24", content=other, headers=FORM), 400)
    assert await count(engine) == (1, 2)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/webhooks/1c/Документ.X", {"Ref_Key": REF, "Date": "99999-01-01T00:00:00"}),
        ("/webhooks/1c/Документ.X", {"Ref_Key": REF, "Date": "2025-13-01T00:00:00"}),
        ("/webhooks/1c/Документ.X", {"Ref_Key": REF, "Date": "0000-01-01T00:00:00"}),
        ("/webhooks/1c", {"#type": "jcfg:DocumentObject.X", "#value": {"Ref": REF, "Date": "x"}}),
        ("/webhooks/1c", {"type": "X", "ref": REF, "date": "2025-02-30"}),
    ],
    ids=["year-99999", "month-13", "year-0", "xdto-text", "feb-30"],
)
async def test_1c_dates_out_of_range_are_refused(
    hub: HubClient, engine: AsyncEngine, path: str, body: object
) -> None:
    reply = await hub.post(path, content=orjson.dumps(body), headers=JSON)
    assert_problem(reply, 422)
    assert "date" in reply.json()["detail"].lower()
    assert await count(engine) == (0, 0)


async def test_1c_empty_date_and_free_form_data_dates_are_accepted(
    hub: HubClient, engine: AsyncEngine
) -> None:
    odata = {"Ref_Key": REF, "Date": "0001-01-01T00:00:00"}
    reply = await hub.post("/webhooks/1c/Документ.X", content=orjson.dumps(odata), headers=JSON)
    assert reply.status_code == 200, reply.text
    reply = await hub.post("/webhooks/1c", content=onec('{"date": "31.12.2025"}'), headers=JSON)
    assert reply.status_code == 200, reply.text
    assert await count(engine) == (2, 2)


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        (
            "/webhooks/1c",
            b'{"type": "X", "ref": "%s", "data": {"\\u0000": 1}}' % REF.encode(),
            JSON,
        ),
        ("/webhooks/1c/%00X", orjson.dumps({"Ref_Key": REF}), JSON),
        ("/webhooks/bitrix24", b24_json('"a\\u0000b"'), {"content-type": "application/json"}),
        ("/webhooks/bitrix24", DEAL + b"&data[FIELDS][X]=%00", FORM),
        ("/webhooks/1c/" + "Я" * 600, orjson.dumps({"Ref_Key": REF}), JSON),
        ("/webhooks/1c", onec("{}", event="x" * 2000), JSON),
        ("/webhooks/1c", b'{"type": "X", "ref": "%s", "n": 1e400}' % REF.encode(), JSON),
        ("/webhooks/bitrix24", b"\xff\xfe{}", {"content-type": "application/json"}),
    ],
    ids=[
        "nul-key",
        "nul-type",
        "nul-b24-json",
        "nul-b24-form",
        "long-type",
        "long-event",
        "huge-number",
        "not-utf8",
    ],
)
async def test_unstorable_values_are_refused(
    hub: HubClient, engine: AsyncEngine, path: str, body: bytes, headers: dict[str, str]
) -> None:
    reply = await hub.post(path, content=body, headers=headers)
    assert 400 <= reply.status_code < 500
    assert_problem(reply, reply.status_code)
    assert await count(engine) == (0, 0)


async def test_a_trickling_body_is_cut_off_with_408(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> None:
    settings = settings_for(HUB_CONFIG, body_timeout=timedelta(milliseconds=300))

    async def trickle() -> AsyncIterator[bytes]:
        yield DEAL[:20]
        await asyncio.sleep(30)  # never reached: the hub stops reading first
        yield DEAL[20:]

    async with running_app(settings) as client:
        reply = await client.post("/webhooks/bitrix24", content=trickle(), headers=FORM)
        assert_problem(reply, 408)
        assert reply.headers["connection"] == "close"
        # A whole body within the time is fine.
        assert (await client.post("/webhooks/bitrix24", content=DEAL, headers=FORM)).is_success
    assert await count(engine) == (1, 2)


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        # A record id of 3,000 digits: the subject (deal/…) and the dedup key outgrow an index entry.
        ("/webhooks/bitrix24", DEAL.replace(b"=7405&", b"=" + b"9" * 3000 + b"&"), FORM),
        # A 1C type name of 1,500 characters.
        (
            "/webhooks/1c",
            onec('{"n": 1}').replace("Справочник.X".encode(), ("Справочник." + "Я" * 750).encode()),
            JSON,
        ),
    ],
    ids=["bitrix24-long-id", "1c-long-type"],
)
async def test_identities_too_long_for_an_index_are_refused(
    hub: HubClient, engine: AsyncEngine, path: str, body: bytes, headers: dict[str, str]
) -> None:
    """Longer than a b-tree entry can hold, they would fail the whole shared commit (a 503 for
    every request in the batch): each is refused alone with a 422, and nothing is stored."""
    reply = await hub.post(path, content=body, headers=headers)
    assert_problem(reply, 422)
    assert "longer than 1024 bytes" in reply.json()["detail"]
    assert await count(engine) == (0, 0)


def test_the_limits_are_exact_when_the_body_has_more_brackets_or_colons_than_them() -> None:
    # More brackets in all than MAX_DEPTH (so counting characters cannot decide), nested at most
    # MAX_DEPTH deep: accepted; one level more: refused. Objects count as arrays do.
    siblings = ",[]" * 10
    check_json_limits("[" * MAX_DEPTH + "]" * MAX_DEPTH + siblings)
    check_json_limits('{"a":' * (MAX_DEPTH - 1) + "{}" + "}" * (MAX_DEPTH - 1))
    with pytest.raises(JsonLimitError, match="deeper than 64"):
        check_json_limits("[" + "[" * MAX_DEPTH + "]" * MAX_DEPTH + siblings + "]")
    with pytest.raises(JsonLimitError, match="deeper than 64"):
        check_json_limits('{"a":' * MAX_DEPTH + "{}" + "}" * MAX_DEPTH)
    # Exactly MAX_KEYS keys, with brackets enough to leave the shortcut: accepted; one more: not.
    keys = ",".join(f'"k{i}":[]' for i in range(MAX_KEYS - 1))
    check_json_limits("{" + keys + ',"last":1}')
    with pytest.raises(JsonLimitError, match="more than 100000 keys"):
        check_json_limits("{" + keys + ',"last":1,"one more":2}')


@pytest.mark.parametrize(
    ("path", "headers", "source"),
    [("/webhooks/bitrix24", FORM, "bitrix24"), ("/webhooks/1c", JSON, "onec")],
    ids=["bitrix24", "1c"],
)
async def test_a_sender_that_hangs_up_mid_body_is_a_499_not_a_bug(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
    path: str,
    headers: dict[str, str],
    source: str,
) -> None:
    # Raw ASGI: the first chunk, then the client is gone (what uvicorn reports on a dropped socket).
    messages = [
        {"type": "http.request", "body": DEAL[:20], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    rejected = ("mmhub_ingest_rejected_total", {"source": source, "status": "499"})
    failed = ("http_requests_total", {"method": "POST", "route": path, "status": "500"})
    async with running_app(settings_for(HUB_CONFIG)) as client:
        before = [REGISTRY.get_sample_value(*metric) or 0.0 for metric in (rejected, failed)]
        await client.app(scope, receive, send)  # type: ignore[attr-defined]
        after = [REGISTRY.get_sample_value(*metric) or 0.0 for metric in (rejected, failed)]
    assert sent[0]["status"] == 499
    assert after == [before[0] + 1, before[1]]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await count(engine) == (0, 0)
