"""The one HTTP POST every target makes: timeout, duration, body excerpt, and exceptions as results."""

from __future__ import annotations

import base64
import codecs
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from app.hubconfig import BasicAuth, BearerAuth
from dispatch.retry import classify_status
from dispatch.ssrf import RefusedAddress
from dispatch.targets.base import (
    EXCERPT_CHARS,
    MAX_READ,
    AttemptResult,
    DeliveryError,
    PermanentError,
    Reply,
    RetryableError,
    Secrets,
    Verdict,
)

Judge = Callable[[Reply], Verdict]


def judge_status(reply: Reply) -> Verdict:
    """Judge a reply by its HTTP status alone (see `dispatch.retry.classify_status`)."""
    outcome = classify_status(reply.status)
    if outcome == "delivered":
        return outcome, None, None
    return outcome, f"http_{reply.status}", f"HTTP {reply.status} {reply.reason}".rstrip()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None if unusable.

    A date in the past means "now" (0 s). The value is not clamped here: that is policy.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read the same way
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def auth_headers(auth: BasicAuth | BearerAuth | None) -> tuple[dict[str, str], Secrets]:
    """The Authorization header for a target's `auth`, and the values to keep out of attempt rows."""
    if auth is None:
        return {}, Secrets()
    if isinstance(auth, BearerAuth):
        token = auth.token.get_secret_value()
        return {"Authorization": f"Bearer {token}"}, Secrets((token,))
    password = auth.password.get_secret_value()
    # UTF-8, not aiohttp's latin-1 default: 1C user names are often Cyrillic, and 1C decodes UTF-8.
    credentials = base64.b64encode(f"{auth.username}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {credentials}"}, Secrets((password, credentials))


def encode_json(value: Any) -> bytes:
    """Compact JSON; falls back to the stdlib for what orjson refuses (integers over 64 bits)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


async def post(
    session: aiohttp.ClientSession,
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - aiohttp.ClientTimeout(total=...), not asyncio's
    judge: Judge = judge_status,
    secrets: Secrets = Secrets(),  # frozen and empty: safe to share
    max_read: int = MAX_READ,
) -> AttemptResult:
    """POST `body` once and turn whatever happens into an AttemptResult.

        Redirects are not followed: a webhook that moved is a configuration error, and following one
        could lead a request (and its credentials) somewhere the SSRF check never saw. A name resolving
    to a non-public address is refused by the session's resolver (dispatch.ssrf.GuardedResolver).
    """
    started = time.perf_counter()
    status: int | None = None

    def failed(error: DeliveryError) -> AttemptResult:
        return error.result(_elapsed_ms(started), status)

    try:
        async with session.post(
            url,
            data=body,
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            status = response.status
            raw = await _read_at_most(response.content, max_read)
            reply = Reply(
                status=response.status,
                reason=response.reason or "",
                headers=response.headers,
                body=raw,
                text=_decode(raw, response.charset),
            )
    except TimeoutError:  # aiohttp's timeouts are TimeoutError subclasses
        return failed(RetryableError("timeout", f"no complete response within {timeout:g}s"))
    except aiohttp.InvalidURL as exc:
        return failed(PermanentError("invalid_url", f"invalid URL: {secrets.scrub(str(exc))}"))
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, RefusedAddress):
            return failed(RetryableError("refused_address", str(exc.os_error)))
        return failed(RetryableError("connect", _describe(exc, secrets)))
    except (
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientOSError,
    ) as exc:
        return failed(RetryableError("connect", _describe(exc, secrets)))
    except aiohttp.ClientError as exc:
        return failed(RetryableError("network", _describe(exc, secrets)))
    outcome, error_class, error = judge(reply)
    return AttemptResult(
        outcome=outcome,
        http_status=reply.status,
        error_class=error_class,
        error=secrets.scrub(error) if error else None,
        # Scrub before cutting, so a secret straddling the cut is not half kept.
        response_excerpt=secrets.scrub(reply.text)[:EXCERPT_CHARS],
        retry_after=parse_retry_after(reply.headers.get("Retry-After")),
        duration_ms=_elapsed_ms(started),
    )


async def _read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Read up to `limit` bytes; a huge body must not hold memory or the attempt."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        codecs.lookup(charset or "utf-8")
    except LookupError:  # a charset Python does not know: utf-8 is the best guess
        charset = None
    return raw.decode(charset or "utf-8", errors="replace")


def _describe(exc: BaseException, secrets: Secrets) -> str:
    text = str(exc) or type(exc).__name__
    return secrets.scrub(f"{type(exc).__name__}: {text}")


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
