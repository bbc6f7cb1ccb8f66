"""The console's operator actions (POST): replay, edit-and-replay, cancel, bulk replay, pause and
resume. Each needs a signed-in operator and the session's CSRF token, calls the same service
function as the admin API and the CLI (which writes the audit row), and redirects (303) to a page.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app import jsonio
from app.admin.deps import Runner, Session
from app.console.session import Acting, ConsoleUser
from app.console.views import redirect, render
from app.errors import HubError, Unprocessable
from app.outbox.filters import DeliveryFilter
from app.support import actions

router = APIRouter(prefix="/console", include_in_schema=False)
Reason = Annotated[str, Form(max_length=2000)]
Text = Annotated[str, Form(max_length=200)]


def _operator(request: Request, user: ConsoleUser) -> Response | None:
    """A 403 page for anyone but an operator (viewers have no buttons; this refuses them anyway)."""
    if user.operator:
        return None
    message = f"{user.name} is a {user.role}: only an operator may do this"
    return render(request, "error.html", user, status=403, error=message)


def _why(reason: str) -> str:
    """The reason is required for every action: the audit log says why."""
    if not reason.strip():
        raise Unprocessable("say why (the reason goes into the audit log)")
    return reason.strip()


async def _on_delivery(
    request: Request,
    user: ConsoleUser,
    delivery_id: uuid.UUID,
    work: Callable[[], Awaitable[object]],
    done: str,
) -> Response:
    """Run an operator's action on one delivery, then back to its page with the outcome."""
    page = f"/console/deliveries/{delivery_id}"
    if refused := _operator(request, user):
        return refused
    try:
        await work()
    except HubError as exc:
        return redirect(page, error=exc.detail)
    return redirect(page, flash=done)


@router.post("/deliveries/{delivery_id}/replay")
async def replay(
    request: Request, user: Acting, session: Session, delivery_id: uuid.UUID, reason: Reason = ""
) -> Response:
    """Replay one delivery now (its next attempt is recorded as manual)."""

    async def work() -> object:
        return await actions.replay_delivery(session, delivery_id, user.name, _why(reason))

    done = "Replay requested: the delivery is due now."
    return await _on_delivery(request, user, delivery_id, work, done)


@router.post("/deliveries/{delivery_id}/edit-replay")
async def edit_replay(
    request: Request,
    user: Acting,
    session: Session,
    delivery_id: uuid.UUID,
    data: Annotated[str, Form(max_length=2 * 1024 * 1024)],
    reason: Reason = "",
) -> Response:
    """Replay with corrected data (a JSON object); the event keeps the original."""

    async def work() -> object:
        try:
            parsed: Any = jsonio.loads(data)  # integers beyond 64 bits kept exact
        except orjson.JSONDecodeError as exc:
            raise Unprocessable(f"the data is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise Unprocessable("the data must be a JSON object")
        return await actions.edit_and_replay(session, delivery_id, parsed, user.name, _why(reason))

    done = "Edited data saved; the delivery is due now."
    return await _on_delivery(request, user, delivery_id, work, done)


@router.post("/deliveries/{delivery_id}/cancel")
async def cancel(
    request: Request, user: Acting, session: Session, delivery_id: uuid.UUID, reason: Reason = ""
) -> Response:
    """Stop a waiting or dead delivery for good (a replay brings it back)."""

    async def work() -> object:
        return await actions.cancel_delivery(session, delivery_id, user.name, _why(reason))

    return await _on_delivery(request, user, delivery_id, work, "Delivery cancelled.")


@router.post("/replays")
async def bulk_replay(
    request: Request,
    user: Acting,
    session: Session,
    runner: Runner,
    background: BackgroundTasks,
    reason: Reason = "",
    force: Annotated[bool, Form()] = False,
    status: Text = "",
    target: Text = "",
    source: Text = "",
    event_type: Text = "",
    subject: Text = "",
    since: Text = "",
    until: Text = "",
    q: Text = "",
) -> Response:
    """Start a bulk replay of what the (dry-run) filter matches; the job page shows its progress."""
    if refused := _operator(request, user):
        return refused
    values = {"status": status, "target": target, "source": source, "event_type": event_type}
    values |= {"subject": subject, "since": since, "until": until, "text": q}
    try:
        where = DeliveryFilter.model_validate({k: v.strip() or None for k, v in values.items()})
        job = await actions.start_bulk_replay(session, where, user.name, _why(reason), force=force)
    except ValidationError as exc:
        return render(request, "error.html", user, status=422, error=str(exc.errors()[0]["msg"]))
    except HubError as exc:
        return render(request, "error.html", user, status=exc.status, error=exc.detail)
    background.add_task(runner.start, job.id)  # after the commit: the job is there to be read
    return redirect(f"/console/replays/{job.id}")


@router.post("/replays/{job_id}/cancel")
async def cancel_bulk_replay(
    request: Request, user: Acting, session: Session, job_id: uuid.UUID
) -> Response:
    """Stop a bulk replay after its current batch."""
    if refused := _operator(request, user):
        return refused
    await actions.cancel_replay_job(session, job_id, user.name)
    return redirect(f"/console/replays/{job_id}", flash="Bulk replay stopped.")


@router.post("/targets/{name}/{change}")
async def pause_or_resume(
    request: Request, user: Acting, session: Session, name: str, change: str, reason: Reason = ""
) -> Response:
    """Pause a target (hold its deliveries) or resume it."""
    if refused := _operator(request, user):
        return refused
    if name not in request.app.state.settings.hub.targets or change not in ("pause", "resume"):
        return render(request, "error.html", user, status=404, error=f"no target {name!r}")
    service = actions.pause if change == "pause" else actions.resume
    try:
        count = await service(session, name, user.name, _why(reason))
    except HubError as exc:
        return redirect("/console", error=exc.detail)
    done = "paused" if change == "pause" else "resumed"
    return redirect(
        "/console",
        flash=f"{name} {done} ({count} deliveries {'held' if change == 'pause' else 'released'}).",
    )
