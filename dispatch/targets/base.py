"""The one interface every target kind implements, and what an attempt goes in and comes out with.

A target turns an `Outbound` into exactly one HTTP request and an `AttemptResult`; it never raises for
anything the network or the remote system does. Deciding what happens next is `dispatch.retry`'s job.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from dispatch.retry import Outcome  # `suppressed`: not sent, the hub's own write came back

# (outcome, error class, human reason) as a target judges a reply.
Verdict = tuple[Outcome, str | None, str | None]

EXCERPT_CHARS = 2048  # attempt rows keep at most this much of a response (CONTRACT: <= 2 KiB)
MAX_READ = 64 * 1024  # enough for any error page we want to quote; the rest is not read


@dataclass(frozen=True, slots=True)
class Outbound:
    """One delivery attempt's input."""

    delivery_id: uuid.UUID  # -> Idempotency-Key, the same on every attempt
    event: dict[str, Any]  # the CloudEvent (see cloudevent.py)
    request_id: str | None
    traceparent: str  # W3C traceparent for this attempt
    method: str | None = None  # bitrix24 route: REST method
    params: dict[str, Any] | None = None  # bitrix24 route: params template (Jinja2 strings inside)


def trace_headers(out: Outbound) -> dict[str, str]:
    """The headers that tie a request to its webhook: the attempt span's `traceparent`, and the
    webhook's request id as `X-Request-Id` and (CONTRACT v2) `X-Correlation-Id`."""
    headers = {"traceparent": out.traceparent}
    if out.request_id:
        headers["X-Request-Id"] = headers["X-Correlation-Id"] = out.request_id
    return headers


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt did: the row written to `delivery_attempts`, minus bookkeeping."""

    outcome: Outcome
    http_status: int | None
    error_class: str | None  # None on success; "timeout", "connect", "http_503", "b24:<CODE>", ...
    error: str | None  # human reason, never a secret
    response_excerpt: str | None  # decoded body, at most EXCERPT_CHARS
    retry_after: float | None  # seconds, from Retry-After, unclamped
    duration_ms: int


class Target(Protocol):
    """A configured destination: one `send` per attempt."""

    name: str

    async def send(
        self,
        session: aiohttp.ClientSession,
        out: Outbound,
        timeout: float,  # noqa: ASYNC109 - goes to aiohttp.ClientTimeout(total=...)
    ) -> AttemptResult:
        """Make one attempt; report every network or remote failure in the result."""
        ...


@dataclass(frozen=True, slots=True)
class Reply:
    """A response as the judges see it: status, headers and the first MAX_READ bytes."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    text: str  # `body` decoded with the response charset (utf-8 when none), errors replaced


class DeliveryError(Exception):
    """A failure decided before or instead of a reply; carries its error class."""

    outcome: Outcome = "dead"

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class
        self.reason = reason

    def result(self, duration_ms: int = 0, http_status: int | None = None) -> AttemptResult:
        """The attempt row for this failure."""
        return AttemptResult(
            outcome=self.outcome,
            http_status=http_status,
            error_class=self.error_class,
            error=self.reason,
            response_excerpt=None,
            retry_after=None,
            duration_ms=duration_ms,
        )


class RetryableError(DeliveryError):
    """Worth trying again later (network trouble, a busy target)."""

    outcome: Outcome = "retry"


class PermanentError(DeliveryError):
    """Trying again cannot help (bad template, bad configuration, refused request)."""

    outcome: Outcome = "dead"


@dataclass(frozen=True, slots=True)
class Secrets:
    """Values that must never reach an attempt row, each masked wherever it appears."""

    values: tuple[str, ...] = field(default_factory=tuple)

    def scrub(self, text: str) -> str:
        """Replace every secret value in `text` with `***`."""
        # Longest first, so a secret that contains another one is masked whole.
        for value in sorted(self.values, key=len, reverse=True):
            # Very short values would mask ordinary text everywhere and protect nothing.
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text
