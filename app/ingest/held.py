"""A pooled connection a group-commit flusher keeps for its life.

Checking a connection out of SQLAlchemy's pool for every commit cost CPU and a round trip (the
pre-ping): at low rates, where a batch holds one or two events, that was most of ingest's CPU per
request. A flusher commits one statement at a time in autocommit, so the
connection is idle and clean between batches and can simply be kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")


class HeldConnection:
    """One connection from the engine's pool, kept; replaced when it breaks."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._driver: Any = None  # the driver's connection under `_conn`, once looked up

    async def driver(self, conn: AsyncConnection) -> Any:
        """The driver's (asyncpg's) connection under `conn`: looked up once per kept connection,
        as each lookup goes through SQLAlchemy's greenlet bridge."""
        if conn is self._conn and self._driver is not None:
            return self._driver
        raw = (await conn.get_raw_connection()).driver_connection
        if conn is self._conn:
            self._driver = raw
        return raw

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work(conn)` on the kept connection. If that connection turns out to be gone (the
        database restarted since the last batch), once more on a fresh one (pre-pinged by the
        pool). Any failure gives the connection back: its state is unknown."""
        if self._conn is not None:
            try:
                return await work(self._conn)
            except Exception:
                lost = await _is_closed(self._conn)
                await self.close()
                if not lost:
                    raise
        self._conn = await self._engine.connect()
        try:
            return await work(self._conn)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Give the connection back to the pool (or drop it when it is broken)."""
        conn, self._conn, self._driver = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate() if await _is_closed(conn) else await conn.close()


async def _is_closed(conn: AsyncConnection) -> bool:
    raw = (await conn.get_raw_connection()).driver_connection
    return raw is None or bool(raw.is_closed())
