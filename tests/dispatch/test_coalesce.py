"""coalesce: latest: of the waiting deliveries of one subject and route, only the newest is sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from dispatch.deliver import drain
from dispatch.runtime import Runtime
from tests.admin.support import OPERATOR, admin_hub
from tests.dispatch.harness import attempts, deal, deliveries, hub_with_target, ingest, make_due
from tests.fake_target import FakeTarget
from tests.http_app import running_app

SAVES = 10


def coalescing_hub(url: str, *, coalesce: bool = True) -> dict[str, Any]:
    config = hub_with_target(url)
    if coalesce:
        config["routes"][0]["coalesce"] = "latest"
    return config


async def ten_saves_of_two_deals(client: Any) -> dict[int, list[str]]:
    """Ten saves of deal 1 and of deal 2, interleaved, each a distinct event (its own ts)."""
    ids: dict[int, list[str]] = {1: [], 2: []}
    for save in range(SAVES):
        for deal_id in (1, 2):
            [event_id] = await ingest(client, deal(deal_id, ts=1766047124 + save))
            ids[deal_id].append(event_id)
    return ids


async def test_only_the_newest_save_of_each_deal_is_sent(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    settings = settings_for(coalescing_hub(fake_target.url))
    async with running_app(settings) as client:
        ids = await ten_saves_of_two_deals(client)
        rt = await Runtime.open(settings)
        try:
            await drain(rt, "erp", budget=20)
        finally:
            await rt.close()

    received = sorted(request.json()["id"] for request in fake_target.requests)
    assert received == sorted([ids[1][-1], ids[2][-1]])
    rows = await deliveries(engine)
    newest = {str(row.event_id): row for row in rows if row.status == "delivered"}
    assert set(newest) == {ids[1][-1], ids[2][-1]}
    superseded = [row for row in rows if row.status == "superseded"]
    assert len(superseded) == 2 * (SAVES - 1)
    for row in superseded:  # each links to the delivery that carried its subject's state
        carrier = next(r for r in rows if r.id == row.superseded_by)
        assert carrier.status == "delivered" and carrier.ordering_key == row.ordering_key
        assert row.claim_token is None and row.attempt_count == 0
    assert len(await attempts(engine)) == 2


async def test_without_coalesce_every_save_is_sent_in_order(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    settings = settings_for(coalescing_hub(fake_target.url, coalesce=False))
    async with running_app(settings) as client:
        ids = await ten_saves_of_two_deals(client)
        rt = await Runtime.open(settings)
        try:
            await drain(rt, "erp", budget=20)
        finally:
            await rt.close()

    received = [request.json()["id"] for request in fake_target.requests]
    for deal_id in (1, 2):
        assert [i for i in received if i in ids[deal_id]] == ids[deal_id]
    assert {row.status for row in await deliveries(engine)} == {"delivered"}


async def test_another_route_of_the_same_subject_keeps_every_event(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    """Deal adds go by a plain route, updates by a coalescing one: an add is never superseded by an update."""
    config = hub_with_target(fake_target.url)
    config["routes"] = [
        {"name": "adds", "from": {"source": "bitrix24", "events": ["ONCRMDEALADD"]}, "to": ["erp"]},
        {
            "name": "updates",
            "from": {"source": "bitrix24", "events": ["ONCRMDEALUPDATE"]},
            "to": ["erp"],
            "coalesce": "latest",
        },
    ]
    settings = settings_for(config)
    async with running_app(settings) as client:
        added = await ingest(client, deal(5, ts=1766047000))
        updates = [(await ingest(client, update(deal(5, ts=1766047001 + i))))[0] for i in range(4)]
        added += await ingest(client, deal(6, ts=1766047100))
        rt = await Runtime.open(settings)
        try:
            await drain(rt, "erp", budget=20)
        finally:
            await rt.close()

    received = [request.json()["id"] for request in fake_target.requests]
    assert sorted(received) == sorted([*added, updates[-1]])
    assert received.index(added[0]) < received.index(updates[-1])  # order within deal/5 holds
    rows = {str(row.event_id): row for row in await deliveries(engine)}
    assert [rows[i].status for i in updates] == ["superseded"] * 3 + ["delivered"]


def update(body: bytes) -> bytes:
    return body.replace(b"event=ONCRMDEALADD", b"event=ONCRMDEALUPDATE")


@pytest.mark.parametrize("newer", [1, 3])
async def test_a_retrying_head_gives_way_to_newer_saves(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    fake_target: FakeTarget,
    newer: int,
) -> None:
    fake_target.reply(status=503)
    settings = settings_for(coalescing_hub(fake_target.url))
    async with running_app(settings) as client:
        [first] = await ingest(client, deal(7, ts=1766047000))
        rt = await Runtime.open(settings)
        try:
            await drain(rt, "erp", budget=10)
            [head] = await deliveries(engine)
            assert (head.status, head.attempt_count) == ("retrying", 1)
            later = [(await ingest(client, deal(7, ts=1766047001 + i)))[0] for i in range(newer)]
            fake_target.reply(status=200)
            await make_due(engine)
            await drain(rt, "erp", budget=10)
        finally:
            await rt.close()

    rows = {str(row.event_id): row for row in await deliveries(engine)}
    assert rows[later[-1]].status == "delivered"
    for event_id in [first, *later[:-1]]:
        assert rows[event_id].status == "superseded"
        assert rows[event_id].superseded_by == rows[later[-1]].id
    assert [request.json()["id"] for request in fake_target.requests][-1] == later[-1]
    assert len(fake_target.requests) == 2  # the failed first attempt, then the newest save only


async def test_superseded_deliveries_are_found_by_status_in_the_admin_api(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    config = admin_hub(fake_target.url)
    config["routes"][0]["coalesce"] = "latest"
    settings = settings_for(config)
    async with running_app(settings) as client:
        ids = [(await ingest(client, deal(9, ts=1766047000 + i)))[0] for i in range(3)]
        rt = await Runtime.open(settings)
        try:
            await drain(rt, "erp", budget=10)
        finally:
            await rt.close()
        page = await client.get("/admin/v1/deliveries?status=superseded", headers=OPERATOR)
        newest = await client.get(
            "/admin/v1/deliveries?status=delivered&target=erp", headers=OPERATOR
        )

    assert page.status_code == 200, page.text
    [carrier] = newest.json()["items"]
    assert carrier["event"]["id"] == ids[-1]
    items = page.json()["items"]
    assert sorted(item["event"]["id"] for item in items) == sorted(ids[:2])
    assert {item["superseded_by"] for item in items} == {carrier["id"]}
