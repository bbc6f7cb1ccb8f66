"""What the admin endpoints depend on: a session per request that commits at the boundary, and
the bulk replay jobs the API process works in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import HubError
from app.models import ReplayJob
from app.support import actions
from app.support.bulk import run_bulk_replay

log = logging.getLogger(__name__)

# After a database error a job (or the resume at start) tries again after this many seconds.
RETRY_DELAY = 5.0


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the endpoint succeeds, else rolled back.

    Services only flush; this is the one place an admin request's transaction ends.
    """
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


# scope="function": commit before the reply is sent, so a 2xx always means the change is durable.
Session = Annotated[AsyncSession, Depends(db_session, scope="function")]


class ReplayRunner:
    """Works bulk replay jobs as asyncio tasks of the API process.

    The tasks are kept here so they are not garbage-collected mid-job and can be cancelled on
    shutdown; a cancelled batch rolls back and the job stays `running`, so the next start resumes
    it from its cursor.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._resume: asyncio.Task[None] | None = None

    async def start(self, job_id: uuid.UUID) -> None:
        """Work this (committed) job in the background, unless this process already does.

        A coroutine so that, handed to a request's background tasks, it runs on the event loop.
        """
        if job_id in self.tasks:
            return
        task = asyncio.create_task(self._work(job_id), name=f"bulk-replay-{job_id}")
        self.tasks[job_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(job_id, None))

    def resume(self) -> None:
        """Pick up jobs a previous process left `running` (in the background: the API must start
        even while the database is down)."""
        self._resume = asyncio.create_task(self._resume_running(), name="bulk-replay-resume")

    async def close(self) -> None:
        """Cancel every task and wait for them to end."""
        tasks = [*self.tasks.values(), *([self._resume] if self._resume else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _resume_running(self) -> None:
        while True:
            try:
                async with self.sessions() as session:
                    query = select(ReplayJob.id).where(ReplayJob.status == "running")
                    running = list((await session.execute(query)).scalars())
                break
            except Exception:
                log.warning("cannot list running replay jobs yet; retrying", exc_info=True)
                await asyncio.sleep(RETRY_DELAY)
        for job_id in running:
            log.info("resuming bulk replay %s", job_id)
            await self.start(job_id)

    async def _work(self, job_id: uuid.UUID) -> None:
        while True:
            try:
                # Read at call time so an operator (or a test) can tune the batch size.
                job = await run_bulk_replay(self.sessions, job_id, batch=actions.BATCH)
            except HubError as exc:  # the job is gone: nothing left to do
                log.warning("bulk replay %s stopped: %s", job_id, exc.detail)
                return
            except Exception:
                # A database blip must not strand the job; each batch is its own transaction.
                log.warning("bulk replay %s failed a batch; retrying", job_id, exc_info=True)
                await asyncio.sleep(RETRY_DELAY)
                continue
            log.info("bulk replay %s %s: %d of %d", job_id, job.status, job.done, job.total)
            return


def replay_runner(request: Request) -> ReplayRunner:
    """The process's bulk replay runner (built in the app's lifespan)."""
    runner: ReplayRunner = request.app.state.replays
    return runner


Runner = Annotated[ReplayRunner, Depends(replay_runner)]
