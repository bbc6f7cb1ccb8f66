"""1C batches: an OData collection on /webhooks/1c/{type}, a JSON array of envelopes on /webhooks/1c.
One event per row, all committed together or none; the reply lists every row in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Delivery, Event
from app.settings import Settings
from tests.fixture_files import fixture_bytes
from tests.http_app import HubClient, running_app
from tests.hub_config import HUB_CONFIG
from tests.ingest.test_errors import BASIC, DEAL, FORM, assert_problem, count

JSON = {"content-type": "application/json", "authorization": BASIC}
COLLECTION = fixture_bytes("onec/odata-collection-contracts.json")
ORDERS = "/webhooks/1c/Документ.ЗаказКлиента"


def envelope(i: int, **extra: object) -> dict[str, object]:
    ref = f"{i:08x}-cb6a-11e6-aede-5404a6b4b8ed"
    return {"type": "Документ.ЗаказКлиента", "ref": ref, "data": {"number": str(i)}, **extra}


async def events(engine: AsyncEngine) -> list[Event]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(Event).order_by(Event.received_at, Event.id))
        return list(rows.all())  # type: ignore[arg-type]


async def test_odata_collection_is_one_event_per_row(hub: HubClient, engine: AsyncEngine) -> None:
    reply = await hub.post(ORDERS, content=COLLECTION, headers=JSON)

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"status", "accepted", "duplicates", "events"}
    assert (body["status"], body["accepted"], body["duplicates"]) == ("accepted", 2, 0)
    assert [set(e) for e in body["events"]] == [{"event_id", "duplicate", "deliveries"}] * 2
    assert [(e["duplicate"], e["deliveries"]) for e in body["events"]] == [(False, 3)] * 2
    stored = {str(e.id): e for e in await events(engine)}
    first, second = (stored[e["event_id"]] for e in body["events"])
    assert first.subject == "Документ.ЗаказКлиента/b1c89da7-cb6a-11e6-aede-5404a6b4b8ed"
    assert second.subject == "Документ.ЗаказКлиента/8bbfc2c7-cdb9-11e6-aede-5404a6b4b8ed"
    assert second.dedup_key.endswith(":AAAABgAAAAA=")
    assert second.payload["data"]["Товары"][1]["Количество"] == 31
    assert first.request_id == second.request_id == reply.headers["x-request-id"]
    # Each row keeps its own raw body, not the whole batch once per row.
    assert orjson.loads(first.raw_body)["Number"] == "00000000001"
    assert b"00000000002" not in first.raw_body
    assert await count(engine) == (2, 6)


async def test_array_of_envelopes_replies_in_row_order(hub: HubClient, engine: AsyncEngine) -> None:
    await hub.post("/webhooks/1c", content=orjson.dumps(envelope(1)), headers=JSON)
    rows = [envelope(0), envelope(1), envelope(2), envelope(0)]
    reply = await hub.post("/webhooks/1c", content=orjson.dumps(rows), headers=JSON)

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["accepted"], body["duplicates"]) == (4, 2)
    assert [e["duplicate"] for e in body["events"]] == [False, True, False, True]
    assert body["events"][3]["event_id"] == body["events"][0]["event_id"]
    by_id = {str(e.id): e.subject for e in await events(engine)}
    assert [by_id[e["event_id"]].split("/")[1][:8] for e in body["events"]] == [
        "00000000",
        "00000001",
        "00000002",
        "00000000",
    ]
    assert await count(engine) == (3, 9)


@pytest.mark.parametrize(
    ("path", "rows", "index"),
    [
        ("/webhooks/1c", [envelope(0), {"type": "X"}, envelope(2)], 1),
        ("/webhooks/1c", [envelope(0), envelope(1), envelope(2, Date="2025-13-01T00:00:00")], 2),
        ("/webhooks/1c", [envelope(0), envelope(1, data={"a": "\u0000"})], 1),
        ("/webhooks/1c", [envelope(0), "not an object"], 1),
        (ORDERS, {"value": [{"Ref_Key": "b1c89da7-cb6a-11e6-aede-5404a6b4b8ed"}, {}]}, 1),
    ],
    ids=["no-ref", "bad-date", "nul", "not-an-object", "odata-no-ref"],
)
async def test_a_bad_row_refuses_the_batch_naming_its_index(
    hub: HubClient, engine: AsyncEngine, path: str, rows: object, index: int
) -> None:
    reply = await hub.post(path, content=orjson.dumps(rows), headers=JSON)
    assert_problem(reply, 422)
    assert reply.json()["index"] == index
    assert f"row {index}" in reply.json()["detail"]
    assert await count(engine) == (0, 0)


async def test_more_rows_than_the_cap_is_refused(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> None:
    async with running_app(settings_for(HUB_CONFIG, max_batch_rows=3)) as client:
        rows = orjson.dumps([envelope(i) for i in range(4)])
        assert_problem(await client.post("/webhooks/1c", content=rows, headers=JSON), 413)
        odata = orjson.dumps({"value": [{"Ref_Key": envelope(i)["ref"]} for i in range(4)]})
        assert_problem(await client.post(ORDERS, content=odata, headers=JSON), 413)
        exactly = orjson.dumps([envelope(i) for i in range(3)])
        assert (await client.post("/webhooks/1c", content=exactly, headers=JSON)).status_code == 200
    assert await count(engine) == (3, 9)


@pytest.mark.parametrize("body", [b"[]", b'{"value": []}'])
async def test_an_empty_batch_is_refused(hub: HubClient, engine: AsyncEngine, body: bytes) -> None:
    path = "/webhooks/1c" if body == b"[]" else ORDERS
    reply = await hub.post(path, content=body, headers=JSON)
    assert_problem(reply, 422)
    assert reply.json()["detail"] == "the batch has no rows"
    assert await count(engine) == (0, 0)


async def test_batches_and_single_events_share_group_commits(
    hub: HubClient, engine: AsyncEngine
) -> None:
    batches = [orjson.dumps([envelope(b * 10 + i) for i in range(10)]) for b in range(5)]
    replies = await asyncio.gather(
        *(hub.post("/webhooks/1c", content=body, headers=JSON) for body in batches),
        *(hub.post("/webhooks/bitrix24", content=DEAL, headers=FORM) for _ in range(5)),
    )
    assert all(r.status_code == 200 for r in replies)
    assert [r.json()["accepted"] for r in replies[:5]] == [10] * 5
    async with engine.connect() as conn:
        onec = (await conn.execute(select(Delivery).where(Delivery.target == "ww"))).all()
    assert len(onec) == 50
    assert await count(engine) == (51, 152)


async def test_a_secret_in_a_row_is_kept_out_of_its_stored_event(
    hub: HubClient, engine: AsyncEngine
) -> None:
    rows = [envelope(1), envelope(2, data={"number": "2", "password": "row-two-s3cret"})]
    reply = await hub.post("/webhooks/1c", content=orjson.dumps(rows), headers=JSON)

    assert reply.status_code == 200, reply.text
    stored = await events(engine)
    assert len(stored) == 2
    for event in stored:
        assert b"row-two-s3cret" not in event.raw_body
        assert "row-two-s3cret" not in orjson.dumps(event.payload).decode()
    second = next(e for e in stored if e.payload["data"]["number"] == "2")
    assert orjson.loads(second.raw_body)["data"]["password"] != "row-two-s3cret"


async def test_batches_under_other_idempotency_keys_are_other_events(
    hub: HubClient, engine: AsyncEngine
) -> None:
    rows = orjson.dumps([envelope(1), envelope(2)])
    first = await hub.post("/webhooks/1c", content=rows, headers={**JSON, "idempotency-key": "k1"})
    again = await hub.post("/webhooks/1c", content=rows, headers={**JSON, "idempotency-key": "k1"})
    other = await hub.post("/webhooks/1c", content=rows, headers={**JSON, "idempotency-key": "k2"})

    assert [r.status_code for r in (first, again, other)] == [200, 200, 200]
    assert first.headers["content-type"] == "application/json"
    assert (first.json()["accepted"], again.json()["duplicates"]) == (2, 2)
    assert (other.json()["accepted"], other.json()["duplicates"]) == (2, 0)
    assert len(await events(engine)) == 4


@pytest.mark.parametrize("ref_field", ["Ref_Key", "Ref"])
async def test_an_object_with_its_own_ref_and_a_value_list_is_one_event(
    hub: HubClient, engine: AsyncEngine, ref_field: str
) -> None:
    # {"value": [...]} is a collection only without a ref: an object may have a field named value.
    body = {ref_field: "b1c89da7-cb6a-11e6-aede-5404a6b4b8ed", "value": [{"a": 1}, {"a": 2}]}
    reply = await hub.post(ORDERS, content=orjson.dumps(body), headers=JSON)

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert "events" not in reply.json()
    [event] = await events(engine)
    assert event.subject == "Документ.ЗаказКлиента/b1c89da7-cb6a-11e6-aede-5404a6b4b8ed"
    assert event.payload["data"]["value"] == [{"a": 1}, {"a": 2}]
