"""What a source hands to ingest, and what ingest answers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.ids import new_id


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    route: str
    target: str


@dataclass(slots=True)
class NewEvent:
    """A parsed, authenticated, secret-free event ready to be stored with its deliveries."""

    source: str
    type: str
    subject: str
    dedup_key: str
    payload: dict[str, Any]
    raw_body: bytes
    headers: dict[str, str]
    origin: str | None = None
    occurred_at: datetime | None = None
    request_id: str | None = None
    traceparent: str | None = None  # the ingest request span's (W3C), for the deliveries' spans
    deliveries: list[PlannedDelivery] = field(default_factory=list)
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class IngestResult:
    event_id: uuid.UUID  # the event stored, or for a duplicate the one stored first
    duplicate: bool
    deliveries: int
    # The event's Idempotency-Key names a stored event with another payload: nothing was stored.
    conflict: bool = False
    spooled: bool = False  # kept in the outage spool (app/ingest/spool.py), not yet committed

    @property
    def status_code(self) -> int:
        return 202 if self.spooled else 200

    def reply(self) -> dict[str, Any]:
        if self.spooled:
            return {"status": "spooled", "event_id": str(self.event_id)}
        return {
            "status": "accepted",
            "event_id": str(self.event_id),
            "duplicate": self.duplicate,
            "deliveries": self.deliveries,
        }


def batch_reply(outcomes: list[IngestResult]) -> dict[str, Any]:
    """A batch's reply: every row was accepted, `duplicates` of them were already stored."""
    return {
        "status": "accepted",
        "accepted": len(outcomes),
        "duplicates": sum(outcome.duplicate for outcome in outcomes),
        "events": [
            {"event_id": str(o.event_id), "duplicate": o.duplicate, "deliveries": o.deliveries}
            for o in outcomes
        ],
    }
