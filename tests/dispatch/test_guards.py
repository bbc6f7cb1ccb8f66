"""The guards that matter most, each tested without relying on chance.

Planted one at a time, these bugs once went unnoticed: a subject's next delivery claimed while its
head was still in flight (caught 3 runs in 9, by chance), a replayed delivery that failed again
dying at once instead of restarting its schedule, and retries without jitter in production (the
unit tests always passed their own random source).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from app.support.actions import replay_delivery
from dispatch.deliver import drain
from dispatch.runtime import Runtime
from tests.dispatch.harness import (
    attempts,
    deal,
    deliveries,
    eventually,
    hub_with_target,
    ingest,
    make_due,
)
from tests.fake_target import FakeTarget
from tests.http_app import running_app


async def test_a_head_in_flight_holds_its_subject_while_another_drain_runs(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    fake_target.reply(status=200, delay=30)  # the head's attempt hangs
    settings = settings_for(hub_with_target(fake_target.url))
    first, second = await Runtime.open(settings), await Runtime.open(settings)
    try:
        async with running_app(settings) as client:
            await ingest(client, deal(7405, ts=1))
            head = asyncio.create_task(drain(first, "erp", budget=60))
            await eventually(lambda: _received(fake_target, 1), seconds=30)
            await ingest(client, deal(7405, ts=2), deal(9001, ts=3))
            # Another worker's drain, while the head is on its way: the other subject flows,
            # the head's successor waits.
            assert await drain(second, "erp", budget=10) == 1
            subjects = [r.json()["subject"] for r in fake_target.requests]
            assert subjects == ["deal/7405", "deal/9001"]
            rows = await deliveries(engine)
            assert [(r.ordering_key, r.status) for r in rows] == [
                ("deal/7405", "delivering"),
                ("deal/7405", "pending"),
                ("deal/9001", "delivered"),
            ]
            head.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await head
    finally:
        await first.close()
        await second.close()


async def test_a_replayed_delivery_that_fails_again_restarts_its_schedule(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    fake_target.set_default(status=503)
    settings = settings_for(hub_with_target(fake_target.url))
    rt = await Runtime.open(settings)
    try:
        async with running_app(settings) as client:
            await ingest(client, deal(7405))
        for _ in range(4):  # the first attempt and the schedule's three retries
            await drain(rt, "erp", budget=10)
            await make_due(engine)
        [dead] = await deliveries(engine)
        assert (dead.status, dead.attempt_count) == ("dead", 4)

        async with rt.sessions.begin() as session:
            await replay_delivery(session, dead.id, "support", "ERP fixed")
        await drain(rt, "erp", budget=10)  # the replayed attempt fails again
    finally:
        await rt.close()

    [replayed] = await deliveries(engine)
    assert (replayed.status, replayed.attempt_count) == ("retrying", 5)
    assert replayed.last_error.startswith("http_503")
    # The schedule starts over: the first step (1 h, +-20 % jitter), not death.
    async with engine.connect() as conn:
        wait = (
            await conn.execute(
                text("SELECT next_attempt_at - now() FROM deliveries WHERE id = :id"),
                {"id": replayed.id},
            )
        ).scalar_one()
    assert timedelta(minutes=47) < wait <= timedelta(minutes=72)
    assert [a.manual for a in await attempts(engine)] == [False] * 4 + [True]


async def test_retries_in_production_are_jittered(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    """The drain's own random source, as in production: failures at the same moment spread."""
    fake_target.set_default(status=503)
    # The breaker stays out of it: twelve failures would open it and hold the rest.
    config = hub_with_target(fake_target.url, circuit_breaker={"enabled": False})
    settings = settings_for(config)
    rt = await Runtime.open(settings)
    try:
        async with running_app(settings) as client:
            await ingest(client, *(deal(i) for i in range(1, 13)))
        await drain(rt, "erp", budget=10)
    finally:
        await rt.close()

    async with engine.connect() as conn:
        waits = (
            await conn.execute(
                text(
                    "SELECT extract(epoch FROM d.next_attempt_at - a.started_at) FROM deliveries d"
                    " JOIN delivery_attempts a ON a.delivery_id = d.id WHERE d.status = 'retrying'"
                )
            )
        ).scalars()
        seconds = [float(w) for w in waits]
    assert len(seconds) == 12
    assert all(3600 * 0.8 - 5 <= s <= 3600 * 1.2 + 5 for s in seconds)
    assert len({round(s) for s in seconds}) >= 10  # spread, not twelve retries at one instant


async def _received(fake: FakeTarget, count: int) -> bool:
    return len(fake.requests) >= count
