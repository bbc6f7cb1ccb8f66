"""/admin/v1: the support API. Each endpoint authenticates, parses, calls a service, replies;
the request's session (see deps.py) commits at the end.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request, Response
from pydantic import ValidationError

from app.admin.auth import Operator, Reader, Viewer
from app.admin.deps import Runner, Session
from app.admin.pii import Shown, shown_to
from app.admin.schemas import (
    AuditOut,
    BulkReplayRequest,
    DeliveryOut,
    DeliveryPage,
    DryRunOut,
    EditReplayRequest,
    EventOut,
    EventPage,
    ReplayJobOut,
    ReplayRequest,
    StatsOut,
    TargetChangeOut,
    TargetOut,
    TargetRequest,
)
from app.errors import NotFound, Unprocessable
from app.hubconfig import AdminToken, Target
from app.ingest.replies import Problem
from app.outbox import queries
from app.outbox.filters import DeliveryFilter, parse_when
from app.outbox.states import get_state
from app.support import actions

_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {**_PROBLEM, "description": "No admin token, or an unknown one"},
    404: {**_PROBLEM, "description": "No such record or target"},
    422: {**_PROBLEM, "description": "A bad parameter, named in `errors`"},
}
# What only the operator endpoints add.
_WRITE: dict[int | str, dict[str, Any]] = {
    403: {**_PROBLEM, "description": "A viewer's token: this needs an operator"},
    409: {**_PROBLEM, "description": "The delivery is being delivered, or cannot be cancelled"},
}
router = APIRouter(prefix="/admin/v1", tags=["admin"], responses=_ERRORS)

# Query parameters named differently from DeliveryFilter's fields.
_PARAM_OF = {"text": "q"}


def build_filter(values: dict[str, Any], where: str) -> DeliveryFilter:
    """A DeliveryFilter, or a 422 naming each bad parameter (`where` is `query` or `body`)."""
    try:
        return DeliveryFilter.model_validate(values)
    except ValidationError as exc:
        errors = [
            {
                "loc": [where, *(_PARAM_OF.get(str(part), part) for part in error["loc"])],
                "msg": str(error["msg"]).removeprefix("Value error, "),
                "type": error["type"],
            }
            for error in exc.errors()
        ]
        detail = "; ".join(f"{e['loc'][1]}: {e['msg']}" for e in errors)
        raise Unprocessable(detail, errors=errors) from None


def query_filter(
    status: Annotated[
        str | None, Query(description="comma-separated, e.g. `dead,retrying`")
    ] = None,
    target: str | None = None,
    source: str | None = None,
    event_type: Annotated[str | None, Query(description="exact, or a glob: `ONCRMDEAL*`")] = None,
    subject: Annotated[str | None, Query(description="e.g. `deal/7405`")] = None,
    since: Annotated[str | None, Query(description="received at or after: `2h` or ISO")] = None,
    until: Annotated[str | None, Query(description="received before: `30m` or ISO")] = None,
    q: Annotated[str | None, Query(description="text inside the payload")] = None,
) -> DeliveryFilter:
    """The search filter from the query string."""
    values = {"status": status, "target": target, "source": source, "event_type": event_type}
    values |= {"subject": subject, "since": since, "until": until, "text": q}
    return build_filter(values, "query")


Filter = Annotated[DeliveryFilter, Depends(query_filter)]
Limit = Annotated[int, Query(ge=1, le=queries.MAX_PAGE)]


def _shown(request: Request, caller: AdminToken, out: Shown) -> Shown:
    """Phones and e-mails masked for viewers (`pii.mask_for_viewers`)."""
    masking = request.app.state.settings.hub.pii.mask_for_viewers
    return shown_to(caller.role, masking, out)


@router.get("/deliveries", response_model=DeliveryPage)
async def search_deliveries(
    caller: Reader,
    request: Request,
    session: Session,
    where: Filter,
    limit: Limit = 50,
    cursor: str | None = None,
) -> DeliveryPage:
    """Deliveries matching every given filter, newest first."""
    page = await queries.search_deliveries(session, where, limit=limit, cursor=cursor)
    return _shown(request, caller, DeliveryPage.model_validate(page, from_attributes=True))


@router.get("/deliveries/{delivery_id}", response_model=DeliveryOut)
async def get_delivery(
    caller: Reader, request: Request, session: Session, delivery_id: uuid.UUID
) -> DeliveryOut:
    """One delivery with its event's summary and every attempt."""
    out = DeliveryOut.model_validate(await queries.get_delivery(session, delivery_id))
    return _shown(request, caller, out)


@router.get("/events", response_model=EventPage)
async def search_events(
    caller: Reader,
    request: Request,
    session: Session,
    where: Filter,
    limit: Limit = 50,
    cursor: str | None = None,
) -> EventPage:
    """Events matching the filter (delivery filters match any of their deliveries), newest first."""
    page = await queries.search_events(session, where, limit=limit, cursor=cursor)
    return _shown(request, caller, EventPage.model_validate(page, from_attributes=True))


@router.get("/events/{event_id}", response_model=EventOut)
async def get_event(
    caller: Reader,
    request: Request,
    session: Session,
    event_id: uuid.UUID,
    include_raw: bool = False,
) -> EventOut:
    """One event with its deliveries and their attempts; `include_raw` adds the masked raw body.

    Phones and e-mails are masked for viewers (`pii.mask_for_viewers`); operators see them.
    """
    event = await queries.get_event(session, event_id)
    out = EventOut.model_validate(event, context={"include_raw": include_raw})
    return _shown(request, caller, out)


