"""The bulk replay runner: one transaction per batch, so progress shows and cancel takes effect."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import ReplayJob
from app.support.actions import BATCH, replay_batch


async def run_bulk_replay(
    sessions: async_sessionmaker[AsyncSession],
    job_id: uuid.UUID,
    *,
    batch: int = BATCH,
    progress: Callable[[ReplayJob], None] | None = None,
) -> ReplayJob:
    """Work a replay job to its end (finished or cancelled), committing after every batch."""
    while True:
        async with sessions.begin() as session:
            job = await replay_batch(session, job_id, batch)
        if progress is not None:
            progress(job)
        if job.status != "running":
            return job
