"""Retention on a schedule: the relay purges what `retention:` says, one relay at a time.

Every relay runs this loop; each pass first takes a PostgreSQL advisory lock without waiting, so
when several relays run only one purges and the others skip that pass. The lock is held on its own
connection for the whole purge (the server drops it if that connection dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import make_sessionmaker
from app.durations import format_duration
from app.hubconfig import Retention
from app.outbox.retention import PurgeReport, cutoff_before
from app.support.purge import audited_purge

log = logging.getLogger(__name__)

# One constant per kind of singleton job; this one is "mmhub retention" (arbitrary, fixed).
RETENTION_LOCK = 0x6D6D687562_0001
ACTOR = "mmhub-relay (retention)"


async def retention_pass(engine: AsyncEngine, retention: Retention) -> PurgeReport | None:
    """Purge once if no other relay is purging (None when one is), with its audit row."""
    async with engine.connect() as lock:
        taken = await lock.scalar(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": RETENTION_LOCK}
        )
        await lock.commit()  # no transaction left open while the purge runs
        if not taken:
            return None
        try:
            return await audited_purge(
                make_sessionmaker(engine),
                cutoff_before(retention.older_than),
                actor=ACTOR,
                older_than=format_duration(retention.older_than),
                include_dead=retention.include_dead,
            )
        finally:
            await lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": RETENTION_LOCK})
            await lock.commit()


async def run_retention(engine: AsyncEngine, retention: Retention, stop: asyncio.Event) -> None:
    """A pass at start, then one every `retention.every`, until `stop`; failures wait for the next."""
    while not stop.is_set():
        try:
            report = await retention_pass(engine, retention)
        except (SQLAlchemyError, OSError) as exc:
            log.warning(
                "retention pass failed, next in %s: %s", retention.every, type(exc).__name__
            )
        else:
            if report is not None and report.events:
                log.info(
                    "retention purged %d events older than %s", report.events, retention.older_than
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retention.every.total_seconds())