@router.post("/deliveries/{delivery_id}/replay", response_model=DeliveryOut, responses=_WRITE)
async def replay(
    actor: Operator, session: Session, delivery_id: uuid.UUID, body: ReplayRequest | None = None
) -> DeliveryOut:
    """Make the delivery due now; its next attempt is recorded as manual."""
    await actions.replay_delivery(session, delivery_id, actor, body.reason if body else None)
    return DeliveryOut.model_validate(await queries.get_delivery(session, delivery_id))


@router.post("/deliveries/{delivery_id}/edit-replay", response_model=DeliveryOut, responses=_WRITE)
async def edit_replay(
    actor: Operator, session: Session, delivery_id: uuid.UUID, body: EditReplayRequest
) -> DeliveryOut:
    """Replay with corrected data (the event keeps the original); a reason is required."""
    await actions.edit_and_replay(session, delivery_id, body.data, actor, body.reason)
    return DeliveryOut.model_validate(await queries.get_delivery(session, delivery_id))


@router.post("/deliveries/{delivery_id}/cancel", response_model=DeliveryOut, responses=_WRITE)
async def cancel(
    actor: Operator, session: Session, delivery_id: uuid.UUID, body: ReplayRequest | None = None
) -> DeliveryOut:
    """Stop a waiting or dead delivery for good (a replay brings it back)."""
    await actions.cancel_delivery(session, delivery_id, actor, body.reason if body else None)
    return DeliveryOut.model_validate(await queries.get_delivery(session, delivery_id))


@router.post(
    "/replays",
    response_model=ReplayJobOut | DryRunOut,
    responses={202: {"model": ReplayJobOut, "description": "The job started"}, **_WRITE},
)
async def bulk_replay(
    actor: Operator,
    session: Session,
    runner: Runner,
    body: BulkReplayRequest,
    response: Response,
    background: BackgroundTasks,
) -> ReplayJobOut | DryRunOut:
    """Replay every delivery the filter matches, in batches; over the cap only with `force`.

    A dry run only counts: it changes nothing, so it writes no audit row either.
    """
    where = build_filter(body.filter_values(), "body")
    if body.dry_run:
        return DryRunOut(matched=await actions.count_matching(session, where), cap=actions.BULK_CAP)
    job = await actions.start_bulk_replay(session, where, actor, body.reason, force=body.force)
    # Background tasks run after the commit; a task started now might not see the job yet.
    background.add_task(runner.start, job.id)
    response.status_code = 202
    return ReplayJobOut.model_validate(job)


@router.get("/replays/{job_id}", response_model=ReplayJobOut)
async def get_replay(_: Viewer, session: Session, job_id: uuid.UUID) -> ReplayJobOut:
    """A bulk replay's progress."""
    return ReplayJobOut.model_validate(await actions.get_replay_job(session, job_id))


@router.post("/replays/{job_id}/cancel", response_model=ReplayJobOut, responses=_WRITE)
async def cancel_replay(actor: Operator, session: Session, job_id: uuid.UUID) -> ReplayJobOut:
    """Stop a bulk replay after its current batch (a job already ended is returned as is)."""
    return ReplayJobOut.model_validate(await actions.cancel_replay_job(session, job_id, actor))


def _targets(request: Request) -> dict[str, Target]:
    targets: dict[str, Target] = request.app.state.settings.hub.targets
    return targets


def _target(request: Request, name: str) -> Target:
    spec = _targets(request).get(name)
    if spec is None:
        raise NotFound(f"no target {name!r} in the configuration")
    return spec


@router.get("/targets", response_model=list[TargetOut])
async def list_targets(_: Viewer, session: Session, request: Request) -> list[TargetOut]:
    """The configured targets with their pause and circuit breaker state."""
    states = {state.target: state for state in await queries.target_states(session)}
    return [
        TargetOut.of(name, spec, states.get(name))
        for name, spec in sorted(_targets(request).items())
    ]


@router.post("/targets/{name}/pause", response_model=TargetChangeOut, responses=_WRITE)
async def pause_target(
    actor: Operator,
    session: Session,
    request: Request,
    name: str,
    body: TargetRequest | None = None,
) -> TargetChangeOut:
    """Hold the target's deliveries (a maintenance window); `changed` = how many were held."""
    spec = _target(request, name)
    held = await actions.pause(session, name, actor, body.reason if body else None)
    state = TargetOut.of(name, spec, await get_state(session, name))
    return TargetChangeOut(**state.model_dump(), changed=held)


@router.post("/targets/{name}/resume", response_model=TargetChangeOut, responses=_WRITE)
async def resume_target(
    actor: Operator,
    session: Session,
    request: Request,
    name: str,
    body: TargetRequest | None = None,
) -> TargetChangeOut:
    """Let the target's held deliveries go; `changed` = how many were released."""
    spec = _target(request, name)
    released = await actions.resume(session, name, actor, body.reason if body else None)
    state = TargetOut.of(name, spec, await get_state(session, name))
    return TargetChangeOut(**state.model_dump(), changed=released)


@router.get("/stats", response_model=StatsOut)
async def stats(_: Viewer, session: Session) -> StatsOut:
    """Deliveries by status and target, and per target the age of the oldest due one."""
    return StatsOut.of(await queries.stats(session))


@router.get("/audit", response_model=list[AuditOut])
async def audit(
    _: Viewer,
    session: Session,
    since: Annotated[str | None, Query(description="`24h` or ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditOut]:
    """Who replayed, cancelled, paused or resumed what, how many, and why; newest first."""
    try:
        start = parse_when(since) if since else None
    except ValueError as exc:
        error = {"loc": ["query", "since"], "msg": str(exc), "type": "value_error"}
        raise Unprocessable(f"since: {exc}", errors=[error]) from None
    entries = await queries.audit_entries(session, since=start, limit=limit)
    return [AuditOut.model_validate(entry) for entry in entries]
