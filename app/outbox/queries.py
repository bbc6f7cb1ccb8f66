"""Read side of support: search with cursor pagination, one record with its attempts, stats."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Text, func, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import selectinload

from app.errors import BadRequest, NotFound
from app.models import AuditEntry, Delivery, DeliveryAttempt, Event, TargetState
from app.outbox.filters import DeliveryFilter, contains

MAX_PAGE = 500
T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None


def _encode(*parts: Any) -> str:
    return base64.urlsafe_b64encode("|".join(str(p) for p in parts).encode()).decode()


def _decode(cursor: str, count: int) -> list[str]:
    try:
        parts = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the cursor is not one this API gave out") from None
    if len(parts) != count:
        raise BadRequest("the cursor is not one this API gave out")
    return parts


def _parse(kind: Callable[[str], T], value: str) -> T:
    try:
        return kind(value)
    except ValueError:
        raise BadRequest("the cursor is not one this API gave out") from None


async def search_deliveries(
    session: AsyncSession, where: DeliveryFilter, *, limit: int = 50, cursor: str | None = None
) -> Page:
    """Deliveries matching the filter, newest first, with their events loaded."""
    limit = min(max(limit, 1), MAX_PAGE)
    query = (
        select(Delivery)
        .join(Event, Event.id == Delivery.event_id)
        .options(selectinload(Delivery.event))
        .order_by(Delivery.seq.desc())
        .limit(limit + 1)
    )
    if cursor:
        (seq,) = _decode(cursor, 1)
        query = query.where(Delivery.seq < _parse(int, seq))
    rows = list((await session.execute(where.apply(query))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode(rows[-1].seq) if more else None)


async def search_events(
    session: AsyncSession, where: DeliveryFilter, *, limit: int = 50, cursor: str | None = None
) -> Page:
    """Events matching the filter (delivery fields match any of their deliveries), newest first."""
    limit = min(max(limit, 1), MAX_PAGE)
    matching = where.apply(
        select(Event.id).outerjoin(Delivery, Delivery.event_id == Event.id)
    ).scalar_subquery()
    query = (
        select(Event)
        .where(Event.id.in_(matching))
        .options(selectinload(Event.deliveries))
        .order_by(Event.received_at.desc(), Event.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        at, event_id = _decode(cursor, 2)
        key = (_parse(datetime.fromisoformat, at), _parse(uuid.UUID, event_id))
        query = query.where(tuple_(Event.received_at, Event.id) < key)
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode(rows[-1].received_at.isoformat(), rows[-1].id) if more else None)


async def delivery_state(session: AsyncSession, delivery_id: uuid.UUID) -> tuple[str, str] | None:
    """A delivery's target and status, or None when there is no such delivery."""
    row = (
        await session.execute(
            select(Delivery.target, Delivery.status).where(Delivery.id == delivery_id)
        )
    ).one_or_none()
    return None if row is None else (row.target, row.status)


async def get_delivery(session: AsyncSession, delivery_id: uuid.UUID) -> Delivery:
    """One delivery with its event and every attempt."""
    delivery = (
        await session.execute(
            select(Delivery)
            .where(Delivery.id == delivery_id)
            .options(selectinload(Delivery.event), selectinload(Delivery.attempts))
        )
    ).scalar_one_or_none()
    if delivery is None:
        raise NotFound(f"no delivery {delivery_id}")
    return delivery


async def get_event(session: AsyncSession, event_id: uuid.UUID) -> Event:
    """One event with its deliveries and their attempts."""
    event = (
        await session.execute(
            select(Event)
            .where(Event.id == event_id)
            .options(selectinload(Event.deliveries).selectinload(Delivery.attempts))
        )
    ).scalar_one_or_none()
    if event is None:
        raise NotFound(f"no event {event_id}")
    return event


async def stats(session: AsyncSession, statuses: Sequence[str] | None = None) -> dict[str, Any]:
    """Counts by target and status (only `statuses` when given: the backlog's are found through
    an index, all of them by reading every delivery), and per target the age of the oldest due."""
    counts: dict[str, dict[str, int]] = {}
    counting = select(Delivery.target, Delivery.status, func.count())
    if statuses is not None:
        counting = counting.where(Delivery.status.in_(statuses))
    for target, status, count in await session.execute(
        counting.group_by(Delivery.target, Delivery.status)
    ):
        counts.setdefault(target, {})[status] = count
    oldest = {
        target: seconds
        for target, seconds in await session.execute(
            select(
                Delivery.target,
                func.extract("epoch", func.now() - func.min(Delivery.next_attempt_at)),
            )
            .where(
                # Held (a pause, an open breaker) is waiting too: a paused target's lag grows.
                Delivery.status.in_(("pending", "retrying", "held")),
                Delivery.next_attempt_at <= func.now(),
            )
            .group_by(Delivery.target)
        )
    }
    return {
        "targets": {
            target: {"by_status": by_status, "oldest_due_seconds": _seconds(oldest.get(target))}
            for target, by_status in sorted(counts.items())
        }
    }


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


async def target_states(session: AsyncSession) -> list[TargetState]:
    return list((await session.execute(select(TargetState).order_by(TargetState.target))).scalars())


async def audit_entries(
    session: AsyncSession,
    *,
    since: datetime | None = None,
    limit: int = 100,
    text: str | None = None,
) -> list[AuditEntry]:
    """The audit trail, newest first; `text` matches who, what, which target, why or the filter."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(min(max(limit, 1), 1000))
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if text:
        needle = contains(text)
        fields = (AuditEntry.actor, AuditEntry.action, AuditEntry.target, AuditEntry.reason)
        searched = [*fields, AuditEntry.filter.cast(Text), AuditEntry.delivery_id.cast(Text)]
        query = query.where(or_(*(field.ilike(needle) for field in searched)))
    return list((await session.execute(query)).scalars())


async def activity(
    session: AsyncSession, targets: Sequence[str], hours: int = 24
) -> list[tuple[str, datetime, str, int]]:
    """Attempts of the last `hours` per target, hour and outcome (delivered, retry, dead).

    Naming the targets lets the (target, started_at) index find the rows.
    """
    hour = func.date_trunc("hour", DeliveryAttempt.started_at)
    query = (
        select(DeliveryAttempt.target, hour, DeliveryAttempt.outcome, func.count())
        .where(DeliveryAttempt.target.in_(targets))
        .where(DeliveryAttempt.started_at >= func.now() - timedelta(hours=hours))
        .group_by(DeliveryAttempt.target, hour, DeliveryAttempt.outcome)
    )
    return [(t, at, outcome, n) for t, at, outcome, n in await session.execute(query)]


# Another event about the same record, received after the change, already told of it (events carry ids only).
_COVERED = text("""
SELECT EXISTS (SELECT 1 FROM events
               WHERE source = 'bitrix24' AND subject = :subject
                 AND received_at >= :changed AND dedup_key <> :key)
""")
_STORED = text(
    "SELECT EXISTS (SELECT 1 FROM events WHERE source = 'bitrix24' AND dedup_key = :key)"
)


async def bitrix24_event_stored(conn: AsyncConnection | AsyncSession, dedup_key: str) -> bool:
    """Whether a Bitrix24 event with this dedup key is stored."""
    return bool(await conn.scalar(_STORED, {"key": dedup_key}))


async def bitrix24_change_covered(
    conn: AsyncConnection | AsyncSession, subject: str, changed: datetime, dedup_key: str
) -> bool:
    """Whether another event about `subject`, received at or after `changed`, is stored."""
    params = {"subject": subject, "changed": changed, "key": dedup_key}
    return bool(await conn.scalar(_COVERED, params))
