"""The contract's metrics: counted where things happen, gauges read from the database by the relay."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import make_sessionmaker
from app.outbox.states import pause_target, resume_target
from app.settings import Settings
from dispatch.deliver import drain
from dispatch.gauges import refresh_gauges
from dispatch.runtime import Runtime
from tests.dispatch.harness import FORM, deal, deliveries, hub_with_target, ingest
from tests.fake_target import FakeTarget
from tests.http_app import running_app


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_ingest_counts_events_refusals_and_http_requests(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:  # `engine`: the tables start empty, so the deals are new events
    accepted = {"source": "bitrix24", "type": "ONCRMDEALADD"}
    refused = {"source": "bitrix24", "status": "401"}
    http_ok = {"method": "POST", "route": "/webhooks/bitrix24", "status": "200"}
    before = (
        sample("mmhub_ingested_events_total", **accepted),
        sample("mmhub_ingest_rejected_total", **refused),
        sample("http_requests_total", **http_ok),
        sample("http_request_duration_seconds_count", **http_ok),
    )
    async with running_app(settings_for(hub_with_target(fake_target.url))) as client:
        await ingest(client, deal(1), deal(2), deal(1))  # the third is a duplicate
        wrong_token = deal(3).replace(b"jvh9y1ulvt2m6k5or90v9mg8nn32ozas", b"x" * 32)
        reply = await client.post("/webhooks/bitrix24", content=wrong_token, headers=FORM)
        assert reply.status_code == 401
        exposed = (await client.get("/metrics")).text

    after = (
        sample("mmhub_ingested_events_total", **accepted),
        sample("mmhub_ingest_rejected_total", **refused),
        sample("http_requests_total", **http_ok),
        sample("http_request_duration_seconds_count", **http_ok),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 3, 3]
    assert 'mmhub_ingested_events_total{source="bitrix24",type="ONCRMDEALADD"}' in exposed
    assert 'http_requests_total{method="POST",route="/webhooks/bitrix24",status="401"}' in exposed


async def test_attempts_dead_deliveries_and_end_to_end_time_are_counted(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    settings = settings_for(hub_with_target(fake_target.url))
    delivered = {"target": "erp", "outcome": "delivered", "status": "200"}
    refused = {"target": "erp", "outcome": "dead", "status": "400"}
    before = (
        sample("mmhub_delivery_attempts_total", **delivered),
        sample("mmhub_delivery_attempts_total", **refused),
        sample("mmhub_dead_total", target="erp"),
        sample("mmhub_event_to_delivery_seconds_count", target="erp"),
        sample("mmhub_delivery_duration_seconds_count", target="erp"),
    )
    fake_target.reply(status=200)
    fake_target.reply(status=400)  # permanent: dead at once
    async with running_app(settings) as client:
        await ingest(client, deal(1), deal(2))
        rt = await Runtime.open(settings)
        try:
            assert await drain(rt, "erp", budget=10, lanes=1) == 2
        finally:
            await rt.close()

    after = (
        sample("mmhub_delivery_attempts_total", **delivered),
        sample("mmhub_delivery_attempts_total", **refused),
        sample("mmhub_dead_total", target="erp"),
        sample("mmhub_event_to_delivery_seconds_count", target="erp"),
        sample("mmhub_delivery_duration_seconds_count", target="erp"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1, 2]
    assert sorted(d.status for d in await deliveries(engine)) == ["dead", "delivered"]


async def test_relay_gauges_show_backlog_lag_pause_and_open_breaker(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    async with running_app(settings_for(hub_with_target(fake_target.url))) as client:
        await ingest(client, deal(1), deal(2), deal(3))
    sessions = make_sessionmaker(engine)
    async with sessions.begin() as session:
        assert await pause_target(session, "erp", "maintenance", "test") == 3
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE deliveries SET next_attempt_at = now() - interval '90 seconds' "
                "WHERE seq = (SELECT min(seq) FROM deliveries)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO target_states (target, breaker_open_until) "
                "VALUES ('ww', now() + interval '1 minute')"
            )
        )

    await refresh_gauges(engine, ["erp", "ww"])
    assert sample("mmhub_deliveries", target="erp", status="held") == 3
    assert sample("mmhub_deliveries", target="erp", status="pending") == 0
    assert sample("mmhub_oldest_due_seconds", target="erp") >= 90  # held is waiting too
    assert sample("mmhub_target_paused", target="erp") == 1
    assert sample("mmhub_circuit_open", target="erp") == 0
    assert sample("mmhub_circuit_open", target="ww") == 1
    assert sample("mmhub_deliveries", target="ww", status="pending") == 0

    async with sessions.begin() as session:
        assert await resume_target(session, "erp") == 3
    await refresh_gauges(engine, ["erp", "ww"])
    assert sample("mmhub_deliveries", target="erp", status="held") == 0
    assert sample("mmhub_deliveries", target="erp", status="pending") == 3
    assert sample("mmhub_target_paused", target="erp") == 0
    assert sample("mmhub_oldest_due_seconds", target="erp") < 90  # released: due again now
