"""A token bucket in Redis, shared by every process: per target, and per Bitrix24 portal.

A dozen lines of Lua because no well-kept Python library offers a Redis token bucket with a burst
(the `limits` package has fixed and moving windows only).
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from app.hubconfig import RateLimit

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

    def __init__(self, redis: Redis, name: str, limit: RateLimit) -> None:
        self._script = redis.register_script(_BUCKET_SCRIPT)
        self._key = f"mmhub:bucket:{name}"
        self._args = [limit.per_second, limit.burst]

    async def take(self) -> float:
        return float(await self._script(keys=[self._key], args=self._args))

    async def acquire(self) -> None:
        """Wait until a token is taken."""
        # The bucket says how long until a token is there; nothing to wait on but the clock.
        while (wait := await self.take()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)
