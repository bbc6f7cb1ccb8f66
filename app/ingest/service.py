"""record_event(): route an accepted event and commit it with its deliveries."""

from __future__ import annotations

import logging

from fastapi import Request

from app.ingest.model import NewEvent, Outcome, PlannedDelivery
from app.ingest.routing import plan_deliveries
from app.ingest.spool import Spool
from app.logs import bind
from app.settings import Settings
from app.telemetry import INGESTED

log = logging.getLogger(__name__)
_PLANS: dict[tuple[int, str, str], list[PlannedDelivery]] = {}  # the hub config is immutable


async def record_event(request: Request, event: NewEvent) -> Outcome:
    """Plan one delivery per routed target and wait until all of it is committed."""
    settings: Settings = request.app.state.settings
    spool: Spool = request.app.state.spool  # the group commit, or the spool while it is down
    key = (id(settings.hub), event.source, event.type)
    planned = _PLANS.get(key)
    if planned is None:
        planned = _PLANS[key] = plan_deliveries(settings.hub, event.source, event.type)
    event.deliveries = planned
    bind(source=event.source, event_type=event.type, subject=event.subject)
    outcome = await spool.submit(event)
    bind(event_id=str(outcome.event_id))
    INGESTED.add(1, {"source": event.source, "duplicate": str(outcome.duplicate).lower()})
    if outcome.spooled:
        log.info("event spooled with %d deliveries planned", outcome.deliveries)
    elif outcome.duplicate:
        log.info("duplicate event: nothing stored")
    else:
        log.info("event accepted with %d deliveries", outcome.deliveries)
    return outcome
