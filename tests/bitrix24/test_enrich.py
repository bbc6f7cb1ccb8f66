"""Enrichment: `data.record` read from the (fake) portal at delivery time, in batches of 50."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from cli.fake_portal import FakePortal
from dispatch.deliver import drain
from dispatch.runtime import Runtime
from tests.dispatch.harness import (
    FORM,
    attempts,
    deal,
    deliveries,
    hub_with_target,
    ingest,
    make_due,
)
from tests.fake_target import FakeTarget
from tests.fixture_files import fixture_bytes
from tests.http_app import HubClient, running_app


def enriched_hub(target_url: str, portal: FakePortal | None) -> dict[str, Any]:
    """Every Bitrix24 event routed with `enrich: true` to `erp`; every portal's REST at `portal`."""
    config = hub_with_target(target_url)
    config["routes"] = [
        {"name": "b24-to-erp", "from": {"source": "bitrix24"}, "enrich": True, "to": ["erp"]}
    ]
    portals = copy.deepcopy(config["sources"]["bitrix24"]["portals"])
    if portal is not None:
        for entry in portals:
            entry["rest"] = {"webhook_url": portal.webhook_url(), "allow_private": True}
    config["sources"]["bitrix24"]["portals"] = portals
    return config


@asynccontextmanager
async def running(
    settings_for: Callable[..., Settings], target: FakeTarget, portal: FakePortal | None
) -> AsyncIterator[tuple[HubClient, Runtime]]:
    settings = settings_for(enriched_hub(target.url, portal))
    async with running_app(settings) as client:
        rt = await Runtime.open(settings)
        try:
            yield client, rt
        finally:
            await rt.close()


async def test_due_deliveries_are_enriched_with_one_batch_per_50_records(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    fake_target: FakeTarget,
    portal: FakePortal,
    redis: Any,
) -> None:
    for number in range(1, 61):
        portal.put("deal", {"ID": 7000 + number, "TITLE": f"Deal {number}"})
    async with running(settings_for, fake_target, portal) as (client, rt):
        await ingest(client, *(deal(7000 + number) for number in range(1, 61)))
        assert await drain(rt, "erp", budget=30) == 60

    assert dict(portal.stats.by_method) == {"batch": 2}
    assert portal.stats.commands == 60
    assert len(fake_target.requests) == 60
    for request in fake_target.requests:
        data = request.json()["data"]
        assert data["record"]["ID"] == data["data"]["FIELDS"]["ID"]
        assert data["record"]["TITLE"] == f"Deal {int(data['record']['ID']) - 7000}"
        assert "record_reason" not in data
    assert {d.status for d in await deliveries(engine)} == {"delivered"}


async def test_a_deleted_record_is_sent_as_null_with_the_reason(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    fake_target: FakeTarget,
    portal: FakePortal,
    redis: Any,
) -> None:
    portal.put("deal", {"ID": 7405, "TITLE": "soon gone"})
    portal.delete("deal", 7405)
    async with running(settings_for, fake_target, portal) as (client, rt):
        await ingest(client, deal(7405))
        await drain(rt, "erp", budget=10)
    [request] = fake_target.requests
    data = request.json()["data"]
    assert data["record"] is None
    assert data["record_reason"] == "not found in the portal: Not found"
    assert [d.status for d in await deliveries(engine)] == ["delivered"]


async def test_tasks_smart_process_items_and_contacts_are_read_with_their_methods(
    settings_for: Callable[..., Settings],
    fake_target: FakeTarget,
    portal: FakePortal,
    redis: Any,
) -> None:
    portal.put("task", {"id": 123, "title": "Call the client"})
    portal.put("dynamic-1032", {"id": 21, "title": "Consultation"})
    portal.put("contact", {"ID": 134806, "NAME": "Ivan"})
    bodies = [
        fixture_bytes(f"bitrix24/{name}.form")
        for name in (
            "task-add-reconstructed",
            "webhook-dynamic-item-update",
            "app-event-contact-add",
        )
    ]
    async with running(settings_for, fake_target, portal) as (client, rt):
        for body in bodies:
            reply = await client.post("/webhooks/bitrix24", content=body, headers=FORM)
            assert reply.status_code == 200, reply.text
        await drain(rt, "erp", budget=10)
    records = {r.json()["subject"]: r.json()["data"]["record"] for r in fake_target.requests}
    assert records["task/123"]["title"] == "Call the client"
    assert records["dynamic-1032/21"]["title"] == "Consultation"
    assert records["contact/134806"]["NAME"] == "Ivan"
    assert portal.stats.commands == 3


async def test_a_failed_read_is_a_retryable_attempt_and_the_target_is_not_called(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    fake_target: FakeTarget,
    portal: FakePortal,
    redis: Any,
) -> None:
    portal.put("deal", {"ID": 7405, "TITLE": "busy"})
    portal.fail("crm.deal.get", "OPERATION_TIME_LIMIT", "Method is blocked", status=429)
    async with running(settings_for, fake_target, portal) as (client, rt):
        await ingest(client, deal(7405))
        await drain(rt, "erp", budget=10)
        assert fake_target.requests == []
        [delivery] = await deliveries(engine)
        assert delivery.status == "retrying"
        [attempt] = await attempts(engine)
        assert (attempt.outcome, attempt.error_class) == ("retry", "b24:OPERATION_TIME_LIMIT")
        assert "Method is blocked" in attempt.error

        await make_due(engine)
        await drain(rt, "erp", budget=10)
    [request] = fake_target.requests
    assert request.json()["data"]["record"]["TITLE"] == "busy"
    assert [d.status for d in await deliveries(engine)] == ["delivered"]


async def test_a_portal_without_rest_makes_the_delivery_dead_with_the_reason(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    fake_target: FakeTarget,
    redis: Any,
) -> None:
    async with running(settings_for, fake_target, None) as (client, rt):
        await ingest(client, deal(7405))
        await drain(rt, "erp", budget=10)
    assert fake_target.requests == []
    [delivery] = await deliveries(engine)
    [attempt] = await attempts(engine)
    assert (delivery.status, attempt.error_class) == ("dead", "enrich:config")


async def test_an_unreachable_portal_is_retried_and_its_webhook_code_stays_out_of_the_row(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    fake_target: FakeTarget,
    redis: Any,
) -> None:
    portal = FakePortal(webhooks={1: "n0t-in-r0ws"})
    await portal.start()
    await portal.stop()  # its port is closed now: every read fails to connect
    async with running(settings_for, fake_target, portal) as (client, rt):
        await ingest(client, deal(7405))
        await drain(rt, "erp", budget=20)
    [attempt] = await attempts(engine)
    assert (attempt.outcome, attempt.error_class) == ("retry", "b24:transport")
    assert "n0t-in-r0ws" not in f"{attempt.error} {attempt.response_excerpt}"
    assert fake_target.requests == []
