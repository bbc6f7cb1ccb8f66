"""Idempotency-Key: a retry is a duplicate naming the first event; a reuse with another payload is a
409 that names the stored event and stores nothing; rows from before migration 0004 stay duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import re

import orjson
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.ingest.idempotency import MAX_KEY_CHARS, payload_digest
from app.models import Event
from tests.http_app import HubClient
from tests.ingest.test_errors import BASIC, DEAL, FORM, assert_problem, count

JSON = {"content-type": "application/json", "authorization": BASIC}
REF = "b1c89da7-cb6a-11e6-aede-5404a6b4b8ed"


def order(number: str, version: str | None = "AAAABAAAAAA=") -> bytes:
    body = {"type": "Документ.ЗаказКлиента", "ref": REF, "data": {"number": number}}
    if version:
        body["data_version"] = version
    return orjson.dumps(body)


async def conflicts(hub: HubClient) -> float:
    """mmhub_idempotency_conflicts_total{source="onec"} (process-wide: compare before and after)."""
    metrics = (await hub.get("/metrics")).text
    found = re.search(
        r'^mmhub_idempotency_conflicts_total\{[^}]*source="onec"[^}]*\} (\S+)$', metrics, re.M
    )
    return float(found.group(1)) if found else 0.0


async def post_1c(hub: HubClient, body: bytes, key: str | None, path: str = "/webhooks/1c"):  # type: ignore[no-untyped-def]
    headers = {**JSON, **({"idempotency-key": key} if key else {})}
    return await hub.post(path, content=body, headers=headers)


async def test_1c_retry_with_the_same_key_is_a_duplicate_naming_the_first(
    hub: HubClient, engine: AsyncEngine
) -> None:
    first = await post_1c(hub, order("1"), "k-1")
    again = await post_1c(hub, order("1"), "k-1")
    assert first.status_code == again.status_code == 200
    assert first.json()["duplicate"] is False
    assert again.json() == {**first.json(), "duplicate": True, "deliveries": 0}
    assert await count(engine) == (1, 3)


async def test_1c_key_reused_with_another_payload_is_a_conflict(
    hub: HubClient, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    # A new version of the document under a reused key: v1 answered "duplicate" and dropped it.
    first = await post_1c(hub, order("1"), "k-1")
    conflicts_before = await conflicts(hub)
    with caplog.at_level(logging.INFO):
        reused = await post_1c(hub, order("2", version="AAAABQAAAAA="), "k-1")

    assert_problem(reused, 409)
    assert reused.json()["event_id"] == first.json()["event_id"]
    assert await count(engine) == (1, 3)
    async with engine.connect() as conn:
        [payload] = (await conn.execute(select(Event.payload))).scalars()
    assert payload["data"] == {"number": "1"}
    logged = [r for r in caplog.records if "Idempotency-Key reused" in r.getMessage()]
    assert logged and logged[0].existing_event_id == first.json()["event_id"]  # type: ignore[attr-defined]
    assert all("k-1" not in r.getMessage() for r in caplog.records)
    assert await conflicts(hub) == conflicts_before + 1


async def test_1c_key_is_the_identity_when_sent(hub: HubClient, engine: AsyncEngine) -> None:
    # The same body under two keys is two events: the key is not ignored for 1C.
    replies = [await post_1c(hub, order("1"), key) for key in ("a", "b")]
    assert [r.json()["duplicate"] for r in replies] == [False, False]
    assert replies[0].json()["event_id"] != replies[1].json()["event_id"]
    async with engine.connect() as conn:
        keys = (await conn.execute(select(Event.dedup_key).order_by(Event.dedup_key))).scalars()
        assert list(keys) == ["key:a", "key:b"]


async def test_stored_hash_is_the_canonical_payloads(hub: HubClient, engine: AsyncEngine) -> None:
    # Key order and whitespace are not a different payload.
    await post_1c(hub, order("1"), "k")
    reordered = (
        '{ "data": {"number": "1"}, "data_version": "AAAABAAAAAA=",\n'
        f'  "ref": "{REF}", "type": "Документ.ЗаказКлиента"}}'
    ).encode()
    again = await post_1c(hub, b"\xef\xbb\xbf" + reordered, "k")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    async with engine.connect() as conn:
        event = (await conn.execute(select(Event))).one()
    assert event.payload_hash == payload_digest(event.payload)


async def test_bitrix24_key_reused_with_another_payload_is_a_conflict(
    hub: HubClient, engine: AsyncEngine
) -> None:
    headers = {**FORM, "idempotency-key": "b24-key"}
    first = await hub.post("/webhooks/bitrix24", content=DEAL, headers=headers)
    other = DEAL.replace(b"1766047124", b"1766047999")
    reused = await hub.post("/webhooks/bitrix24", content=other, headers=headers)
    assert first.status_code == 200
    assert_problem(reused, 409)
    assert reused.json()["event_id"] == first.json()["event_id"]
    assert await count(engine) == (1, 2)


async def test_rows_from_before_the_hash_stay_duplicates(
    hub: HubClient, engine: AsyncEngine
) -> None:
    first = await post_1c(hub, order("1"), "old-key")
    async with engine.begin() as conn:  # as stored before migration 0004_ingest
        await conn.execute(text("UPDATE events SET payload_hash = NULL"))
    again = await post_1c(hub, order("2"), "old-key")
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["event_id"] == first.json()["event_id"]
    assert await count(engine) == (1, 3)


async def test_concurrent_reuse_stores_one_and_refuses_the_others(
    hub: HubClient, engine: AsyncEngine
) -> None:
    replies = await asyncio.gather(*(post_1c(hub, order(str(n)), "race") for n in range(20)))
    stored = [r for r in replies if r.status_code == 200]
    assert len(stored) == 1 and stored[0].json()["duplicate"] is False
    refused = [r for r in replies if r.status_code == 409]
    assert len(refused) == 19
    assert {r.json()["event_id"] for r in refused} == {stored[0].json()["event_id"]}
    assert await count(engine) == (1, 3)


async def test_overlong_key_is_refused(hub: HubClient, engine: AsyncEngine) -> None:
    assert_problem(await post_1c(hub, order("1"), "k" * (MAX_KEY_CHARS + 1)), 400)
    assert await count(engine) == (0, 0)


def batch(*numbers: str) -> bytes:
    return orjson.dumps(
        [
            {"type": "Справочник.X", "ref": REF.replace("b1", f"{i:02d}", 1), "data": {"n": n}}
            for i, n in enumerate(numbers)
        ]
    )


async def test_keyed_batch_resent_is_all_duplicates(hub: HubClient, engine: AsyncEngine) -> None:
    first = await post_1c(hub, batch("a", "b"), "batch-1")
    again = await post_1c(hub, batch("a", "b"), "batch-1")
    assert first.json()["duplicates"] == 0
    assert again.json()["duplicates"] == 2
    assert [e["event_id"] for e in again.json()["events"]] == [
        e["event_id"] for e in first.json()["events"]
    ]
    assert await count(engine) == (2, 2)


async def test_keyed_batch_with_a_changed_row_stores_nothing(
    hub: HubClient, engine: AsyncEngine
) -> None:
    first = await post_1c(hub, batch("a", "b"), "batch-1")
    # Row 2 is new and would be stored alone; row 1 conflicts, so the whole batch is refused.
    reused = await post_1c(hub, batch("a", "changed", "c"), "batch-1")
    assert_problem(reused, 409)
    assert reused.json()["index"] == 1
    assert reused.json()["event_id"] == first.json()["events"][1]["event_id"]
    assert await count(engine) == (2, 2)
