"""The relay: committed, due deliveries → RQ drain jobs, one per target.

It wakes on the NOTIFY that ingest sends in the same transaction as the deliveries (so a fresh
event leaves within milliseconds of its commit, never before), and polls every
`MMHUB_RELAY_POLL_INTERVAL` for retries that fall due, leases that expired, targets whose job died
with its worker and jobs that Redis lost. Several relays may run: the per-target key in `handover` lets one job through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from opentelemetry.trace import SpanKind
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import driver_connection, make_engine
from app.outbox import NOTIFY_CHANNEL
from app.outbox.claims import due_targets
from app.outbox.states import release_held
from app.settings import Settings
from app.tracing import tracer
from dispatch.gauges import keep_gauges
from dispatch.handover import enqueue_drain, keep_queued
from dispatch.listen import listen
from dispatch.pullers import run_pullers
from dispatch.retention import run_retention

log = logging.getLogger(__name__)


async def relay_once(
    engine: AsyncEngine, queue: Queue, targets: list[str], hold: float
) -> list[str]:
    """One pass: release held deliveries, enqueue a drain for every target with due work.

    `hold` is the visibility timeout: a target's drain key lapses after it unless renewed, and
    the relay renews the keys of jobs still waiting in the queue."""
    async with engine.begin() as conn:
        driver = await driver_connection(conn)
        await release_held(driver, targets)
        due = await due_targets(driver, targets)
    enqueued = []
    for target in due:
        with tracer.start_as_current_span(
            "relay hand-over", kind=SpanKind.PRODUCER, attributes={"mmhub.target": target}
        ) as span:
            handed = enqueue_drain(queue, target, hold)
            if not handed:
                keep_queued(queue, target, hold)
            span.set_attribute("mmhub.enqueued", handed)
        if handed:
            enqueued.append(target)
    return enqueued


async def run_relay(settings: Settings, stop: asyncio.Event) -> None:
    """Relay until `stop` is set; database and Redis outages are waited out, not fatal."""
    engine = make_engine(settings.require_database_url, pool_size=2, application_name="mmhub-relay")
    queue = Queue(settings.queue_name, connection=Redis.from_url(settings.require_redis_url))
    targets = sorted(settings.hub.targets)
    wake = asyncio.Event()
    listener = asyncio.create_task(
        listen(settings.require_database_url, NOTIFY_CHANNEL, lambda _payload: wake.set(), stop)
    )
    pullers = asyncio.create_task(run_pullers(settings, stop))  # Bitrix24 offline queues
    every = settings.gauges_interval.total_seconds()
    gauges = asyncio.create_task(keep_gauges(engine, targets, every, stop))
    background = [listener, pullers, gauges]
    if settings.hub.retention is not None:  # one relay at a time purges (an advisory lock)
        background.append(asyncio.create_task(run_retention(engine, settings.hub.retention, stop)))
    poll = settings.relay_poll_interval.total_seconds()
    # A queued job's key is renewed once per poll: it must outlive the gap between two polls.
    hold = max(settings.visibility_timeout.total_seconds(), 2 * poll)
    log.info("relay started for targets %s", ", ".join(targets) or "(none)")
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), poll)
            wake.clear()
            try:
                enqueued = await relay_once(engine, queue, targets, hold)
            except (SQLAlchemyError, OSError, RedisError) as exc:
                log.warning("relay pass failed, retrying: %s", type(exc).__name__)
                await asyncio.sleep(poll)
                continue
            if enqueued:
                log.debug("drain jobs enqueued for %s", ", ".join(enqueued))
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await engine.dispose()
