"""POST /webhooks/1c and /webhooks/1c/{type}: callbacks from 1C:Enterprise HTTP services."""

from __future__ import annotations

import hashlib
from typing import Any

from asgi_correlation_id import correlation_id
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from app.errors import BadRequest, Unprocessable, UnsupportedMediaType
from app.ingest.body import media_type, read_body
from app.ingest.model import NewEvent
from app.ingest.replies import REPLIES, Accepted
from app.ingest.scrub import mask_secrets, safe_headers
from app.ingest.service import record_event
from app.secrets import redact, secret_values
from app.sources.errors import MalformedError, ShapeError
from app.sources.onec.decode import decode_1c_json
from app.sources.onec.parse import OneCEvent, parse_1c, parse_odata
from app.sources.onec.verify import authenticate

router = APIRouter(tags=["ingest"])

# 1C's HTTPЗапрос often sends no Content-Type, or text/plain, for a JSON body.
_JSON_TYPES = {"", "application/json", "text/json", "text/plain"}


@router.post("/webhooks/1c", response_model=Accepted, responses=REPLIES)
async def onec_webhook(request: Request, body: bytes = Depends(read_body)) -> Response:
    """Accept the hub's envelope or 1C's XDTO JSON."""
    authenticate(request.app.state.settings.hub.sources.onec, request.headers.get("authorization"))
    obj = _decode(request, body)
    return await _accept(request, body, obj, lambda: parse_1c(obj))


@router.post("/webhooks/1c/{object_type}", response_model=Accepted, responses=REPLIES)
async def onec_odata_webhook(
    object_type: str, request: Request, body: bytes = Depends(read_body)
) -> Response:
    """Accept an OData-style object (`Ref_Key`, `DataVersion`) whose type is in the path."""
    authenticate(request.app.state.settings.hub.sources.onec, request.headers.get("authorization"))
    obj = _decode(request, body)
    return await _accept(request, body, obj, lambda: parse_odata(object_type, obj))


def _decode(request: Request, body: bytes) -> Any:
    kind, charset = media_type(request)
    if kind not in _JSON_TYPES:
        raise UnsupportedMediaType(f"expected application/json, got {kind}")
    try:
        return decode_1c_json(body, charset)
    except MalformedError as exc:
        raise BadRequest(f"the body cannot be parsed: {exc}") from None


async def _accept(request: Request, body: bytes, obj: Any, parse: Any) -> Response:
    try:
        parsed: OneCEvent = parse()
    except ShapeError as exc:
        raise Unprocessable(str(exc)) from None
    event = NewEvent(
        source="onec",
        type=f"{parsed.type}.{parsed.event}",
        subject=f"{parsed.type}/{parsed.ref}",
        dedup_key=_dedup_key(request, parsed, body),
        # Every 1C shape (envelope, XDTO, OData) is stored as the hub's envelope.
        payload=redact(
            {
                "type": parsed.type,
                "event": parsed.event,
                "ref": parsed.ref,
                "data_version": parsed.data_version,
                "data": parsed.data,
            }
        ),
        raw_body=mask_secrets(body, secret_values(obj)),
        headers=safe_headers(request.headers),
        request_id=correlation_id.get(),
    )
    outcome = await record_event(request, event)
    return JSONResponse(outcome.reply(), outcome.status_code)


def _dedup_key(request: Request, event: OneCEvent, body: bytes) -> str:
    """DataVersion changes on every write in 1C, so (type, ref, version) names one change."""
    if key := request.headers.get("idempotency-key"):
        return f"key:{key}"
    if event.data_version:
        return f"{event.type}:{event.ref}:{event.data_version}"
    return "sha256:" + hashlib.sha256(body).hexdigest()
