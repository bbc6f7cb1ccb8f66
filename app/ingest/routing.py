"""Routing: which targets an event goes to, by source and event type (glob patterns)."""

from __future__ import annotations

from app.hubconfig import HubConfig
from app.ingest.model import PlannedDelivery


def plan_deliveries(hub: HubConfig, source: str, event_type: str) -> list[PlannedDelivery]:
    """One delivery per target; when several routes name a target, the first route wins."""
    planned: dict[str, PlannedDelivery] = {}
    for route in hub.routes:
        if route.matches(source, event_type):
            for hop in route.to:
                planned.setdefault(hop.target, PlannedDelivery(route.name, hop.target))
    return list(planned.values())
