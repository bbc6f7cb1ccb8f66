"""app.jsonio: orjson's speed and strictness, integers beyond 64 bits kept exact both ways."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from sqlalchemy import cast, literal, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from app import jsonio
from app.ingest.model import NewEvent, PlannedDelivery
from app.ingest.spoolfile import decode, encode

BIG = 123456789012345678901234567890
TEXT = '{"barcode": 123456789012345678901234567890, "debt": -9300000000000000001, "n": 7}'


@pytest.mark.parametrize("data", [TEXT, TEXT.encode()], ids=["str", "bytes"])
def test_integers_beyond_64_bits_are_read_exactly(data: str | bytes) -> None:
    assert orjson.loads(data)["barcode"] != BIG  # what this module is for: orjson rounds it
    assert jsonio.loads(data) == {"barcode": BIG, "debt": -9300000000000000001, "n": 7}


def test_ordinary_json_is_orjsons() -> None:
    text = '{"a": [1, 2.5, -3, "x", null, true], "u64": 18446744073709551615}'
    assert jsonio.loads(text) == orjson.loads(text)


@pytest.mark.parametrize(
    "bad", ['{"a": NaN, "n": 12345678901234567890}', '"\\ud800"', "{", "[1] x", "Infinity"]
)
def test_what_orjson_refuses_is_refused(bad: str) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        jsonio.loads(bad)


def test_integers_beyond_64_bits_are_written() -> None:
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps({"n": BIG})
    assert jsonio.dumps({"n": BIG, "s": "Привет"}) == '{"n":%d,"s":"Привет"}'.encode() % BIG
    assert jsonio.loads(jsonio.dumps({"n": -BIG})) == {"n": -BIG}


def test_the_fallback_writes_as_orjson_does() -> None:
    when = datetime(2026, 12, 4, 10, 0, 1, 5, tzinfo=UTC)
    value = {
        "b": [1, 2.5, None, True, "é\u2028\x01"],
        "a": {"z": 1, "y": 2},
        "at": when,
        "naive": datetime(2026, 1, 2, 3, 4, 5),
        "zoned": when.astimezone(timezone(timedelta(hours=3))),
        "id": uuid.UUID(int=7),
    }
    for sort_keys, indent in [(False, False), (True, False), (True, True)]:
        # The same bytes as orjson's for the same value with a small number in the big one's place.
        fast = jsonio.dumps({**value, "big": 1}, sort_keys=sort_keys, indent=indent)
        slow = jsonio.dumps({**value, "big": BIG}, sort_keys=sort_keys, indent=indent)
        separator = b": " if indent else b":"
        assert slow == fast.replace(b'"big"%s1' % separator, b'"big"%s%d' % (separator, BIG))
    assert jsonio.dumps({"big": BIG, "a": 1, "b": when}, sort_keys=True) == (
        b'{"a":1,"b":"2026-12-04T10:00:01.000005Z","big":%d}' % BIG
    )


def test_a_spooled_event_keeps_its_integers() -> None:
    event = NewEvent(
        source="onec",
        type="Документ.Заказ",
        subject="Документ.Заказ/1",
        dedup_key="k",
        payload={"data": {"barcode": BIG}},
        raw_body=b"{}",
        headers={},
        origin=None,
        occurred_at=datetime(2026, 12, 4, tzinfo=UTC),
        request_id="r",
        deliveries=[PlannedDelivery("route", "erp")],
    )
    entry = decode(encode(event, datetime(2026, 12, 4, 1, tzinfo=UTC)))
    assert entry.event.payload == {"data": {"barcode": BIG}}
    assert entry.event.occurred_at == event.occurred_at
    assert entry.event.id == event.id


@pytest.mark.parametrize(
    "number",
    [18446744073709551615, 18446744073709551616, -9223372036854775808, -9223372036854775809],
)
def test_the_64_bit_boundaries_are_exact(number: int) -> None:
    assert jsonio.loads(f'{{"n": {number}}}') == {"n": number}


def test_floats_are_orjsons() -> None:
    text = "[1e19, -1.5e300, 0.1, 12345678901234567890.5, 1e-7]"
    assert jsonio.loads(text) == orjson.loads(text)


def test_too_deep_for_the_exact_parse_is_a_decode_error() -> None:
    text = "[" * 1000 + str(BIG) + "]" * 1000  # orjson takes it; the standard library recurses
    with pytest.raises(orjson.JSONDecodeError, match="too deep"):
        jsonio.loads(text)


def test_what_orjson_cannot_write_for_another_reason_is_refused() -> None:
    with pytest.raises(TypeError):
        jsonio.dumps({1: BIG})  # the standard library would write the key as "1"
    with pytest.raises(TypeError):
        jsonio.dumps({"n": BIG, "when": object()})


async def test_the_database_reads_what_orjson_cannot(engine: AsyncEngine) -> None:
    # jsonb keeps any JSON number; an edit-and-replay override may hold one beyond a double.
    huge = 10**400
    async with engine.connect() as conn:
        value = await conn.scalar(select(cast(literal(json.dumps({"n": huge})), JSONB)))
    assert value == {"n": huge}
