"""A target's state in PostgreSQL, which every worker honours: pause and resume, hold and release,
the gate a drain reads before it claims and the circuit breaker it judges after it records.

The breaker lives in PostgreSQL: the attempt rows it judges are already there, and its state
survives a Redis flush. Statements are in asyncpg's style, for the drain's connection, the relay
and the admin services alike. Lock order: a statement that changes target_states takes that row
first; hold and release then lock deliveries in id order and skip rows another transaction holds
(a claim, a record, a cancel: none of those rows is waiting), so they never wait on a delivery and
cannot close a cycle with a drain recording its batch (deliveries, then the breaker's row). What
they skip is held by the drain when it next reads the gate, or released by the relay's next pass.
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import driver_connection, retry_conflicts
from app.hubconfig import CircuitBreaker
from app.models import TargetState


class Gate(enum.Enum):
    CLOSED = "closed"  # deliver freely
    HALF_OPEN = "half_open"  # one probe decides
    OPEN = "open"  # hold everything, spend no attempts
    PAUSED = "paused"  # an operator said so


_GATE = "SELECT paused, breaker_open_until, now() AS now FROM target_states WHERE target = $1"
_WINDOW = (
    "SELECT count(*), count(*) FILTER (WHERE a.outcome = 'retry') "
    "FROM delivery_attempts a WHERE a.target = $1 AND a.manual = false "
    "AND a.started_at > greatest(now() - $2::interval, coalesce("
    "(SELECT breaker_reset_at FROM target_states WHERE target = $1), '-infinity'::timestamptz))"
)
_OPEN = (
    "INSERT INTO target_states (target, breaker_open_until, updated_at) "
    "VALUES ($1, now() + $2::interval, now()) ON CONFLICT (target) DO UPDATE "
    "SET breaker_open_until = excluded.breaker_open_until, updated_at = now()"
)
_CLOSE = (
    "INSERT INTO target_states (target, breaker_open_until, breaker_reset_at, updated_at) "
    "VALUES ($1, NULL, now(), now()) ON CONFLICT (target) DO UPDATE "
    "SET breaker_open_until = NULL, breaker_reset_at = now(), updated_at = now()"
)

_HOLD = """
WITH locked AS (
    SELECT id FROM deliveries
    WHERE target = $1 AND status IN ('pending', 'retrying')
    ORDER BY id FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d SET status = 'held', updated_at = now()
FROM locked WHERE d.id = locked.id
"""
# Only targets neither paused nor broken open: a breaker that is still open keeps its hold.
_RELEASE = """
WITH locked AS (
    SELECT id FROM deliveries
    WHERE target = ANY($1::text[]) AND status = 'held'
      AND target NOT IN (
          SELECT target FROM target_states WHERE paused OR breaker_open_until > now())
    ORDER BY id FOR UPDATE OF deliveries SKIP LOCKED
)
UPDATE deliveries d
SET status = CASE WHEN d.attempt_count > 0 THEN 'retrying' ELSE 'pending' END,
    next_attempt_at = now(), updated_at = now()
FROM locked WHERE d.id = locked.id
"""


async def hold_waiting(conn: Any, target: str) -> int:
    """Mark the target's waiting deliveries `held` (asyncpg connection); returns how many."""
    status: str = await conn.execute(_HOLD, target)  # "UPDATE 12"
    return int(status.rsplit(" ", 1)[-1])


async def release_held(conn: Any, targets: list[str]) -> int:
    """Held deliveries of these targets, if neither paused nor open, are due again now."""
    status: str = await conn.execute(_RELEASE, targets)
    return int(status.rsplit(" ", 1)[-1])


async def gate(conn: Any, target: str) -> Gate:
    """The target's state as every worker sees it now."""
    row = await conn.fetchrow(_GATE, target)
    if row is None:
        return Gate.CLOSED
    if row["paused"]:
        return Gate.PAUSED
    if row["breaker_open_until"] is None:
        return Gate.CLOSED
    return Gate.OPEN if row["breaker_open_until"] > row["now"] else Gate.HALF_OPEN


async def judge_breaker(
    conn: Any, target: str, config: CircuitBreaker, *, probe_ok: bool | None, failed: bool
) -> Gate:
    """Update the breaker after a batch: close or reopen after a probe, open on a failure ratio.

    A batch without a retryable failure cannot open it (the ratio only falls), so the window is
    counted only when one happened: a healthy target costs no query.
    """
    if not config.enabled:
        return Gate.CLOSED
    if probe_ok is True:
        await conn.execute(_CLOSE, target)
        return Gate.CLOSED
    if probe_ok is None:
        if not failed:
            return Gate.CLOSED
        total, failures = await conn.fetchrow(_WINDOW, target, config.window)
        if total < config.min_attempts or failures < config.failure_ratio * total:
            return Gate.CLOSED
    await conn.execute(_OPEN, target, config.open_for)
    return Gate.OPEN


@retry_conflicts
async def pause_target(session: AsyncSession, target: str, reason: str | None, actor: str) -> int:
    """Pause a target: its waiting deliveries become `held`; returns how many. Only flushes."""
    async with session.begin_nested():  # a conflict retries this step, not the caller's transaction
        await session.execute(
            insert(TargetState)
            .values(
                target=target,
                paused=True,
                paused_reason=reason,
                paused_by=actor,
                paused_at=func.now(),
            )
            .on_conflict_do_update(
                index_elements=["target"],
                set_={
                    "paused": True,
                    "paused_reason": reason,
                    "paused_by": actor,
                    "paused_at": func.now(),
                    "updated_at": func.now(),
                },
            )
        )
        return await hold_waiting(await driver_connection(session), target)


@retry_conflicts
async def resume_target(session: AsyncSession, target: str) -> int:
    """Resume a target: its held deliveries are due again at once; returns how many."""
    async with session.begin_nested():
        await session.execute(
            update(TargetState)
            .where(TargetState.target == target)
            .values(
                paused=False,
                paused_reason=None,
                paused_by=None,
                paused_at=None,
                updated_at=func.now(),
            )
        )
        return await release_held(await driver_connection(session), [target])


async def get_state(session: AsyncSession, target: str) -> TargetState | None:
    return (
        await session.execute(select(TargetState).where(TargetState.target == target))
    ).scalar_one_or_none()
