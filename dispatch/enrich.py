"""Enrichment (`enrich: true` on a route): `data.record` read from the portal at delivery time.

Ingest never calls out; the drain calls `enrich` on each claimed batch before sending it. The
batch's enrich deliveries are grouped by portal and read with one `batch` call per 50 records
(`app.bitrix24.records`), within the portal's shared rate limit. A record that is gone gives
`record: null` and `record_reason`; a read that failed makes the attempt a retryable failure,
recorded like any other (`b24:<CODE>`), and the target is not called.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from app.bitrix24.records import Read, read_records
from app.bitrix24.rest import MAX_COMMANDS, PortalClient
from dispatch.echo import echoes
from dispatch.retry import Outcome
from dispatch.targets.base import AttemptResult

if TYPE_CHECKING:
    from dispatch.deliver import Claimed
    from dispatch.runtime import Runtime

Unsent = tuple["Claimed", AttemptResult]  # an attempt that ended before the target was called


def enrich_routes(rt: Runtime) -> frozenset[str]:
    """The names of the routes with `enrich: true`."""
    return frozenset(route.name for route in rt.settings.hub.routes if route.enrich)


def claim_size(rt: Runtime, target: str, default: int) -> int:
    """Claim 50 at a time for a target fed by an enrich route, so one batch reads them all."""
    routes = enrich_routes(rt)
    fed = any(
        route.name in routes and any(hop.target == target for hop in route.to)
        for route in rt.settings.hub.routes
    )
    return max(default, MAX_COMMANDS) if fed else default


async def enrich(rt: Runtime, batch: list[Claimed]) -> tuple[list[Claimed], list[Unsent]]:
    """The batch with `data.record` set where its route asks, and the attempts that failed."""
    routes = enrich_routes(rt)
    wanted = [c for c in batch if c.route in routes]
    if not wanted:
        return batch, []
    by_portal: dict[PortalClient | None, list[Claimed]] = defaultdict(list)
    for claimed in wanted:
        by_portal[rt.portals.for_event(claimed.outbound.event)].append(claimed)
    reads: dict[int, Read] = {}  # id(claimed) -> its read
    suppressed: dict[int, str] = {}  # id(claimed) -> the hub's write it echoes
    for client, group in by_portal.items():
        if client is None:
            continue
        found = await read_records(client, [c.outbound.event["subject"] for c in group])
        reads.update({id(c): found[c.outbound.event["subject"]] for c in group})
        suppressed.update(await echoes(rt, rt.portals.portal_of(client), group, found))
    ready: list[Claimed] = []
    unsent: list[Unsent] = []
    for claimed in batch:
        if claimed.route not in routes:
            ready.append(claimed)
        elif id(claimed) not in reads:
            reason = "the event's portal has no `rest` configured"
            unsent.append((claimed, _failed("dead", "enrich:config", reason, None)))
        elif (error := reads[id(claimed)].error) is not None:
            reason = f"reading the record: {error}"
            unsent.append((claimed, _failed("retry", error.error_class, reason, error.status)))
        elif id(claimed) in suppressed:
            unsent.append((claimed, _failed("suppressed", "echo", suppressed[id(claimed)], None)))
        else:
            ready.append(_with_record(claimed, reads[id(claimed)]))
    return ready, unsent


def _with_record(claimed: Claimed, read: Read) -> Claimed:
    event = claimed.outbound.event
    data: dict[str, Any] = dict(event["data"]) if isinstance(event.get("data"), dict) else {}
    data["record"] = read.record
    if read.reason is not None:
        data["record_reason"] = read.reason
    outbound = dataclasses.replace(claimed.outbound, event={**event, "data": data})
    return dataclasses.replace(claimed, outbound=outbound)


def _failed(outcome: Outcome, error_class: str, reason: str, status: int | None) -> AttemptResult:
    # Any failed read is retried (an expired token or a fixed webhook code will pass later);
    # only a portal without `rest` is a configuration error that waiting cannot fix.
    return AttemptResult(
        outcome=outcome,
        http_status=status,
        error_class=error_class,
        error=reason,
        response_excerpt=None,
        retry_after=None,
        duration_ms=0,
    )
