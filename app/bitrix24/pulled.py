"""Events the hub reads from a portal itself (offline queue, reconciliation), as opposed to webhooks it receives.

Both make the event a webhook would have brought (the same type, subject and routes), give it a dedup key of the
change it stands for, and skip a change that a received event already carried.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from app.hubconfig import HubConfig, Portal
from app.ingest.model import NewEvent
from app.ingest.routing import plan_deliveries
from app.outbox.queries import bitrix24_change_covered, bitrix24_event_stored
from app.secrets import redact
from app.sources.bitrix24.parse import parse_b24


def pulled_event(
    hub: HubConfig,
    portal: Portal,
    name: str,
    data: Mapping[str, Any],
    changed: datetime,
    *,
    dedup_key: str,
    origin: str,
    extra: Mapping[str, Any],
    raw: Any,
) -> NewEvent:
    """The event for one change read from the portal (`origin` says how: `offline`, `reconcile`)."""
    payload = {
        "event": name,
        "data": dict(data),
        "ts": str(int(changed.timestamp())),
        "auth": {"member_id": portal.member_id, "domain": portal.domain},
        origin: dict(extra),
    }
    parsed = parse_b24(payload)
    return NewEvent(
        source="bitrix24",
        type=parsed.event,
        subject=parsed.subject,
        dedup_key=dedup_key,
        payload=redact(payload),
        raw_body=orjson.dumps(redact(raw)),
        headers={"x-mmhub-origin": f"bitrix24-{origin}"},
        origin=portal.domain,
        occurred_at=changed,
        deliveries=plan_deliveries(hub, "bitrix24", parsed.event),
    )


async def covered(conn: AsyncConnection, event: NewEvent) -> bool:
    """True when an event received after this change carried it already (and this one is not stored yet)."""
    if await bitrix24_event_stored(conn, event.dedup_key):
        return False  # read again (a crash, a second sweep): it goes through and is a duplicate
    changed = event.occurred_at or datetime.now(UTC)
    return await bitrix24_change_covered(conn, event.subject, changed, event.dedup_key)


def timestamp(value: Any) -> datetime:
    """A Bitrix24 time (ISO 8601 with an offset) as an aware datetime; now when absent or unreadable."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return datetime.now(UTC)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)
