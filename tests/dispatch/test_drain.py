"""drain(): claims, attempts, next states, ordering, pause, breaker and rate limit, on real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.outbox.states import pause_target, resume_target
from app.settings import Settings
from dispatch.deliver import drain
from dispatch.relay import relay_once
from dispatch.runtime import Runtime
from tests.dispatch.harness import (
    attempts,
    deal,
    deliveries,
    events_traceparents,
    eventually,
    hub_with_target,
    ingest,
    make_due,
)
from tests.fake_target import FakeTarget
from tests.fixture_files import fixture_bytes
from tests.http_app import HubClient, running_app


@asynccontextmanager
async def hub_and_runtime(
    settings_for: Callable[..., Settings], url: str, **target: Any
) -> AsyncIterator[tuple[HubClient, Runtime]]:
    settings = settings_for(hub_with_target(url, **target))
    async with running_app(settings) as client:
        rt = await Runtime.open(settings)
        try:
            yield client, rt
        finally:
            await rt.close()


async def test_delivered_with_one_attempt_row(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    async with hub_and_runtime(settings_for, fake_target.url) as (client, rt):
        [event_id] = await ingest(client, deal(7405))
        assert await drain(rt, "erp", budget=10) == 1

    [request] = fake_target.requests
    [delivery] = await deliveries(engine)
    assert request.json()["id"] == event_id
    assert request.json()["subject"] == "deal/7405"
    assert request.headers["idempotency-key"] == str(delivery.id)
    # The attempt is a span of the webhook's trace: same trace id, its own span id.
    stored = (await events_traceparents(engine))[event_id].split("-")
    sent = request.headers["traceparent"].split("-")
    assert (sent[0], sent[1], sent[3]) == (stored[0], stored[1], stored[3])
    assert sent[2] != stored[2]
    assert (delivery.status, delivery.attempt_count, delivery.claim_token) == ("delivered", 1, None)
    assert delivery.delivered_at is not None
    [attempt] = await attempts(engine)
    assert (attempt.number, attempt.http_status, attempt.outcome, attempt.error_class) == (
        1,
        200,
        "delivered",
        None,
    )


async def test_retryable_failure_then_success_keeps_the_idempotency_key(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    fake_target.reply(
        status=503,
        body="<html>Сервис недоступен</html>",
        headers={"content-type": "text/html; charset=utf-8"},
    )
    async with hub_and_runtime(settings_for, fake_target.url) as (client, rt):
        await ingest(client, deal(7405))
        await drain(rt, "erp", budget=10)
        [delivery] = await deliveries(engine)
        assert delivery.status == "retrying"
        assert delivery.last_error.startswith("http_503")
        await make_due(engine)
        await drain(rt, "erp", budget=10)

    [delivery] = await deliveries(engine)
    assert delivery.status == "delivered"
    first, second = await attempts(engine)
    assert (first.number, first.http_status, first.outcome) == (1, 503, "retry")
    assert "Сервис недоступен" in first.response_excerpt
    assert (second.number, second.outcome) == (2, "delivered")
    keys = {r.headers["idempotency-key"] for r in fake_target.requests}
    assert keys == {str(delivery.id)}


async def test_permanent_failure_is_dead_at_once(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    fake_target.reply(status=422, body={"error": "unknown counterparty"})
    async with hub_and_runtime(settings_for, fake_target.url) as (client, rt):
        await ingest(client, deal(7405))
        await drain(rt, "erp", budget=10)
        await make_due(engine)
        await drain(rt, "erp", budget=10)

    [delivery] = await deliveries(engine)
    assert delivery.status == "dead"
    assert "http_422" in delivery.last_error
    assert len(fake_target.requests) == 1


async def test_retries_exhausted_end_dead_with_the_last_reason(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    fake_target.set_default(status=502)
    async with hub_and_runtime(settings_for, fake_target.url) as (client, rt):
        await ingest(client, deal(7405))
        for _ in range(6):
            await make_due(engine)
            await drain(rt, "erp", budget=10)

    [delivery] = await deliveries(engine)
    assert delivery.status == "dead"
    assert delivery.last_error.startswith("retries exhausted after 4 attempts: http_502")
    assert [a.number for a in await attempts(engine)] == [1, 2, 3, 4]


async def test_a_retrying_head_holds_its_subject_and_others_flow(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    fake_target.set_default(status=503)
    async with hub_and_runtime(settings_for, fake_target.url) as (client, rt):
        same = [deal(7405, ts=1766047124 + i) for i in range(3)]
        await ingest(client, same[0], deal(9001), same[1], same[2])
        await drain(rt, "erp", budget=10)
        # Only the head of deal/7405 and deal/9001 were attempted.
        assert sorted(r.json()["subject"] for r in fake_target.requests) == [
            "deal/7405",
            "deal/9001",
        ]
        rows = await deliveries(engine)
        assert [(r.ordering_key, r.status) for r in rows] == [
            ("deal/7405", "retrying"),
            ("deal/9001", "retrying"),
            ("deal/7405", "pending"),
            ("deal/7405", "pending"),
        ]
        fake_target.set_default(status=200)
        for _ in range(5):
            await make_due(engine)
            await drain(rt, "erp", budget=10)

    assert {r.status for r in await deliveries(engine)} == {"delivered"}
    times = [r.json()["time"] for r in fake_target.requests if r.json()["subject"] == "deal/7405"]
    assert times[1:] == ["2025-12-18T08:38:44Z", "2025-12-18T08:38:45Z", "2025-12-18T08:38:46Z"]


async def test_when_the_head_dies_the_next_proceeds(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    fake_target.reply(status=400)
    async with hub_and_runtime(settings_for, fake_target.url) as (client, rt):
        await ingest(client, deal(7405, ts=1), deal(7405, ts=2))
        await drain(rt, "erp", budget=10)

    assert [r.status for r in await deliveries(engine)] == ["dead", "delivered"]
    assert [r.json()["time"] for r in fake_target.requests] == [
        "1970-01-01T00:00:01Z",
        "1970-01-01T00:00:02Z",
    ]


async def test_pause_holds_without_attempts_and_resume_delivers(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    async with hub_and_runtime(settings_for, fake_target.url) as (client, rt):
        async with rt.sessions.begin() as session:
            await pause_target(session, "erp", "1C maintenance", "test")
        await ingest(client, deal(1), deal(2))
        await drain(rt, "erp", budget=10)
        assert [r.status for r in await deliveries(engine)] == ["held", "held"]
        assert fake_target.requests == []
        async with rt.sessions.begin() as session:
            assert await resume_target(session, "erp") == 2
        await drain(rt, "erp", budget=10)

    assert [r.status for r in await deliveries(engine)] == ["delivered", "delivered"]
    assert [a.number for a in await attempts(engine)] == [1, 1]


async def test_breaker_opens_holds_and_recovers_through_one_probe(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    fake_target: FakeTarget,
    redis: Any,
) -> None:
    breaker = {"min_attempts": 4, "failure_ratio": 0.5, "window": "60s", "open_for": "300ms"}
    fake_target.set_default(status=503)
    async with hub_and_runtime(
        settings_for, fake_target.url, circuit_breaker=breaker, concurrency=4
    ) as (client, rt):
        await ingest(client, *(deal(i) for i in range(1, 9)))
        await drain(rt, "erp", budget=10)
        async with engine.connect() as conn:
            open_until = (
                await conn.execute(
                    text("SELECT breaker_open_until FROM target_states WHERE target = 'erp'")
                )
            ).scalar()
        assert open_until is not None
        sent_while_closed = len(fake_target.requests)
        await make_due(engine)
        await drain(rt, "erp", budget=10)
        assert len(fake_target.requests) == sent_while_closed  # open: no attempts spent
        assert {r.status for r in await deliveries(engine)} == {"held"}

        fake_target.set_default(status=200)

        async def half_open() -> bool:
            async with engine.connect() as conn:
                return bool(
                    (
                        await conn.execute(
                            text("SELECT breaker_open_until <= now() FROM target_states")
                        )
                    ).scalar()
                )

        await eventually(half_open)
        from redis import Redis
        from rq import Queue

        queue = Queue("test", connection=Redis.from_url(rt.settings.require_redis_url))
        await relay_once(rt.engine, queue, ["erp"], hold=60)  # releases the held deliveries
        await drain(rt, "erp", budget=10)

    assert {r.status for r in await deliveries(engine)} == {"delivered"}
    probe = fake_target.requests[sent_while_closed]
    assert probe.headers["idempotency-key"]
    async with engine.connect() as conn:
        state = (
            await conn.execute(
                text("SELECT breaker_open_until, breaker_reset_at FROM target_states")
            )
        ).one()
    assert state[0] is None
    assert state[1] is not None


async def test_rate_limit_is_shared_and_bounds_requests_per_second(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    fake_target: FakeTarget,
    redis: Any,
) -> None:
    limit = {"per_second": 4, "burst": 2}
    async with hub_and_runtime(settings_for, fake_target.url, rate_limit=limit) as (client, rt):
        await ingest(client, *(deal(i) for i in range(1, 13)))
        # Two drains at once, as two workers would: they share the bucket in Redis.
        await asyncio.gather(drain(rt, "erp", budget=30), drain(rt, "erp", budget=30))

    assert {r.status for r in await deliveries(engine)} == {"delivered"}
    stamps = sorted(r.received_at.timestamp() for r in fake_target.requests)
    assert len(stamps) == 12
    # In any one-second window: at most burst + rate requests.
    for i, start in enumerate(stamps):
        assert sum(1 for s in stamps[i:] if s < start + 1.0) <= 2 + 4


async def test_two_drains_never_send_one_delivery_twice(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    settings = settings_for(hub_with_target(fake_target.url))
    async with running_app(settings) as client:
        await ingest(client, *(deal(i) for i in range(1, 121)))
    one, two = await Runtime.open(settings), await Runtime.open(settings)
    try:
        await asyncio.gather(drain(one, "erp", budget=30), drain(two, "erp", budget=30))
    finally:
        await one.close()
        await two.close()

    keys = [r.headers["idempotency-key"] for r in fake_target.requests]
    assert len(keys) == len(set(keys)) == 120
    assert [a.number for a in await attempts(engine)] == [1] * 120


async def test_onec_order_reaches_bitrix24_with_rendered_params(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    from tests.dispatch.harness import BASIC_1C, onec_to_bitrix24

    fake_target.set_default(status=200, body={"result": 991, "time": {}})
    settings = settings_for(onec_to_bitrix24(fake_target.url))
    async with running_app(settings) as client:
        reply = await client.post(
            "/webhooks/1c",
            content=fixture_bytes("onec/order-updated-with-bom.json"),
            headers={"content-type": "application/json", "authorization": BASIC_1C},
        )
        assert reply.status_code == 200
    rt = await Runtime.open(settings)
    try:
        await drain(rt, "crm", budget=10)
    finally:
        await rt.close()

    [request] = fake_target.requests
    assert request.path == "/rest/1/code/crm.timeline.comment.add.json"
    assert request.json() == {
        "fields": {
            "ENTITY_TYPE": "deal",
            "COMMENT": "1C order УТ-00000123",
            "ENTITY_ID": "Документ.ЗаказКлиента/b1c89da7-cb6a-11e6-aede-5404a6b4b8ed",
        }
    }
    assert [r.status for r in await deliveries(engine)] == ["delivered"]


async def test_bitrix24_error_with_http_200_is_retried(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    from tests.dispatch.harness import BASIC_1C, onec_to_bitrix24

    fake_target.reply(
        status=200, body={"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    )
    settings = settings_for(onec_to_bitrix24(fake_target.url))
    async with running_app(settings) as client:
        await client.post(
            "/webhooks/1c",
            content=fixture_bytes("onec/order-updated-with-bom.json"),
            headers={"content-type": "application/json", "authorization": BASIC_1C},
        )
    rt = await Runtime.open(settings)
    try:
        await drain(rt, "crm", budget=10)
        [delivery] = await deliveries(engine)
        assert delivery.status == "retrying"
        assert delivery.last_error.startswith("b24:QUERY_LIMIT_EXCEEDED")
        await make_due(engine)
        await drain(rt, "crm", budget=10)
    finally:
        await rt.close()
    [delivery] = await deliveries(engine)
    assert delivery.status == "delivered"
    assert [a.error_class for a in await attempts(engine)] == ["b24:QUERY_LIMIT_EXCEEDED", None]


async def test_retry_after_is_honoured(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    fake_target.reply(status=429, headers={"Retry-After": "120"})
    retry = {"schedule": ["1s"], "timeout": "2s"}
    async with hub_and_runtime(settings_for, fake_target.url, retry=retry) as (client, rt):
        await ingest(client, deal(7405))
        await drain(rt, "erp", budget=10)

    [delivery] = await deliveries(engine)
    [attempt] = await attempts(engine)
    assert delivery.status == "retrying"
    # The schedule says 1s; the target asked for two minutes and gets them.
    wait = (delivery.next_attempt_at - attempt.started_at).total_seconds()
    assert 119 <= wait <= 121
