"""`mmhub bitrix24 bind`: register the event handlers the routes need on an application portal, idempotently.

For a portal with `offline`, every Bitrix24 event a route names is bound with `event_type=offline` and the portal's
`auth_connector` (the hub's own writes then raise nothing), plus `ONOFFLINEEVENT` on `app.handler_url` so that a pull
starts as soon as the queue has news. Without `offline`, the events are bound online to `app.handler_url`. Handlers of
the hub's that no route needs any more are unbound; handlers of others are left alone. Route patterns (`ONCRMDEAL*`)
cannot be bound: they are reported, not guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.bitrix24.rest import PortalClient
from app.hubconfig import HubConfig, Portal

NOTIFY_EVENT = "ONOFFLINEEVENT"
MIN_TIMEOUT = 1  # seconds between two ONOFFLINEEVENT calls (event.bind options.minTimeout)


@dataclass(frozen=True, order=True)
class Handler:
    """One binding as event.get lists it."""

    event: str
    handler: str
    offline: bool
    connector: str | None = None

    def describe(self) -> str:
        kind = (
            f"offline (auth_connector {self.connector})"
            if self.offline
            else f"online → {self.handler}"
        )
        return f"{self.event} {kind}"

    def params(self) -> dict[str, Any]:
        """event.bind / event.unbind parameters."""
        params: dict[str, Any] = {"event": self.event, "handler": self.handler}
        if self.offline:
            params.update(event_type="offline", auth_connector=self.connector)
        if self.event == NOTIFY_EVENT:
            params["options"] = {"minTimeout": MIN_TIMEOUT}
        return params


@dataclass
class BindPlan:
    bind: list[Handler] = field(default_factory=list)
    unbind: list[Handler] = field(default_factory=list)
    keep: list[Handler] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)  # route patterns that cannot be bound


def routed_events(hub: HubConfig) -> tuple[list[str], list[str]]:
    """The Bitrix24 event names the routes take, and the patterns among them."""
    names: set[str] = set()
    patterns: set[str] = set()
    for route in hub.routes:
        if route.from_.source == "bitrix24":
            for event in route.from_.events:
                (patterns if any(c in event for c in "*?[") else names).add(event.upper())
    return sorted(names), sorted(patterns)


def wanted(hub: HubConfig, portal: Portal) -> tuple[list[Handler], list[str]]:
    """The handlers the routes need on ``portal``, and the route patterns left out."""
    assert portal.app is not None
    names, patterns = routed_events(hub)
    url = portal.app.handler_url or ""
    if portal.offline is not None:
        handlers = [Handler(name, url, True, portal.offline.auth_connector) for name in names]
        if url:
            handlers.append(Handler(NOTIFY_EVENT, url, False))
        return handlers, patterns
    return ([Handler(name, url, False) for name in names] if url else []), patterns


def current(rows: Any) -> list[Handler]:
    """event.get's result as handlers."""
    found = []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, Mapping):
            offline = str(row.get("offline", "0")) == "1"
            connector = row.get("connector_id") or row.get("auth_connector")
            found.append(
                Handler(
                    str(row.get("event", "")).upper(),
                    str(row.get("handler") or ""),
                    offline,
                    str(connector) if connector and offline else None,
                )
            )
    return found


def plan(portal: Portal, want: list[Handler], have: list[Handler], patterns: list[str]) -> BindPlan:
    """What to bind and unbind so that the hub's handlers are exactly ``want``."""
    assert portal.app is not None
    connector = portal.offline.auth_connector if portal.offline else None
    ours = [
        h
        for h in have
        if (h.offline and h.connector == connector and connector)
        or (portal.app.handler_url and h.handler == portal.app.handler_url)
    ]
    return BindPlan(
        bind=sorted(set(want) - set(have)),
        unbind=sorted(set(ours) - set(want)),
        keep=sorted(set(want) & set(have)),
        patterns=patterns,
    )


async def bind(client: PortalClient, hub: HubConfig, portal: Portal, *, dry_run: bool) -> BindPlan:
    """Compare the portal's handlers with what the routes need and, unless ``dry_run``, make them so."""
    want, patterns = wanted(hub, portal)
    result = plan(portal, want, current((await client.call("event.get")).result), patterns)
    if not dry_run:
        for handler in result.unbind:
            await client.call("event.unbind", handler.params())
        for handler in result.bind:
            await client.call("event.bind", handler.params())
    return result
