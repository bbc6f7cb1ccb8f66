"""Search filters shared by the admin API and the CLI, with relative times (`--since 2h`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import ColumnElement, Select, Text, or_

from app.durations import parse_duration
from app.models import Delivery, DeliveryStatus, Event

STATUSES = {s.value for s in DeliveryStatus}
Query = TypeVar("Query", bound=Select[Any] | Select[Any, Any])


def parse_when(value: Any, now: datetime | None = None) -> datetime:
    """`2h` (ago), `30m`, `7d`, or an ISO 8601 time (UTC when it has no zone)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip()
    try:
        return (now or datetime.now(UTC)) - parse_duration(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use 2h, 30m, 7d or 2025-12-18T08:00:00Z)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def contains(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere (its own % and _ taken literally)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class DeliveryFilter(BaseModel):
    """Which deliveries (and, through them, events) a search or a bulk action covers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: list[str] | None = None
    target: str | None = None
    source: str | None = None
    event_type: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None  # inside the event's payload

    @field_validator("target", "source", "event_type", "subject", "text")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain a NUL character")  # PostgreSQL text cannot
        return value

    @field_validator("status", mode="before")
    @classmethod
    def _statuses(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part]
        for status in value or []:
            if status not in STATUSES:
                raise ValueError(
                    f"unknown status {status!r} (one of {', '.join(sorted(STATUSES))})"
                )
        return value or None

    @field_validator("since", "until", mode="before")
    @classmethod
    def _times(cls, value: Any) -> Any:
        return None if value in (None, "") else parse_when(value)

    def describe(self) -> dict[str, Any]:
        """The filter as stored in the audit log and replay jobs (only what was set)."""
        return self.model_dump(mode="json", exclude_none=True)

    def apply(self, query: Query) -> Query:
        """Add this filter's conditions to a query over deliveries joined with their events."""
        conditions: list[ColumnElement[bool]] = []
        if self.status:
            conditions.append(Delivery.status.in_(self.status))
        if self.target:
            conditions.append(Delivery.target == self.target)
        if self.source:
            conditions.append(Event.source == self.source)
        if self.event_type:
            pattern = self.event_type.replace("*", "%")
            conditions.append(
                Event.type.like(pattern) if "%" in pattern else Event.type == self.event_type
            )
        if self.subject:
            conditions.append(Event.subject == self.subject)
        if self.since:
            conditions.append(Event.received_at >= self.since)
            if self.status or self.target:
                # The same rows, found through ix_deliveries_status_target_created_at: a delivery
                # is created with its event or later, never before it was received.
                conditions.append(Delivery.created_at >= self.since)
        if self.until:
            conditions.append(Event.received_at < self.until)
        if self.text:
            needle = contains(self.text)
            conditions.append(
                or_(
                    Event.payload.cast(Text).ilike(needle),
                    Delivery.payload_override.cast(Text).ilike(needle),
                )
            )
        return query.where(*conditions)  # type: ignore[return-value]
