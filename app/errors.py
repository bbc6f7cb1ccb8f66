"""One error hierarchy for the API, rendered as RFC 9457 problem+json with the request id.

The web framework is imported only where a reply is built: the services (and so the CLI) raise
these errors without loading FastAPI.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.responses import Response

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class HubError(Exception):
    """An error with an HTTP status; the message is safe to show to the client."""

    status = 500
    title = "Internal Server Error"
    default_headers: ClassVar[Mapping[str, str]] = {}

    def __init__(self, detail: str, headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = {**self.default_headers, **(headers or {})}
        self.extra = extra


class BadRequest(HubError):
    status, title = 400, "Malformed request"


class Unauthorized(HubError):
    status, title = 401, "Not authenticated"


class Forbidden(HubError):
    status, title = 403, "Forbidden"


class NotFound(HubError):
    status, title = 404, "Not found"


class RequestTimeout(HubError):
    status, title = 408, "Request timeout"
    default_headers: ClassVar[Mapping[str, str]] = {"Connection": "close"}


class ClientClosedRequest(HubError):
    """The client went away before its request was read whole: nothing was stored. nginx's 499, so
    that a sender's disconnect is counted apart from the hub's own failures (it is no 500)."""

    status, title = 499, "Client closed request"


class Conflict(HubError):
    status, title = 409, "Conflict"


class PayloadTooLarge(HubError):
    status, title = 413, "Payload too large"


class UnsupportedMediaType(HubError):
    status, title = 415, "Unsupported media type"


class Unprocessable(HubError):
    status, title = 422, "Unprocessable content"


class ServiceUnavailable(HubError):
    status, title = 503, "Service unavailable"
    default_headers: ClassVar[Mapping[str, str]] = {"Retry-After": "5"}


def problem(
    status: int, title: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> Response:
    """A problem+json response carrying the request id, as every error reply does."""
    from asgi_correlation_id import correlation_id
    from fastapi.responses import Response

    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": correlation_id.get(),
        **extra,
    }
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


_SOURCES = {"1c": "onec"}  # /webhooks/1c -> the source name stored with the events


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, leaves as problem+json; never a stack trace."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from app.telemetry import INGEST_REJECTED

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> Response:
        if request.url.path.startswith("/webhooks/"):
            # The source, not the path: /webhooks/1c/{type} would make a label per object type.
            source = request.url.path.split("/")[2][:16]
            # The events' own source names, as in mmhub_ingested_events_total.
            INGEST_REJECTED.labels(_SOURCES.get(source, source), str(exc.status)).inc()
            # Bitrix24 never redelivers: a refused webhook must be findable in the log.
            log.info(
                "webhook refused with %d: %s", exc.status, exc.detail, extra={"source": source}
            )
        if exc.status >= 500:
            log.warning("%s: %s", exc.title, exc.detail)
        return problem(exc.status, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return problem(422, Unprocessable.title, "the request does not validate", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return problem(exc.status_code, str(exc.detail), str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return problem(500, "Internal Server Error", "an unexpected error; see the hub's log")
