"""POST /webhooks/1c and /webhooks/1c/{type}: callbacks from 1C:Enterprise HTTP services.

One object is one event; a JSON array of envelopes (on /webhooks/1c) or an OData collection
``{"value": [row, ...]}`` (on /webhooks/1c/{type}) is a batch: one event per row, all committed in one
transaction or none, at most `MMHUB_MAX_BATCH_ROWS` rows.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from asgi_correlation_id import correlation_id
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app import jsonio
from app.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from app.ingest.body import media_type, read_body
from app.ingest.idempotency import client_key, keyed_dedup_key, payload_digest
from app.ingest.model import NewEvent, batch_reply
from app.ingest.replies import REPLIES, Accepted, BatchAccepted
from app.ingest.scrub import mask_secrets, safe_headers
from app.ingest.service import Ingest
from app.secrets import redact, secret_values
from app.settings import Settings
from app.sources.errors import MalformedError, ShapeError
from app.sources.onec.decode import decode_1c_json
from app.sources.onec.parse import OneCEvent, parse_1c, parse_odata
from app.sources.onec.verify import authenticate

router = APIRouter(tags=["ingest"])

# 1C's HTTPЗапрос often sends no Content-Type, or text/plain, for a JSON body.
_JSON_TYPES = {"", "application/json", "text/json", "text/plain"}
_Parse = Callable[[Any], OneCEvent]


@router.post("/webhooks/1c", response_model=Accepted | BatchAccepted, responses=REPLIES)
async def onec_webhook(request: Request, body: bytes = Depends(read_body)) -> Response:
    """Accept the hub's envelope or 1C's XDTO JSON, or a JSON array of them (a batch)."""
    authenticate(request.app.state.settings.hub.sources.onec, request.headers.get("authorization"))
    obj = _decode(request, body)
    if isinstance(obj, list):
        return await _accept_batch(request, obj, parse_1c)
    return await _accept(request, body, obj, parse_1c)


@router.post(
    "/webhooks/1c/{object_type}",
    response_model=Accepted | BatchAccepted,
    responses=REPLIES,
)
async def onec_odata_webhook(
    object_type: str, request: Request, body: bytes = Depends(read_body)
) -> Response:
    """Accept an OData-style object (`Ref_Key`, `DataVersion`) whose type is in the path, or an
    OData collection of them (`{"value": [...]}`, a batch)."""
    authenticate(request.app.state.settings.hub.sources.onec, request.headers.get("authorization"))
    obj = _decode(request, body)
    parse = partial(parse_odata, object_type)
    if _is_collection(obj):
        return await _accept_batch(request, obj["value"], parse)
    return await _accept(request, body, obj, parse)


def _decode(request: Request, body: bytes) -> Any:
    kind, charset = media_type(request)
    if kind not in _JSON_TYPES:
        raise UnsupportedMediaType(f"expected application/json, got {kind}")
    try:
        return decode_1c_json(body, charset)
    except MalformedError as exc:
        raise BadRequest(f"the body cannot be parsed: {exc}") from None


def _is_collection(obj: Any) -> bool:
    """OData's `{"value": [...]}` (a single object always has its own `Ref_Key` or `Ref`)."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("value"), list)
        and "Ref_Key" not in obj
        and "Ref" not in obj
    )


async def _accept(request: Request, body: bytes, obj: Any, parse: _Parse) -> Response:
    try:
        parsed = parse(obj)
    except ShapeError as exc:
        raise Unprocessable(str(exc)) from None
    key = client_key(request)
    event = _event(request, parsed, body, obj, keyed_dedup_key(key) if key else None)
    ingest: Ingest = request.app.state.ingest
    outcome = await ingest.record(event)
    return Response(
        orjson.dumps(outcome.reply()), outcome.status_code, media_type="application/json"
    )


async def _accept_batch(request: Request, rows: list[Any], parse: _Parse) -> Response:
    """Validate every row, then commit them all in one transaction (a bad row names its index)."""
    settings: Settings = request.app.state.settings
    if not rows:
        raise Unprocessable("the batch has no rows")
    if len(rows) > settings.max_batch_rows:
        raise PayloadTooLarge(
            f"the batch has {len(rows)} rows; the limit is {settings.max_batch_rows}"
        )
    key = client_key(request)
    events = []
    for index, row in enumerate(rows):
        try:
            parsed = parse(row)
        except ShapeError as exc:
            raise Unprocessable(f"row {index}: {exc}", index=index) from None
        # A row's raw body is the row itself: the whole batch once per event would be stored N times.
        raw = jsonio.dumps(row)
        events.append(
            _event(request, parsed, raw, row, keyed_dedup_key(key, index) if key else None)
        )
    ingest: Ingest = request.app.state.ingest
    outcomes = await ingest.record_many(events)
    return Response(orjson.dumps(batch_reply(outcomes)), media_type="application/json")


def _event(
    request: Request, parsed: OneCEvent, raw: bytes, obj: Any, dedup_key: str | None
) -> NewEvent:
    # Every 1C shape (envelope, XDTO, OData) is stored as the hub's envelope.
    payload = redact(
        {
            "type": parsed.type,
            "event": parsed.event,
            "ref": parsed.ref,
            "data_version": parsed.data_version,
            "data": parsed.data,
        }
    )
    return NewEvent(
        source="onec",
        type=parsed.event_type,
        subject=parsed.subject,
        dedup_key=dedup_key or _dedup_key(parsed, payload),
        payload=payload,
        raw_body=mask_secrets(raw, secret_values(obj)),
        headers=safe_headers(request.headers),
        request_id=correlation_id.get(),
    )


def _dedup_key(event: OneCEvent, payload: dict[str, Any]) -> str:
    """(type, ref, DataVersion) names one write in 1C; without a version, the canonical payload
    does (type, ref and event included), so two different bodies never share a key. It is the
    secret-free payload that is hashed: a stored key must not let anyone test guesses of a secret.
    """
    if event.data_version:
        return f"{event.type}:{event.ref}:{event.data_version}"
    return "sha256:" + payload_digest(payload).hex()
