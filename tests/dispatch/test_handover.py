"""The hand-over between the relay and a drain job: one job per target, and no wake-up lost."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from rq import Queue
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from dispatch import handover
from dispatch.handover import KEY, drain_and_hand_over, enqueue_drain, keep_queued
from dispatch.runtime import Runtime
from tests.dispatch.harness import deal, deliveries, hub_with_target, ingest
from tests.fake_target import FakeTarget
from tests.http_app import HubClient, running_app


@pytest.fixture
def queue(urls: tuple[str, str], redis: Redis) -> Iterator[Queue]:
    connection = SyncRedis.from_url(urls[1])  # RQ speaks synchronous Redis
    yield Queue("drain", connection=connection)
    connection.close()


@asynccontextmanager
async def hub_and_runtime(
    settings: Settings,
) -> AsyncIterator[tuple[HubClient, Runtime]]:
    async with running_app(settings) as client:
        rt = await Runtime.open(settings)
        try:
            yield client, rt
        finally:
            await rt.close()


HOLD = 60.0  # seconds: the visibility timeout


async def test_one_job_per_target_until_its_key_is_gone(queue: Queue, redis: Redis) -> None:
    assert enqueue_drain(queue, "erp", HOLD) is True
    assert enqueue_drain(queue, "erp", HOLD) is False  # queued or running: no second job
    assert enqueue_drain(queue, "crm", HOLD) is True  # another target has its own

    jobs = queue.get_jobs()
    assert [(job.func_name, job.args[0]) for job in jobs] == [
        ("dispatch.jobs.drain_target", "erp"),
        ("dispatch.jobs.drain_target", "crm"),
    ]
    job = jobs[0]
    assert (job.timeout, job.result_ttl, job.failure_ttl) == (600, 0, 3600)
    assert job.description == "drain erp"
    # The key names its job and lapses after one visibility timeout unless renewed.
    assert await redis.get(KEY.format("erp")) == job.id.encode()
    assert job.args[2] == job.id  # the job knows its token
    assert 0 < await redis.ttl(KEY.format("erp")) <= HOLD

    await redis.delete(KEY.format("erp"))  # what a job does when it runs out of work
    assert enqueue_drain(queue, "erp", HOLD) is True
    assert [job.args[0] for job in queue.get_jobs()] == ["erp", "crm", "erp"]


async def test_the_job_drains_everything_due_and_releases_the_key(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    redis: Redis,
    fake_target: FakeTarget,
) -> None:
    settings = settings_for(hub_with_target(fake_target.url))
    async with hub_and_runtime(settings) as (client, rt):
        await ingest(client, deal(1), deal(2), deal(3))
        await redis.set(KEY.format("erp"), "job-1")  # the relay's mark: this job holds the target
        assert await drain_and_hand_over(rt, "erp", "job-1") == 3

    assert [r.status for r in await deliveries(engine)] == ["delivered"] * 3
    assert len(fake_target.requests) == 3
    assert not await redis.exists(KEY.format("erp"))  # the next wake-up enqueues a new job


async def test_work_left_after_the_budget_is_drained_before_leaving(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    redis: Redis,
    fake_target: FakeTarget,
) -> None:
    # A budget far too short for the backlog and one delivery at a time: each drain() stops early,
    # and the job must look again (and take the key back) until nothing is due.
    hub = hub_with_target(fake_target.url, concurrency=1)
    settings = settings_for(hub, drain_budget=timedelta(milliseconds=1))
    async with hub_and_runtime(settings) as (client, rt):
        await ingest(client, *(deal(i) for i in range(1, 9)))
        await redis.set(KEY.format("erp"), "job-1")
        assert await drain_and_hand_over(rt, "erp", "job-1") == 8

    assert [r.status for r in await deliveries(engine)] == ["delivered"] * 8
    assert sorted(r.json()["subject"] for r in fake_target.requests) == sorted(
        f"deal/{i}" for i in range(1, 9)
    )
    assert not await redis.exists(KEY.format("erp"))


async def test_a_job_that_took_over_keeps_the_remaining_work(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    redis: Redis,
    fake_target: FakeTarget,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = hub_with_target(fake_target.url, concurrency=1)
    settings = settings_for(hub, drain_budget=timedelta(milliseconds=1))
    looked = handover.any_due

    async def taken_over_while_looking(conn: Any, target: str) -> bool:
        # The job released the key; the relay's next pass enqueued another job meanwhile.
        await redis.set(KEY.format(target), "other")
        return await looked(conn, target)

    monkeypatch.setattr(handover, "any_due", taken_over_while_looking)
    async with hub_and_runtime(settings) as (client, rt):
        await ingest(client, *(deal(i) for i in range(1, 7)))
        await redis.set(KEY.format("erp"), "job-1")
        sent = await drain_and_hand_over(rt, "erp", "job-1")

    assert sent < 6  # it left after its first round: the other job holds the target now
    statuses = [r.status for r in await deliveries(engine)]
    assert statuses.count("delivered") == sent == len(fake_target.requests)
    assert statuses.count("pending") == 6 - sent
    assert await redis.get(KEY.format("erp")) == b"other"  # not overwritten by this job


async def test_the_job_carries_the_relays_span(queue: Queue) -> None:
    # The job's attempts link to the relay's hand-over span: its traceparent travels with the job.
    relay = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    with trace.use_span(NonRecordingSpan(relay)):
        assert enqueue_drain(queue, "erp", HOLD) is True
    [job] = queue.get_jobs()
    assert job.args == ("erp", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", job.id)


async def test_the_key_names_the_running_job_in_every_round(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    redis: Redis,
    fake_target: FakeTarget,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each round after the first takes the key back: it must still name this job (its token), so
    # that the relay and the heartbeat see whose it is.
    hub = hub_with_target(fake_target.url, concurrency=1)
    settings = settings_for(hub, drain_budget=timedelta(milliseconds=1))
    drain, holders = handover.drain, []

    async def watched(rt: Runtime, target: str, budget: float) -> int:
        holders.append(await redis.get(KEY.format(target)))
        return await drain(rt, target, budget)

    monkeypatch.setattr(handover, "drain", watched)
    async with hub_and_runtime(settings) as (client, rt):
        await ingest(client, *(deal(i) for i in range(1, 5)))
        await redis.set(KEY.format("erp"), "job-1")
        assert await drain_and_hand_over(rt, "erp", "job-1") == 4

    assert [r.status for r in await deliveries(engine)] == ["delivered"] * 4
    assert len(holders) > 1  # it went round more than once
    assert set(holders) == {b"job-1"}
    assert not await redis.exists(KEY.format("erp"))


@pytest.mark.parametrize(
    ("holder", "job_id"),
    [
        # A job enqueued before keys named their job (an upgrade with jobs in the queue) has no
        # token: it takes the key's and releases it, or the target would wait for the key to lapse.
        pytest.param("old-job", None, id="a job without a token adopts the key"),
        # FLUSHALL or a restart took the key: releasing it must not fail the job.
        pytest.param(None, "job-1", id="a key that Redis lost"),
    ],
)
async def test_a_job_leaves_no_key_behind_and_does_not_fail(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    redis: Redis,
    fake_target: FakeTarget,
    holder: str | None,
    job_id: str | None,
) -> None:
    settings = settings_for(hub_with_target(fake_target.url))
    async with hub_and_runtime(settings) as (_, rt):
        if holder is not None:
            await redis.set(KEY.format("erp"), holder, ex=600)
        assert await drain_and_hand_over(rt, "erp", job_id) == 0

    assert not await redis.exists(KEY.format("erp"))


async def test_the_relay_renews_only_a_job_that_waits_in_the_queue(
    queue: Queue, redis: Redis
) -> None:
    key = KEY.format("erp")
    assert keep_queued(queue, "erp", HOLD) is False  # no key: nothing to renew, nothing made
    assert not await redis.exists(key)

    assert enqueue_drain(queue, "erp", HOLD) is True
    await redis.expire(key, 5)
    assert keep_queued(queue, "erp", HOLD) is True  # still queued: renewed for a whole hold
    assert await redis.ttl(key) > 5

    [job] = queue.get_jobs()
    queue.remove(job)  # a worker took it: renewing is the running job's business now
    await redis.expire(key, 5)
    assert keep_queued(queue, "erp", HOLD) is False
    assert await redis.ttl(key) <= 5
