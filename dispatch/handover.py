"""One drain job per target at a time, without losing a wake-up.

The key `mmhub:drain:{target}` means "a job for this target is queued or running". The relay sets it
with NX before enqueueing; the job deletes it when it runs out of work, then looks once more, so a
delivery committed just before the delete is not left waiting for the next poll. The key expires on
its own if a worker dies, and the relay rebuilds the job if Redis loses it.
"""

from __future__ import annotations

import logging

from rq import Queue
from sqlalchemy import text

from app.tracing import traceparent
from dispatch.deliver import drain
from dispatch.runtime import Runtime

log = logging.getLogger(__name__)

KEY = "mmhub:drain:{}"
KEY_TTL = 120  # seconds; longer than a drain budget, refreshed while a job works

_ANY_DUE = text(
    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE target = :target "
    "AND status IN ('pending', 'retrying', 'delivering') AND next_attempt_at <= now() "
    "AND (status <> 'delivering' OR lease_until < now()))"
)


def enqueue_drain(queue: Queue, target: str) -> bool:
    """Enqueue a drain job unless one is queued or running; returns whether it enqueued."""
    if not queue.connection.set(KEY.format(target), "1", nx=True, ex=KEY_TTL):
        return False
    queue.enqueue(
        "dispatch.jobs.drain_target",
        target,
        traceparent(),  # the relay's hand-over span: the job's attempts link to it
        job_timeout=600,
        result_ttl=0,
        failure_ttl=3600,
        description=f"drain {target}",
    )
    return True


async def drain_and_hand_over(rt: Runtime, target: str) -> int:
    """Drain the target; before leaving, release the key and look once more."""
    key = KEY.format(target)
    budget = rt.settings.drain_budget.total_seconds()
    total = 0
    while True:
        await rt.redis.expire(key, KEY_TTL)
        total += await drain(rt, target, budget)
        await rt.redis.delete(key)
        async with rt.engine.connect() as conn:
            due = (await conn.execute(_ANY_DUE, {"target": target})).scalar_one()
        # Still work (budget spent, or it arrived meanwhile): continue if no other job took over.
        if not due or not await rt.redis.set(key, "1", nx=True, ex=KEY_TTL):
            return total
