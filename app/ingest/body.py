"""Reading request bodies within the size limit, and their media types."""

from __future__ import annotations

import asyncio

from fastapi import Request
from starlette.requests import ClientDisconnect

from app.errors import ClientClosedRequest, PayloadTooLarge, RequestTimeout
from app.settings import Settings


async def read_body(request: Request) -> bytes:
    """The whole body, refusing one over `MMHUB_MAX_BODY_BYTES` without reading it all, and one
    that has not fully arrived after `MMHUB_BODY_TIMEOUT` (408: a trickle would hold us forever)."""
    settings: Settings = request.app.state.settings
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    seconds = settings.body_timeout.total_seconds()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {seconds:g} s") from None
    except ClientDisconnect:
        raise ClientClosedRequest(
            f"the client closed the connection after {size} bytes of the body"
        ) from None
    return b"".join(chunks)


def media_type(request: Request) -> tuple[str, str | None]:
    """The media type (lower case, no parameters) and the charset parameter, if any."""
    raw = request.headers.get("content-type", "")
    kind, _, params = raw.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "charset" and value:
            charset = value.strip('"').lower()
    return kind.strip().lower(), charset
