"""What the delivery and event pages show beside the stored rows: the route, the CloudEvent."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from app.hubconfig import Route
from app.models import Delivery, Event
from app.outbox.envelope import build_cloudevent


def route_of(request: Request, name: str) -> Route | None:
    """The configured route of this name (None when the configuration no longer has it)."""
    routes: list[Route] = request.app.state.settings.hub.routes
    return next((route for route in routes if route.name == name), None)


def cloudevent_of(event: Event, delivery: Delivery | None) -> dict[str, Any]:
    """The CloudEvent a target gets for this event (with an edit-and-replay's data when set).

    Built by the targets' own function, so the page shows exactly what is sent.
    """
    row = {column.key: getattr(event, column.key) for column in Event.__table__.columns}
    envelope = build_cloudevent(row)
    if delivery is not None and delivery.payload_override is not None:
        envelope["data"] = delivery.payload_override
    return envelope
