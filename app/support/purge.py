"""A purge with its audit row: what `mmhub purge` and the relay's retention schedule both run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.outbox.retention import DEFAULT_BATCH, DEFAULT_DUTY_CYCLE, PurgeReport, purge
from app.support.actions import audit


async def audited_purge(
    sessions: async_sessionmaker[AsyncSession],
    cutoff: datetime,
    *,
    actor: str,
    older_than: str,
    include_dead: bool,
    batch: int = DEFAULT_BATCH,
    duty_cycle: float = DEFAULT_DUTY_CYCLE,
    progress: Callable[[PurgeReport], None] | None = None,
) -> PurgeReport:
    """`app.outbox.retention.purge()`, then one `purge` audit row with what it removed."""
    report = await purge(
        sessions,
        cutoff,
        include_dead=include_dead,
        batch=batch,
        progress=progress,
        duty_cycle=duty_cycle,
    )
    async with sessions.begin() as session:
        audit(
            session,
            actor,
            "purge",
            count=report.events,
            details={
                "older_than": older_than,
                "cutoff": cutoff.isoformat(),
                "include_dead": include_dead,
                "deliveries": report.deliveries,
                "attempts": report.attempts,
            },
        )
    return report
