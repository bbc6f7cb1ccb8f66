"""A dead job never holds its target longer than the visibility timeout; workers outlive Redis.

Each case here stalled a target before: the drain key outlived a killed job by two minutes
(the relay dropped it only when it saw a `delivering` row whose lease had run out, and a job can
die without leaving one), and a worker never registered again after Redis lost its registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue, Worker
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from dispatch.handover import KEY, drain_and_hand_over
from dispatch.relay import relay_once
from dispatch.runtime import Runtime
from dispatch.worker import HubWorker
from tests.dispatch.harness import deal, deliveries, eventually, hub_with_target, ingest
from tests.fake_target import FakeTarget
from tests.http_app import running_app
from tests.roles import Processes

HOLD = 1.0  # seconds: the visibility timeout of these tests


@pytest.fixture
def queue(urls: tuple[str, str], settings_for: Callable[..., Settings]) -> Iterator[Queue]:
    connection = SyncRedis.from_url(urls[1])
    yield Queue(settings_for().queue_name, connection=connection)
    connection.close()


async def _one_due_delivery(settings: Settings) -> None:
    async with running_app(settings) as client:
        await ingest(client, deal(7405))


async def test_a_job_taken_off_the_queue_by_a_worker_that_died_is_replaced(
    settings_for: Callable[..., Settings], engine: AsyncEngine, queue: Queue, redis: Redis
) -> None:
    settings = settings_for(hub_with_target("http://127.0.0.1:9/erp"))
    await _one_due_delivery(settings)
    assert await relay_once(engine, queue, ["erp"], HOLD) == ["erp"]
    lost = queue.pop_job_id()  # a worker took the job and died before running it
    assert lost is not None and queue.count == 0

    async def enqueued_again() -> bool:
        return await relay_once(engine, queue, ["erp"], HOLD) == ["erp"]

    await eventually(enqueued_again, seconds=30)  # the key lapsed: one timeout, not two minutes
    assert queue.job_ids != [lost] and queue.count == 1


async def test_a_job_waiting_in_the_queue_keeps_its_target(
    settings_for: Callable[..., Settings], engine: AsyncEngine, queue: Queue, redis: Redis
) -> None:
    settings = settings_for(hub_with_target("http://127.0.0.1:9/erp"))
    await _one_due_delivery(settings)
    assert await relay_once(engine, queue, ["erp"], HOLD) == ["erp"]
    [waiting] = queue.job_ids
    for _ in range(4):  # no worker for four times the timeout: the relay renews, never doubles
        await asyncio.sleep(HOLD / 2)
        assert await relay_once(engine, queue, ["erp"], HOLD) == []
    assert queue.job_ids == [waiting]
    assert await redis.get(KEY.format("erp")) == waiting.encode()


async def test_a_running_job_that_dies_holds_its_target_one_timeout_at_most(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    queue: Queue,
    redis: Redis,
    fake_target: FakeTarget,
) -> None:
    fake_target.reply(status=200, delay=30)  # the attempt hangs until the job dies
    settings = settings_for(hub_with_target(fake_target.url), visibility_timeout=HOLD)
    await _one_due_delivery(settings)
    assert await relay_once(engine, queue, ["erp"], HOLD) == ["erp"]
    [job_id] = queue.job_ids
    rt = await Runtime.open(settings)
    try:
        running = asyncio.create_task(drain_and_hand_over(rt, "erp", job_id))
        await eventually(lambda: _received(fake_target), seconds=30)
        await asyncio.sleep(HOLD)  # the job's heartbeat renews the key past the relay's hold
        assert await redis.get(KEY.format("erp")) == job_id.encode()
        running.cancel()  # the worker is gone: nothing releases the key any more
        with contextlib.suppress(asyncio.CancelledError):
            await running
    finally:
        await rt.close()
    assert 0 < await redis.pttl(KEY.format("erp")) <= HOLD * 1000
    await eventually(lambda: _key_gone(redis), seconds=30)
    [delivery] = await deliveries(engine)
    assert delivery.status == "delivering"  # until its lease runs out, then the relay hands it on


async def test_a_worker_registers_again_after_redis_lost_it(
    urls: tuple[str, str], tmp_path: Path, fake_target: FakeTarget, redis: Redis
) -> None:
    config = tmp_path / "mmhub.yaml"
    config.write_text(yaml.safe_dump(hub_with_target(fake_target.url)), encoding="utf-8")
    processes = Processes(urls, config)
    connection = SyncRedis.from_url(urls[1])
    try:
        worker = processes.start("worker")

        async def registered() -> bool:
            return [w.pid for w in Worker.all(connection=connection)] == [worker.pid]

        await eventually(registered, seconds=60)  # processes start slowly on a busy machine
        await redis.flushall()  # as a restart without persistence would
        assert Worker.all(connection=connection) == []
        await eventually(registered, seconds=60)
    finally:
        processes.stop_all()
        connection.close()


async def _received(fake: FakeTarget) -> bool:
    return len(fake.requests) >= 1


async def _key_gone(redis: Redis) -> bool:
    return await redis.exists(KEY.format("erp")) == 0


def test_a_worker_between_jobs_waits_out_a_redis_outage_instead_of_quitting(
    urls: tuple[str, str],
) -> None:
    # RQ's work loop quit ("found an unhandled exception") when one of these met a closed
    # connection; `make soak` lost a worker that way when it killed Valkey.
    live = SyncRedis.from_url(urls[1])
    worker = HubWorker([Queue("mmhub-outage", connection=live)], connection=live)
    with socket.socket() as probe:  # a port nothing listens on: Redis is gone
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker.connection = SyncRedis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
    worker.check_for_suspension(burst=False)
    worker.set_state("idle")
    worker.heartbeat()
    assert worker.get_state() == "idle"
    live.close()
