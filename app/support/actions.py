"""Write side of support: replay, edit-and-replay, cancel, pause/resume, bulk replay. All audited.

Service functions only flush; the API request or the CLI command commits (one place where
transactions end). Each mutating call writes one audit row: who, what, filter, how many, why.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound, Unprocessable
from app.ids import new_id
from app.models import AuditEntry, Delivery, DeliveryStatus, ReplayJob
from app.outbox import changes
from app.outbox.filters import DeliveryFilter
from app.outbox.states import pause_target, resume_target
from app.secrets import redact

BULK_CAP = 10_000
BATCH = 500
CANCELLABLE = ("pending", "retrying", "held", "dead")


def audit(
    session: AsyncSession,
    actor: str,
    action: str,
    *,
    target: str | None = None,
    delivery_id: uuid.UUID | None = None,
    where: DeliveryFilter | None = None,
    count: int = 0,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add one audit row to the caller's transaction."""
    session.add(
        AuditEntry(
            actor=actor,
            action=action,
            target=target,
            delivery_id=delivery_id,
            filter=where.describe() if where else None,
            count=count,
            reason=reason,
            details=details,
        )
    )


async def replay_delivery(
    session: AsyncSession, delivery_id: uuid.UUID, actor: str, reason: str | None
) -> Delivery:
    """Make one delivery due now; its next attempt is recorded as manual."""
    delivery = await changes.lock_delivery(session, delivery_id)
    previous = delivery.status  # the UPDATE below refreshes the loaded object
    if previous == DeliveryStatus.DELIVERING.value:
        raise Conflict(f"delivery {delivery_id} is being delivered right now; try again shortly")
    await changes.replay(session, [delivery_id])
    audit(
        session,
        actor,
        "replay",
        target=delivery.target,
        delivery_id=delivery_id,
        count=1,
        reason=reason,
        details={"previous_status": previous},
    )
    await changes.wake_relay(session)
    await session.refresh(delivery)
    return delivery


async def edit_and_replay(
    session: AsyncSession,
    delivery_id: uuid.UUID,
    data: dict[str, Any],
    actor: str,
    reason: str,
) -> Delivery:
    """Send corrected data instead of the event's (the event keeps the original), then replay."""
    if not reason or not reason.strip():
        raise Unprocessable("edit-and-replay needs a reason")
    await changes.lock_delivery(session, delivery_id)
    await changes.override_payload(session, delivery_id, redact(data))
    delivery = await replay_delivery(session, delivery_id, actor, reason)
    # The replay's own audit row is enough to find it; this one records that the data changed.
    audit(
        session,
        actor,
        "edit",
        target=delivery.target,
        delivery_id=delivery_id,
        count=1,
        reason=reason,
        details={"keys": sorted(data)},
    )
    return delivery


async def cancel_delivery(
    session: AsyncSession, delivery_id: uuid.UUID, actor: str, reason: str | None
) -> Delivery:
    """Stop a delivery for good (until someone replays it)."""
    delivery = await changes.lock_delivery(session, delivery_id)
    if delivery.status not in CANCELLABLE:
        raise Conflict(f"delivery {delivery_id} is {delivery.status}; it cannot be cancelled")
    previous = delivery.status
    delivery.status = DeliveryStatus.CANCELLED.value
    audit(
        session,
        actor,
        "cancel",
        target=delivery.target,
        delivery_id=delivery_id,
        count=1,
        reason=reason,
        details={"previous_status": previous},
    )
    await session.flush()
    return delivery


async def pause(session: AsyncSession, target: str, actor: str, reason: str | None) -> int:
    """Hold a target's deliveries (maintenance window); returns how many were held now."""
    held = await pause_target(session, target, reason, actor)
    audit(session, actor, "pause", target=target, count=held, reason=reason)
    return held


async def resume(session: AsyncSession, target: str, actor: str, reason: str | None) -> int:
    """Let a paused target's deliveries go again; returns how many were released."""
    released = await resume_target(session, target)
    audit(session, actor, "resume", target=target, count=released, reason=reason)
    await changes.wake_relay(session)
    return released


async def count_matching(session: AsyncSession, where: DeliveryFilter) -> int:
    """How many deliveries a bulk replay with this filter would touch (the dry run)."""
    return await changes.count_replayable(session, where)


async def start_bulk_replay(
    session: AsyncSession, where: DeliveryFilter, actor: str, reason: str | None, *, force: bool
) -> ReplayJob:
    """Record a bulk replay job over what matches now; refuses more than BULK_CAP unless forced."""
    total = await changes.count_replayable(session, where)
    if total > BULK_CAP and not force:
        raise Unprocessable(
            f"the filter matches {total} deliveries, over the cap of {BULK_CAP}; "
            "narrow it or force the replay",
            matched=total,
        )
    upto = await changes.last_seq(session)
    job = ReplayJob(
        id=new_id(), actor=actor, reason=reason, filter=where.describe(), total=total, upto=upto
    )
    session.add(job)
    audit(
        session,
        actor,
        "bulk_replay",
        target=where.target,
        where=where,
        count=total,
        reason=reason,
        details={"job_id": str(job.id)},
    )
    await session.flush()
    return job


async def replay_batch(session: AsyncSession, job_id: uuid.UUID, size: int = BATCH) -> ReplayJob:
    """Replay the job's next batch (keyset over seq); finishes the job when nothing is left."""
    job = await get_replay_job(session, job_id, lock=True)
    if job.status != "running":
        return job
    where = DeliveryFilter.model_validate(job.filter)
    rows = await changes.lock_next_replayable(
        session, where, after=job.cursor, upto=job.upto, size=size
    )
    if not rows:
        job.status = "finished"
    else:
        await changes.replay(session, [row.id for row in rows])
        job.cursor = rows[-1].seq
        job.done += len(rows)
        await changes.wake_relay(session)
    job.updated_at = func.now()
    await session.flush()
    await session.refresh(job)
    return job


async def cancel_replay_job(session: AsyncSession, job_id: uuid.UUID, actor: str) -> ReplayJob:
    """Stop a bulk replay after the batch in progress."""
    job = await get_replay_job(session, job_id, lock=True)
    if job.status == "running":
        job.status = "cancelled"
        audit(
            session,
            actor,
            "cancel_bulk_replay",
            where=DeliveryFilter.model_validate(job.filter),
            count=job.done,
            details={"job_id": str(job.id), "total": job.total},
        )
        await session.flush()
    return job


async def get_replay_job(
    session: AsyncSession, job_id: uuid.UUID, *, lock: bool = False
) -> ReplayJob:
    job = await changes.replay_job(session, job_id, lock=lock)
    if job is None:
        raise NotFound(f"no replay job {job_id}")
    return job
