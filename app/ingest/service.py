"""record_event() and record_events(): route accepted events and commit them with their deliveries."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import Request

from app.errors import Conflict
from app.ingest.committer import GroupCommitter
from app.ingest.model import IngestResult, NewEvent, PlannedDelivery
from app.ingest.routing import plan_deliveries
from app.ingest.spool import Spool
from app.logs import bind
from app.settings import Settings
from app.telemetry import IDEMPOTENCY_CONFLICTS, INGESTED
from app.tracing import traceparent

log = logging.getLogger(__name__)
_PLANS: dict[tuple[int, str, str], list[PlannedDelivery]] = {}  # the hub config is immutable


async def record_event(request: Request, event: NewEvent) -> IngestResult:
    """Plan one delivery per routed target and wait until all of it is committed."""
    [outcome] = await record_events(request, [event])
    return outcome


async def record_events(request: Request, events: Sequence[NewEvent]) -> list[IngestResult]:
    """Commit a request's events (a batch: all or none) and their deliveries.

    Raises:
        Conflict: an event's Idempotency-Key names a stored event with another payload; nothing
            of the request is stored.
    """
    settings: Settings = request.app.state.settings
    trace = traceparent()  # the request's span: the deliveries' attempts join it
    for event in events:
        event.traceparent = trace
        key = (id(settings.hub), event.source, event.type)
        planned = _PLANS.get(key)
        if planned is None:
            planned = _PLANS[key] = plan_deliveries(settings.hub, event.source, event.type)
        event.deliveries = planned
    if len(events) == 1:
        # One event: the group commit, or the outage spool while PostgreSQL is down.
        bind(source=events[0].source, event_type=events[0].type, subject=events[0].subject)
        spool: Spool = request.app.state.spool
        outcomes = [await spool.submit(events[0])]
    else:  # a batch is all or nothing in one transaction: it does not go to the spool
        committer: GroupCommitter = request.app.state.committer
        outcomes = await committer.submit_many(events)
    for index, (event, outcome) in enumerate(zip(events, outcomes, strict=True)):
        if outcome.conflict:
            _refuse_conflict(event, outcome, index if len(events) > 1 else None)
    for event, outcome in zip(events, outcomes, strict=True):
        if not outcome.duplicate:
            INGESTED.labels(event.source, event.type).inc()
    if len(events) == 1:
        bind(event_id=str(outcomes[0].event_id))
        if outcomes[0].spooled:
            log.info("event spooled with %d deliveries planned", outcomes[0].deliveries)
        elif outcomes[0].duplicate:
            log.info("duplicate event: nothing stored")
        else:
            log.info("event accepted with %d deliveries", outcomes[0].deliveries)
    else:
        new = sum(not outcome.duplicate for outcome in outcomes)
        log.info("batch of %d events accepted: %d new", len(events), new)
    return outcomes


def _refuse_conflict(event: NewEvent, outcome: IngestResult, index: int | None) -> None:
    """Count and log a reused Idempotency-Key (the key itself is the client's: not logged)."""
    IDEMPOTENCY_CONFLICTS.labels(event.source).inc()
    log.warning(
        "Idempotency-Key reused with a different payload: nothing stored",
        extra={"source": event.source, "existing_event_id": str(outcome.event_id), "row": index},
    )
    if index is None:
        detail = "the Idempotency-Key was used before with a different payload"
        raise Conflict(detail, event_id=str(outcome.event_id))
    detail = f"row {index}: the Idempotency-Key was used before with a different payload"
    raise Conflict(detail, event_id=str(outcome.event_id), index=index)
