"""Pause and resume of a target, stored in PostgreSQL so every worker honours it."""

from __future__ import annotations

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Delivery, DeliveryStatus, TargetState

WAITING = (DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value)


async def pause_target(session: AsyncSession, target: str, reason: str | None, actor: str) -> int:
    """Pause a target: its waiting deliveries become `held`; returns how many. Only flushes."""
    await session.execute(
        insert(TargetState)
        .values(
            target=target, paused=True, paused_reason=reason, paused_by=actor, paused_at=func.now()
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
    return await hold_waiting(session, target)


async def resume_target(session: AsyncSession, target: str) -> int:
    """Resume a target: its held deliveries are due again at once; returns how many."""
    await session.execute(
        update(TargetState)
        .where(TargetState.target == target)
        .values(
            paused=False, paused_reason=None, paused_by=None, paused_at=None, updated_at=func.now()
        )
    )
    return await release_held(session, [target])


async def hold_waiting(session: AsyncSession, target: str) -> int:
    """Mark the target's waiting deliveries `held`: no attempt is spent while it is held."""
    result = await session.execute(
        update(Delivery)
        .where(Delivery.target == target, Delivery.status.in_(WAITING))
        .values(status=DeliveryStatus.HELD.value, updated_at=func.now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def release_held(session: AsyncSession, targets: list[str]) -> int:
    """Held deliveries of these targets go back to waiting, due now."""
    result = await session.execute(
        update(Delivery)
        .where(Delivery.target.in_(targets), Delivery.status == DeliveryStatus.HELD.value)
        .values(
            status=case(
                (Delivery.attempt_count > 0, DeliveryStatus.RETRYING.value),
                else_=DeliveryStatus.PENDING.value,
            ),
            next_attempt_at=func.now(),
            updated_at=func.now(),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def get_state(session: AsyncSession, target: str) -> TargetState | None:
    return (
        await session.execute(select(TargetState).where(TargetState.target == target))
    ).scalar_one_or_none()
