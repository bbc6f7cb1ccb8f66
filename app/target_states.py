"""Pause and resume of a target, stored in PostgreSQL so every worker honours it; hold and release.

Hold and release are written once here, in asyncpg's style, for the drain's connection, the relay
and the admin services alike. Lock order: a statement that changes target_states takes that row
first; hold and release then lock deliveries in id order and skip rows another transaction holds
(a claim, a record, a cancel: none of those rows is waiting), so they never wait on a delivery and
cannot close a cycle with a drain recording its batch (deliveries, then the breaker's row). What
they skip is held by the drain when it next reads the gate, or released by the relay's next pass.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import driver_connection, retry_conflicts
from app.models import TargetState

_HOLD = """
WITH locked AS (
    SELECT id FROM deliveries
    WHERE target = $1 AND status IN ('pending', 'retrying')
    ORDER BY id FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d SET status = 'held', updated_at = now()
FROM locked WHERE d.id = locked.id
"""
# Only targets neither paused nor broken open: a breaker that is still open keeps its hold.
_RELEASE = """
WITH locked AS (
    SELECT id FROM deliveries
    WHERE target = ANY($1::text[]) AND status = 'held'
      AND target NOT IN (
          SELECT target FROM target_states WHERE paused OR breaker_open_until > now())
    ORDER BY id FOR UPDATE OF deliveries SKIP LOCKED
)
UPDATE deliveries d
SET status = CASE WHEN d.attempt_count > 0 THEN 'retrying' ELSE 'pending' END,
    next_attempt_at = now(), updated_at = now()
FROM locked WHERE d.id = locked.id
"""


async def hold_waiting(conn: Any, target: str) -> int:
    """Mark the target's waiting deliveries `held` (asyncpg connection); returns how many."""
    status: str = await conn.execute(_HOLD, target)  # "UPDATE 12"
    return int(status.rsplit(" ", 1)[-1])


async def release_held(conn: Any, targets: list[str]) -> int:
    """Held deliveries of these targets, if neither paused nor open, are due again now."""
    status: str = await conn.execute(_RELEASE, targets)
    return int(status.rsplit(" ", 1)[-1])


@retry_conflicts
async def pause_target(session: AsyncSession, target: str, reason: str | None, actor: str) -> int:
    """Pause a target: its waiting deliveries become `held`; returns how many. Only flushes."""
    async with session.begin_nested():  # a conflict retries this step, not the caller's transaction
        await session.execute(
            insert(TargetState)
            .values(
                target=target,
                paused=True,
                paused_reason=reason,
                paused_by=actor,
                paused_at=func.now(),
            )
            .on_conflict_do_update(
                index_elements=["target"],
                set_={
                    "paused": True,
                    "paused_reason": reason,
                    "paused_by": actor,
                    "paused_at": func.now(),
                    "updated_at": func.now(),
                },
            )
        )
        return await hold_waiting(await driver_connection(session), target)


@retry_conflicts
async def resume_target(session: AsyncSession, target: str) -> int:
    """Resume a target: its held deliveries are due again at once; returns how many."""
    async with session.begin_nested():
        await session.execute(
            update(TargetState)
            .where(TargetState.target == target)
            .values(
                paused=False,
                paused_reason=None,
                paused_by=None,
                paused_at=None,
                updated_at=func.now(),
            )
        )
        return await release_held(await driver_connection(session), [target])


async def get_state(session: AsyncSession, target: str) -> TargetState | None:
    return (
        await session.execute(select(TargetState).where(TargetState.target == target))
    ).scalar_one_or_none()
