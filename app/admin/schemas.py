"""Request and reply models of /admin/v1 (and its OpenAPI document).

Nothing here carries a secret: payloads are redacted and raw bodies masked before they are stored,
headers are stored without credentials, and the raw body is sent only when asked for.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from app.hubconfig import Target
from app.models import TargetState

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class AttemptOut(_Out):
    number: int
    started_at: datetime
    duration_ms: int
    http_status: int | None
    outcome: str
    error_class: str | None
    error: str | None
    response_excerpt: str | None
    manual: bool


class EventBrief(_Out):
    id: uuid.UUID
    source: str
    type: str
    subject: str
    origin: str | None
    received_at: datetime
    occurred_at: datetime | None
    request_id: str | None


class DeliveryBrief(_Out):
    id: uuid.UUID
    event_id: uuid.UUID
    route: str
    target: str
    status: str
    attempt_count: int
    next_attempt_at: datetime
    last_error: str | None
    # superseded (coalesce: latest): the delivery that carried this one's state
    superseded_by: uuid.UUID | None = None
    manual_next: bool
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


class DeliveryItem(DeliveryBrief):
    """A delivery in a search result, with its event's summary."""

    event: EventBrief


class DeliveryOut(DeliveryItem):
    """One delivery with every attempt; `payload_override` is the data of an edit-and-replay."""

    payload_override: dict[str, Any] | None
    attempts: list[AttemptOut]


class DeliveryWithAttempts(DeliveryBrief):
    """A delivery inside one event's detail."""

    payload_override: dict[str, Any] | None
    attempts: list[AttemptOut]


class EventItem(EventBrief):
    """An event in a search result, with its deliveries."""

    deliveries: list[DeliveryBrief]


class EventOut(EventBrief):
    """One event with its deliveries and their attempts.

    `raw_body` (the body as received, secrets masked) is null unless `?include_raw=true`.
    """

    headers: dict[str, Any]
    payload: dict[str, Any]
    raw_body: str | None = None
    deliveries: list[DeliveryWithAttempts]

    @field_validator("raw_body", mode="before")
    @classmethod
    def _raw_text(cls, value: Any, info: ValidationInfo) -> str | None:
        if not (info.context or {}).get("include_raw") or value is None:
            return None
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class DeliveryPage(BaseModel):
    items: list[DeliveryItem]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


class EventPage(BaseModel):
    items: list[EventItem]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = None


class EditReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any] = Field(description="the corrected `data` sent instead of the event's")
    reason: Reason


class BulkReplayRequest(BaseModel):
    """The search filters, plus what to do with the matching deliveries."""

    model_config = ConfigDict(extra="forbid")

    status: list[str] | str | None = Field(None, description="statuses, a list or comma-separated")
    target: str | None = None
    source: str | None = None
    event_type: str | None = Field(None, description="exact, or a glob such as `ONCRMDEAL*`")
    subject: str | None = None
    since: str | None = Field(None, description="relative (`2h`, `7d`) or ISO 8601")
    until: str | None = Field(None, description="relative (`2h`, `7d`) or ISO 8601")
    q: str | None = Field(None, description="text inside the payload")
    reason: str | None = None
    dry_run: bool = Field(False, description="only count what would be replayed; change nothing")
    force: bool = Field(False, description="allow more deliveries than the cap")

    def filter_values(self) -> dict[str, Any]:
        """The filter part, with the names DeliveryFilter uses."""
        values = self.model_dump(exclude={"reason", "dry_run", "force", "q"})
        return {**values, "text": self.q}


class DryRunOut(BaseModel):
    dry_run: Literal[True] = True
    matched: int
    cap: int


class ReplayJobOut(_Out):
    id: uuid.UUID
    status: Literal["running", "finished", "cancelled"]
    total: int
    done: int
    filter: dict[str, Any]
    actor: str
    reason: str | None
    created_at: datetime
    updated_at: datetime


class AuditOut(_Out):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    delivery_id: uuid.UUID | None
    filter: dict[str, Any] | None
    count: int
    reason: str | None
    details: dict[str, Any] | None


class TargetStats(BaseModel):
    by_status: dict[str, int]
    oldest_due_seconds: float | None = Field(
        description="age of the oldest delivery due and waiting (pending, retrying, or held "
        "by a pause or an open breaker); null when none"
    )


class StatsOut(BaseModel):
    by_status: dict[str, int]
    targets: dict[str, TargetStats]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> StatsOut:
        """From the service's per-target counts, with the totals by status."""
        totals: dict[str, int] = {}
        for target in raw["targets"].values():
            for status, count in target["by_status"].items():
                totals[status] = totals.get(status, 0) + count
        return cls(by_status=dict(sorted(totals.items())), targets=raw["targets"])


class TargetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = None


class TargetOut(BaseModel):
    name: str
    kind: str
    paused: bool = False
    paused_reason: str | None = None
    paused_by: str | None = None
    paused_at: datetime | None = None
    breaker: Literal["closed", "open", "half_open"] = "closed"
    breaker_open_until: datetime | None = None

    @classmethod
    def of(cls, name: str, spec: Target, state: TargetState | None) -> TargetOut:
        """A configured target with its stored state (none stored: running, breaker closed)."""
        if state is None:
            return cls(name=name, kind=spec.kind)
        open_until = state.breaker_open_until
        breaker: Literal["closed", "open", "half_open"] = "closed"
        if open_until is not None:
            breaker = "open" if open_until > datetime.now(UTC) else "half_open"
        return cls(
            name=name,
            kind=spec.kind,
            paused=state.paused,
            paused_reason=state.paused_reason,
            paused_by=state.paused_by,
            paused_at=state.paused_at,
            breaker=breaker,
            breaker_open_until=open_until,
        )


class TargetChangeOut(TargetOut):
    changed: int = Field(description="deliveries held by a pause, or released by a resume")
