"""POST /webhooks/bitrix24: outgoing webhooks and application events from Bitrix24 portals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from asgi_correlation_id import correlation_id
from fastapi import APIRouter, Request
from fastapi.responses import Response

from app import jsonio
from app.errors import BadRequest, Unprocessable, UnsupportedMediaType
from app.ingest.body import media_type, read_body
from app.ingest.model import NewEvent
from app.ingest.replies import REPLIES, Accepted
from app.ingest.scrub import mask_secrets, safe_headers
from app.ingest.service import Ingest
from app.secrets import scrub
from app.sources.bitrix24 import lifecycle
from app.sources.bitrix24.lifecycle import LIFECYCLE_EVENTS
from app.sources.bitrix24.parse import Bitrix24Event, parse_b24
from app.sources.bitrix24.phpform import parse_php_form
from app.sources.bitrix24.verify import authenticate_installed
from app.sources.errors import MalformedError, ShapeError
from app.sources.jsonlimits import check_json_limits

router = APIRouter(tags=["ingest"])
BITRIX24_PATH = "/webhooks/bitrix24"


@router.post(BITRIX24_PATH, response_model=Accepted, responses=REPLIES)
async def bitrix24_webhook(request: Request) -> Response:
    """Accept one Bitrix24 event once it is committed with its deliveries."""
    # Read here rather than as a dependency: FastAPI's dependency solving costs more than reading.
    body = await read_body(request)
    payload = _parse_body(request, body)
    name = payload.get("event")
    if isinstance(name, str) and name.strip().upper() in LIFECYCLE_EVENTS:
        reply = await lifecycle.handle(request, name.strip().upper(), payload)
        return Response(orjson.dumps(reply), media_type="application/json")
    source = request.app.state.settings.hub.sources.bitrix24
    await authenticate_installed(source, payload, request.app.state.installed_tokens)
    try:
        parsed = parse_b24(payload)
    except ShapeError as exc:
        raise Unprocessable(str(exc)) from None
    stored, secrets = scrub(payload)
    event = NewEvent(
        source="bitrix24",
        type=parsed.event,
        subject=parsed.subject,
        dedup_key=_dedup_key(request, parsed, body),
        payload=stored,
        raw_body=mask_secrets(body, secrets),
        headers=safe_headers(request.headers),
        origin=parsed.domain,
        occurred_at=_timestamp(parsed.ts),
        request_id=correlation_id.get(),
    )
    ingest: Ingest = request.app.state.ingest
    outcome = await ingest.record(event)
    # Built from our own dataclass: no response-model validation and serialization needed.
    return Response(
        orjson.dumps(outcome.reply()), outcome.status_code, media_type="application/json"
    )


def _parse_body(request: Request, body: bytes) -> dict[str, Any]:
    kind, _ = media_type(request)
    try:
        if kind == "application/x-www-form-urlencoded":
            return parse_php_form(body)
        if kind == "application/json":
            text = body.decode()
            check_json_limits(text)  # before orjson's own recursion, or anything else's
            parsed = jsonio.loads(text)  # integers beyond 64 bits kept exact
            if isinstance(parsed, dict):
                return parsed
            raise BadRequest("a JSON body must be an object")
    except (MalformedError, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body cannot be parsed: {exc}") from None
    raise UnsupportedMediaType(
        f"expected application/x-www-form-urlencoded or application/json, got {kind or 'none'}"
    )


def _dedup_key(request: Request, event: Bitrix24Event, body: bytes) -> str:
    """The client's Idempotency-Key, else the event's own key (see Bitrix24Event.dedup_key)."""
    if key := request.headers.get("idempotency-key"):
        return f"key:{key}"
    return event.dedup_key()


def _timestamp(ts: str | None) -> datetime | None:
    """`ts` as a time (parse_b24 checked its range)."""
    return datetime.fromtimestamp(int(ts), tz=UTC) if ts else None
