"""LISTEN on a PostgreSQL channel for as long as a process runs, reconnecting after outages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
from sqlalchemy.engine import make_url


async def listen(
    database_url: str, channel: str, on_notify: Callable[[str], None], stop: asyncio.Event
) -> None:
    """Call ``on_notify(payload)`` for every NOTIFY; after (re)connecting, once with "" (catch up on the gap)."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            await asyncio.sleep(1)
            continue
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
        await conn.add_listener(channel, lambda *args: on_notify(str(args[-1] or "")))
        on_notify("")  # anything committed while we were not listening is picked up now
        try:
            await lost.wait()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
