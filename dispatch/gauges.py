"""The gauges read from PostgreSQL: backlog, lag, pauses and open breakers, per target.

The relay computes them every `MMHUB_GAUGES_INTERVAL` with the queries `mmhub stats` and
`mmhub targets` use (unfinished deliveries only: an index range, not the whole history), and a
scrape reads the last values; no scrape ever reaches the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import make_sessionmaker
from app.models import ACTIVE_STATUSES
from app.outbox.queries import stats, target_states
from app.telemetry import BACKLOG, CIRCUIT_OPEN, OLDEST_DUE, TARGET_PAUSED

log = logging.getLogger(__name__)
BACKLOG_STATUSES = [status.value for status in ACTIVE_STATUSES]


async def refresh_gauges(engine: AsyncEngine, targets: list[str]) -> None:
    """One reading of the database into the gauges (every configured target gets a value)."""
    async with make_sessionmaker(engine)() as session:
        snapshot = (await stats(session, statuses=BACKLOG_STATUSES))["targets"]
        states = {state.target: state for state in await target_states(session)}
    now = datetime.now(UTC)
    for target in sorted({*targets, *snapshot}):
        found = snapshot.get(target, {})
        counts = found.get("by_status", {})
        for status in BACKLOG_STATUSES:
            BACKLOG.labels(target, status).set(counts.get(status, 0))
        OLDEST_DUE.labels(target).set(found.get("oldest_due_seconds") or 0.0)
        state = states.get(target)
        open_until = state.breaker_open_until if state else None
        CIRCUIT_OPEN.labels(target).set(int(open_until is not None and open_until > now))
        TARGET_PAUSED.labels(target).set(int(bool(state and state.paused)))


async def keep_gauges(
    engine: AsyncEngine, targets: list[str], every: float, stop: asyncio.Event
) -> None:
    """Refresh the gauges until `stop`; a database outage leaves the last values and is retried."""
    while not stop.is_set():
        try:
            await refresh_gauges(engine, targets)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("gauges not refreshed: %s", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
