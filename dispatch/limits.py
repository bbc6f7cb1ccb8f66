"""Per-target limits shared by every worker: a token bucket in Redis, a circuit breaker in PostgreSQL.

The token bucket lives in app.ratelimit (the Bitrix24 REST client in app/ shares it). The breaker
lives in PostgreSQL: the attempt rows it judges are already there, and its state survives a Redis
flush.
Pause and breaker state are read on the drain's asyncpg connection, inside its claim transaction.
"""

from __future__ import annotations

import enum
from typing import Any

from app.hubconfig import CircuitBreaker
from app.ratelimit import TokenBucket

__all__ = ["Gate", "TokenBucket", "gate", "judge_breaker"]


class Gate(enum.Enum):
    CLOSED = "closed"  # deliver freely
    HALF_OPEN = "half_open"  # one probe decides
    OPEN = "open"  # hold everything, spend no attempts
    PAUSED = "paused"  # an operator said so


# The drain works on the pool's asyncpg connection (see dispatch.deliver), so these do too.
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
