"""Per-target limits shared by every worker: a token bucket in Redis, a circuit breaker in PostgreSQL.

The token bucket is a dozen lines of Lua because no well-kept Python library offers a Redis token
bucket with a burst (the `limits` package has fixed and moving windows only). The breaker lives in
PostgreSQL: the attempt rows it judges are already there, and its state survives a Redis flush.
"""

from __future__ import annotations

import enum

from redis.asyncio import Redis
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.hubconfig import CircuitBreaker, RateLimit
from app.models import TargetState

# Returns 0 when a token was taken, else the seconds until one will be there (none is taken).
_BUCKET_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return tostring(wait)
"""


class TokenBucket:
    """`take()` returns 0 when the request may go now, else how long to wait before asking again."""

    def __init__(self, redis: Redis, target: str, limit: RateLimit) -> None:
        self._script = redis.register_script(_BUCKET_SCRIPT)
        self._key = f"mmhub:bucket:{target}"
        self._args = [limit.per_second, limit.burst]

    async def take(self) -> float:
        return float(await self._script(keys=[self._key], args=self._args))


class Gate(enum.Enum):
    CLOSED = "closed"  # deliver freely
    HALF_OPEN = "half_open"  # one probe decides
    OPEN = "open"  # hold everything, spend no attempts
    PAUSED = "paused"  # an operator said so


async def gate(session: AsyncSession, target: str) -> Gate:
    """The target's state as every worker sees it now."""
    row = (
        await session.execute(
            select(TargetState.paused, TargetState.breaker_open_until, func.now()).where(
                TargetState.target == target
            )
        )
    ).one_or_none()
    if row is None:
        return Gate.CLOSED
    paused, open_until, now = row
    if paused:
        return Gate.PAUSED
    if open_until is None:
        return Gate.CLOSED
    return Gate.OPEN if open_until > now else Gate.HALF_OPEN


async def judge_breaker(
    session: AsyncSession, target: str, config: CircuitBreaker, probe_ok: bool | None
) -> Gate:
    """Update the breaker after a batch: close or reopen after a probe, open on a failure ratio."""
    if not config.enabled:
        return Gate.CLOSED
    if probe_ok is not None:
        if probe_ok:
            await _set(session, target, open_until=None, reset=True)
            return Gate.CLOSED
        await _set(session, target, open_until=func.now() + config.open_for, reset=False)
        return Gate.OPEN
    total, failed = (
        await session.execute(
            text(
                "SELECT count(*), count(*) FILTER (WHERE a.outcome = 'retry') "
                "FROM delivery_attempts a WHERE a.target = :target AND a.manual = false "
                "AND a.started_at > greatest(now() - CAST(:window AS interval), coalesce("
                "(SELECT breaker_reset_at FROM target_states WHERE target = :target), '-infinity'::timestamptz))"
            ),
            {"target": target, "window": config.window},
        )
    ).one()
    if total >= config.min_attempts and failed >= config.failure_ratio * total:
        await _set(session, target, open_until=func.now() + config.open_for, reset=False)
        return Gate.OPEN
    return Gate.CLOSED


async def _set(session: AsyncSession, target: str, *, open_until: object, reset: bool) -> None:
    values: dict[str, object] = {"breaker_open_until": open_until, "updated_at": func.now()}
    if reset:
        values["breaker_reset_at"] = func.now()
    await session.execute(
        insert(TargetState)
        .values(target=target, **values)
        .on_conflict_do_update(index_elements=["target"], set_=values)
    )
