"""One drain job per target at a time, without losing a wake-up, and never held by a dead job.

The key `mmhub:drain:{target}` is a Redis lock (redis-py's) whose token is the id of the job that
holds the target. The relay takes it with the job's id before enqueueing. While the job waits in
the queue the relay keeps it (a queued job survives any worker); once a worker runs the job, the
job's heartbeat keeps it. Either way it lives one visibility timeout at a time, so a worker killed
at any point, even between taking a job off the queue and starting it, holds its target for at
most `MMHUB_VISIBILITY_TIMEOUT`; the relay's next poll then enqueues a new job. When Redis loses
the key (restart, FLUSHALL) the relay simply enqueues again.

When it runs out of work the job releases the key, then looks once more, so a delivery committed
just before the release is not left waiting for the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from redis.asyncio.lock import Lock as AsyncLock
from redis.exceptions import LockError, RedisError
from redis.lock import Lock
from rq import Queue

from app.db import driver_connection
from app.outbox.claims import any_due
from app.tracing import traceparent
from dispatch.deliver import drain
from dispatch.runtime import Runtime

log = logging.getLogger(__name__)

KEY = "mmhub:drain:{}"


def enqueue_drain(queue: Queue, target: str, hold: float) -> bool:
    """Enqueue a drain job unless one holds the target; returns whether it enqueued.

    `hold` (seconds) is how long the key lives unless renewed: the visibility timeout."""
    job_id = str(uuid.uuid4())
    lock = Lock(queue.connection, KEY.format(target), timeout=hold, thread_local=False)
    if not lock.acquire(blocking=False, token=job_id):
        return False
    queue.enqueue(
        "dispatch.jobs.drain_target",
        target,
        traceparent(),  # the relay's hand-over span: the job's attempts link to it
        job_id,
        job_id=job_id,
        job_timeout=600,
        result_ttl=0,
        failure_ttl=3600,
        description=f"drain {target}",
    )
    return True


def keep_queued(queue: Queue, target: str, hold: float) -> bool:
    """Renew the key of a job that still waits in the queue; returns whether it did.

    A job that left the queue is a running job's to renew; if its worker died, the key lapses."""
    key = KEY.format(target)
    holder = queue.connection.get(key)
    if holder is None or queue.get_job_position(_text(holder)) is None:
        return False
    lock = Lock(queue.connection, key, timeout=hold, thread_local=False)
    lock.local.token = holder
    with contextlib.suppress(LockError):  # it lapsed or changed hands meanwhile
        lock.reacquire()
        return True
    return False


async def drain_and_hand_over(rt: Runtime, target: str, job_id: str | None = None) -> int:
    """Drain the target while holding its key; before leaving, release it and look once more."""
    hold = rt.settings.visibility_timeout.total_seconds()
    lock = AsyncLock(rt.redis, KEY.format(target), timeout=hold, thread_local=False)
    if job_id is None:  # a job enqueued before keys named their job: adopt whatever holds it
        job_id = _text(await rt.redis.get(KEY.format(target)) or b"") or str(uuid.uuid4())
    lock.local.token = job_id.encode()
    budget = rt.settings.drain_budget.total_seconds()
    total = 0
    async with _heartbeat(lock, hold):
        while True:
            total += await drain(rt, target, budget)
            with contextlib.suppress(LockError):  # lapsed (Redis lost it): nothing to release
                await lock.release()
            async with rt.engine.connect() as conn:
                due = await any_due(await driver_connection(conn), target)
            # Still work (budget spent, or it arrived meanwhile): continue if no other job took over.
            if not due or not await lock.acquire(blocking=False, token=job_id):
                return total


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@contextlib.asynccontextmanager
async def _heartbeat(lock: AsyncLock, hold: float) -> AsyncIterator[None]:
    """Renew the key three times per visibility timeout while the job runs."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(hold / 3)
            try:
                await lock.reacquire()
            except LockError:
                pass  # released between batches, or lost with Redis' data: the relay sees to it
            except RedisError as exc:  # Redis restarting: try again at the next beat
                log.warning("drain key not renewed: %s", type(exc).__name__)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
