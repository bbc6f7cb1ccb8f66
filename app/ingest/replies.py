"""The ingest reply models, for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Accepted(BaseModel):
    status: str = "accepted"
    event_id: str
    duplicate: bool
    deliveries: int


class BatchEvent(BaseModel):
    event_id: str
    duplicate: bool
    deliveries: int


class BatchAccepted(BaseModel):
    """A 1C batch: every row accepted (all or nothing); `duplicates` of them were stored before."""

    status: str = "accepted"
    accepted: int
    duplicates: int
    events: list[BatchEvent]


class Spooled(BaseModel):
    status: str = "spooled"
    event_id: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    request_id: str | None


_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
_SPOOLED = {
    "model": Spooled,
    "description": "PostgreSQL is down: the event is kept in the outage spool, committed later",
}
ERROR_REPLIES: dict[int | str, dict[str, Any]] = {
    status: {**_PROBLEM, "description": text}
    for status, text in {
        400: "Malformed body",
        401: "Not authenticated",
        408: "The body did not arrive within MMHUB_BODY_TIMEOUT",
        409: "Idempotency-Key reused with a different payload (`event_id`: the stored event)",
        413: "Body over MMHUB_MAX_BODY_BYTES, or a batch over MMHUB_MAX_BATCH_ROWS rows",
        415: "Unsupported media type",
        422: "Well-formed but unusable",
        503: "Database unavailable and the outage spool off or full; retry after Retry-After",
    }.items()
}
# Every reply but the 200 (the route's response_model): the 202 of the outage spool, the errors.
REPLIES: dict[int | str, dict[str, Any]] = {202: _SPOOLED, **ERROR_REPLIES}
