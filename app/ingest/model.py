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
    deliveries: list[PlannedDelivery] = field(default_factory=list)
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class Outcome:
    event_id: uuid.UUID
    duplicate: bool
    deliveries: int
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
