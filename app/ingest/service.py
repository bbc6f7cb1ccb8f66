"""Ingest: route accepted events and commit them with their deliveries."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from app.errors import Conflict
from app.hubconfig import HubConfig
from app.ingest.committer import GroupCommitter
from app.ingest.model import IngestResult, NewEvent, PlannedDelivery
from app.ingest.routing import plan_deliveries
from app.ingest.spool import Spool
from app.logs import bind
from app.telemetry import IDEMPOTENCY_CONFLICTS, INGESTED, labelled
from app.tracing import traceparent

log = logging.getLogger(__name__)


class Ingest:
    """Routes accepted events and commits them with their deliveries: what the webhook routes call.

    Plain arguments, no HTTP: the routes hand it parsed events; it plans the deliveries from the
    hub's routes and writes through the outage spool (one event) or the group commit (a batch).
    """

    def __init__(self, hub: HubConfig, spool: Spool, committer: GroupCommitter) -> None:
        self.hub, self.spool, self.committer = hub, spool, committer
        self._plans: dict[tuple[str, str], list[PlannedDelivery]] = {}  # the hub is immutable

    async def record(self, event: NewEvent) -> IngestResult:
        """Plan one delivery per routed target and wait until all of it is committed."""
        [outcome] = await self.record_many([event])
        return outcome

    async def record_many(self, events: Sequence[NewEvent]) -> list[IngestResult]:
        """Commit a request's events (a batch: all or none) and their deliveries.

        Raises:
            Conflict: an event's Idempotency-Key names a stored event with another payload;
                nothing of the request is stored.
        """
        trace = traceparent()  # the request's span: the deliveries' attempts join it
        for event in events:
            event.traceparent = trace
            event.deliveries = self._plan(event.source, event.type)
        if len(events) == 1:
            # One event: the group commit, or the outage spool while PostgreSQL is down.
            bind(source=events[0].source, event_type=events[0].type, subject=events[0].subject)
            outcomes = [await self.spool.submit(events[0])]
        else:  # a batch is all or nothing in one transaction: it does not go to the spool
            outcomes = await self.committer.submit_many(events)
        for index, (event, outcome) in enumerate(zip(events, outcomes, strict=True)):
            if outcome.conflict:
                _refuse_conflict(event, outcome, index if len(events) > 1 else None)
        for event, outcome in zip(events, outcomes, strict=True):
            if not outcome.duplicate:
                labelled(INGESTED, event.source, event.type).inc()
        _log(outcomes)
        return outcomes

    def _plan(self, source: str, event_type: str) -> list[PlannedDelivery]:
        key = (source, event_type)
        planned = self._plans.get(key)
        if planned is None:
            planned = self._plans[key] = plan_deliveries(self.hub, source, event_type)
        return planned


def _log(outcomes: list[IngestResult]) -> None:
    if len(outcomes) == 1:
        bind(event_id=str(outcomes[0].event_id))
        if outcomes[0].spooled:
            log.info("event spooled with %d deliveries planned", outcomes[0].deliveries)
        elif outcomes[0].duplicate:
            log.info("duplicate event: nothing stored")
        else:
            log.info("event accepted with %d deliveries", outcomes[0].deliveries)
    else:
        new = sum(not outcome.duplicate for outcome in outcomes)
        log.info("batch of %d events accepted: %d new", len(outcomes), new)


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
