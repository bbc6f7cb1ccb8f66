"""The support services' statements on deliveries and replay jobs: replay, override, cancel's lock,
bulk replay's selection and count, and the relay's wake-up (SQLAlchemy, on the caller's session).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.models import Delivery, DeliveryStatus, Event, ReplayJob
from app.outbox import NOTIFY_CHANNEL
from app.outbox.filters import DeliveryFilter

REPLAYABLE = (
    "dead",
    "cancelled",
    "delivered",
    "pending",
    "retrying",
    "held",
    "superseded",
    "suppressed",
)


async def wake_relay(session: AsyncSession) -> None:
    """Tell the relay deliveries are due (at the caller's commit)."""
    await session.execute(text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"))


def _replay_values() -> dict[str, Any]:
    """Due now, next attempt manual, a fresh retry schedule."""
    return {
        "status": DeliveryStatus.PENDING.value,
        "next_attempt_at": func.now(),
        "manual_next": True,
        "retry_offset": Delivery.attempt_count,
        "lease_until": None,
        "claim_token": None,
        "updated_at": func.now(),
    }


async def replay(session: AsyncSession, delivery_ids: list[uuid.UUID]) -> None:
    """Make these deliveries due now, their next attempt manual and their schedule fresh."""
    await session.execute(
        update(Delivery).where(Delivery.id.in_(delivery_ids)).values(**_replay_values())
    )


async def override_payload(session: AsyncSession, delivery_id: uuid.UUID, data: Any) -> None:
    """Send `data` instead of the event's (edit-and-replay); the event keeps the original."""
    await session.execute(
        update(Delivery).where(Delivery.id == delivery_id).values(payload_override=data)
    )


async def lock_delivery(session: AsyncSession, delivery_id: uuid.UUID) -> Delivery:
    """The delivery, locked for the caller's transaction; NotFound when there is none."""
    delivery = (
        await session.execute(select(Delivery).where(Delivery.id == delivery_id).with_for_update())
    ).scalar_one_or_none()
    if delivery is None:
        raise NotFound(f"no delivery {delivery_id}")
    return delivery


def _replayable(where: DeliveryFilter) -> Any:
    query = select(Delivery.id, Delivery.seq).join(Event, Event.id == Delivery.event_id)
    return where.apply(query.where(Delivery.status.in_(REPLAYABLE)))


async def count_replayable(session: AsyncSession, where: DeliveryFilter) -> int:
    """How many deliveries a bulk replay with this filter would touch (the dry run)."""
    subquery = _replayable(where).subquery()
    return int((await session.execute(select(func.count()).select_from(subquery))).scalar_one())


async def last_seq(session: AsyncSession) -> int:
    """The newest delivery's sequence number (a bulk replay stops there)."""
    return int(
        (await session.execute(select(func.coalesce(func.max(Delivery.seq), 0)))).scalar_one()
    )


async def lock_next_replayable(
    session: AsyncSession, where: DeliveryFilter, *, after: int, upto: int, size: int
) -> list[Row[Any]]:
    """The next `size` replayable deliveries in (after, upto] by seq, locked; in flight ones skipped."""
    return list(
        (
            await session.execute(
                _replayable(where)
                .where(Delivery.seq > after, Delivery.seq <= upto)
                .where(Delivery.status != DeliveryStatus.DELIVERING.value)
                .order_by(Delivery.seq)
                .limit(size)
                .with_for_update(of=Delivery, skip_locked=True)
            )
        ).all()
    )


async def replay_job(session: AsyncSession, job_id: uuid.UUID, *, lock: bool = False) -> ReplayJob:
    """A bulk replay job (locked when asked); NotFound when there is none."""
    query = select(ReplayJob).where(ReplayJob.id == job_id)
    job = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if job is None:
        raise NotFound(f"no replay job {job_id}")
    return job
