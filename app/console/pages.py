"""The console's pages (GET): overview, deliveries, one delivery, one event, bulk replay, audit.

Each page reads through the support services (app.outbox.queries / actions), never its own SQL.
A service's error (no such delivery, …) becomes an HTML error page (see login.install).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from app.admin.deps import Session
from app.admin.schemas import TargetOut
from app.console import chart
from app.console.records import cloudevent_of, route_of
from app.console.session import User
from app.console.views import render, shown
from app.models import Delivery
from app.outbox import queries
from app.outbox.filters import STATUSES, DeliveryFilter, parse_when
from app.support import actions

router = APIRouter(prefix="/console", include_in_schema=False)

# The query string a support engineer pastes: the CLI's filters (`q` is the payload text).
PAGE_SIZE = 50
# What the overview counts: deliveries waiting or failed (not the delivered millions).
BACKLOG = ("pending", "delivering", "retrying", "held", "dead")
FILTER_PARAMS = ("status", "target", "source", "event_type", "subject", "since", "until", "q")


def read_filter(request: Request) -> tuple[dict[str, str], DeliveryFilter | None, str | None]:
    """The filter fields as given, the filter they make, or the message saying what is wrong."""
    given = {name: request.query_params.get(name, "").strip() for name in FILTER_PARAMS}
    values: dict[str, Any] = {k: v or None for k, v in given.items() if k != "q"}
    try:
        return given, DeliveryFilter.model_validate({**values, "text": given["q"] or None}), None
    except ValidationError as exc:
        problems = [
            f"{e['loc'][0]}: {str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors()
        ]
        return given, None, "; ".join(problems)


def _targets(request: Request) -> list[str]:
    return sorted(request.app.state.settings.hub.targets)


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, user: User, session: Session) -> HTMLResponse:
    """Per target: the last 24 h as a chart, backlog by status, oldest due age, circuit, pause."""
    names = _targets(request)
    stats = (await queries.stats(session, statuses=BACKLOG))["targets"]
    states = {state.target: state for state in await queries.target_states(session)}
    specs = request.app.state.settings.hub.targets
    targets = [TargetOut.of(name, specs[name], states.get(name)) for name in names]
    series = chart.build(names, await queries.activity(session, names, hours=chart.HOURS))
    return render(
        request,
        "overview.html",
        user,
        targets=targets,
        stats=stats,
        series={line.target: line for line in series},
        chart=chart,
        backlog=BACKLOG,
    )


@router.get("/deliveries", response_class=HTMLResponse)
async def deliveries(
    request: Request, user: User, session: Session, cursor: str | None = None
) -> HTMLResponse:
    """Search deliveries with the CLI's filters, newest first, a page at a time (keyset)."""
    given, where, error = read_filter(request)
    page = None
    if where is not None:
        page = await queries.search_deliveries(
            session, where, limit=PAGE_SIZE, cursor=cursor or None
        )
    next_url = None
    if page is not None and page.next_cursor:
        params = {k: v for k, v in given.items() if v} | {"cursor": page.next_cursor}
        next_url = f"/console/deliveries?{urlencode(params)}"
    replay_query = urlencode({k: v for k, v in given.items() if v})
    return render(
        request,
        "deliveries.html",
        user,
        status=422 if error else 200,
        given=given,
        error=error,
        page=page,
        next_url=next_url,
        replay_query=replay_query,
        statuses=sorted(STATUSES),
        targets=_targets(request),
        shown=lambda value: shown(user, value),
    )


@router.get("/deliveries/{delivery_id}", response_class=HTMLResponse)
async def delivery(
    request: Request, user: User, session: Session, delivery_id: uuid.UUID
) -> HTMLResponse:
    """One delivery: its payload, the CloudEvent the target gets, attempts, route, siblings."""
    record: Delivery = await queries.get_delivery(session, delivery_id)
    event = await queries.get_event(session, record.event_id)
    siblings = [d for d in event.deliveries if d.id != record.id]
    data = record.payload_override if record.payload_override is not None else None
    return render(
        request,
        "delivery.html",
        user,
        delivery=record,
        event=event,
        siblings=siblings,
        route=route_of(request, record.route),
        payload=shown(user, event.payload),
        override=shown(user, data),
        cloudevent=shown(user, cloudevent_of(event, record)),
        shown=lambda value: shown(user, value),
    )


@router.get("/events/{event_id}", response_class=HTMLResponse)
async def event(
    request: Request, user: User, session: Session, event_id: uuid.UUID
) -> HTMLResponse:
    """One event: its payload, the CloudEvent, and every delivery with its attempts."""
    record = await queries.get_event(session, event_id)
    return render(
        request,
        "event.html",
        user,
        event=record,
        payload=shown(user, record.payload),
        cloudevent=shown(user, cloudevent_of(record, None)),
        shown=lambda value: shown(user, value),
    )


@router.get("/replays/new", response_class=HTMLResponse)
async def bulk_dry_run(request: Request, user: User, session: Session) -> HTMLResponse:
    """The dry run of a bulk replay: how many deliveries the filter matches, then a confirm form."""
    given, where, error = read_filter(request)
    matched = None if where is None else await actions.count_matching(session, where)
    return render(
        request,
        "replay_new.html",
        user,
        status=422 if error else 200,
        given=given,
        error=error,
        matched=matched,
        cap=actions.BULK_CAP,
    )


@router.get("/replays/{job_id}", response_class=HTMLResponse)
async def bulk_job(
    request: Request, user: User, session: Session, job_id: uuid.UUID
) -> HTMLResponse:
    """A bulk replay's progress; with `HX-Request` only the progress fragment (htmx polls it)."""
    job = await actions.get_replay_job(session, job_id)
    fragment = request.headers.get("hx-request") == "true"
    name = "replay_progress.html" if fragment else "replay_job.html"
    return render(request, name, user, job=job)


@router.get("/audit", response_class=HTMLResponse)
async def audit(
    request: Request,
    user: User,
    session: Session,
    q: Annotated[str, Query(max_length=200)] = "",
    since: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    """Who replayed, cancelled, paused or resumed what, and why; searchable."""
    error = None
    try:
        start = parse_when(since) if since.strip() else None
    except ValueError as exc:
        error, start = f"since: {exc}", None
    entries = (
        []
        if error
        else await queries.audit_entries(session, since=start, limit=200, text=q.strip() or None)
    )
    return render(
        request,
        "audit.html",
        user,
        status=422 if error else 200,
        entries=entries,
        q=q,
        since=since,
        error=error,
    )
