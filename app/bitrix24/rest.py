"""One portal's REST API: rate-limited calls, `batch` of up to 50 commands, `next` pagination.

Every process that talks to a portal (enrichment in the workers, reconciliation in the relay, the
`bitrix24` targets) takes its requests from the portal's one token bucket in Redis, so together
they stay under Bitrix24's leaky bucket (2 requests/s, burst 50) and never see
QUERY_LIMIT_EXCEEDED in the normal run; if one comes anyway, or the portal fails, the call backs
off (tenacity) and tries again. Errors are read from the body whatever the HTTP status.

Why not Bitrix24's official SDK (b24pysdk): it is built on `requests`, so every call would block
the worker's event loop (or need a thread each), and it paces and retries on its own, in one
process, where our limit must be shared by every process through Redis. What we need of it is
small: a POST, the error shape, the batch and list envelopes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
import orjson
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from app import jsonio
from app.bitrix24.errors import Kind, RestError

MAX_COMMANDS = 50  # batch.md: a batch holds at most 50 commands
Command = tuple[str, Mapping[str, Any]]  # (method, params)


class Bucket(Protocol):
    """A shared token bucket (app.ratelimit.TokenBucket)."""

    async def acquire(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Reply:
    """A method's `result`, and `total`/`next` for list methods."""

    result: Any
    total: int | None = None
    next: int | None = None


@dataclass(frozen=True, slots=True)
class BatchReply:
    """Per command key: its result, or its error; `total`/`next` for list commands."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, RestError] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    nexts: dict[str, int] = field(default_factory=dict)


def secret_parts(webhook_url: str) -> tuple[str, ...]:
    """`<user>/<code>` and `<code>` of an inbound webhook URL: never logged, never stored."""
    _, sep, path = webhook_url.partition("/rest/")
    if not sep:  # an unusual URL: treat its whole path as the secret
        path = webhook_url.split("://", 1)[-1].partition("/")[2]
    path = path.strip("/")
    return (path, path.rsplit("/", 1)[-1]) if path else ()


def build_query(params: Mapping[str, Any]) -> str:
    """PHP's http_build_query: `filter[>DATE_MODIFY]=...&select[0]=ID` (how batch commands go)."""
    pairs: list[tuple[str, str]] = []

    def walk(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{name}[{key}]", item)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(f"{name}[{index}]", item)
        elif value is not None:  # PHP leaves out nulls
            pairs.append((name, "1" if value is True else "0" if value is False else str(value)))

    for key, value in params.items():
        walk(str(key), value)
    return urlencode(pairs)


class Credentials(Protocol):
    """How calls reach a portal: an inbound webhook URL, or an application's OAuth tokens."""

    @property
    def base_url(self) -> str:
        """`https://portal/rest/1/<code>/` for a webhook, `https://portal/rest/` with OAuth."""
        ...

    async def token(self) -> str | None:
        """The access token sent as `auth`; None for a webhook."""
        ...

    async def refresh(self, expired: str | None) -> bool:
        """After `expired_token` for `expired`: True when a fresh token is there to retry with."""
        ...


@dataclass(frozen=True, slots=True)
class Webhook:
    """An inbound webhook URL (its code is the credential): nothing to send, nothing to refresh."""

    url: str

    @property
    def base_url(self) -> str:
        return self.url if self.url.endswith("/") else self.url + "/"

    async def token(self) -> str | None:
        return None

    async def refresh(self, expired: str | None) -> bool:
        return False


class PortalClient:
    """REST calls to one portal (webhook URL or OAuth credentials), within the shared rate limit."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        auth: str | Credentials,  # a webhook URL, or credentials
        bucket: Bucket | None,
        *,
        timeout: float = 30.0,
        attempts: int = 5,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self._http = http
        self._auth: Credentials = Webhook(auth) if isinstance(auth, str) else auth
        self._base = self._auth.base_url
        self._secrets = sorted(secret_parts(self._base), key=len, reverse=True)
        self.bucket = bucket  # the portal's, shared with every process
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=backoff, max=backoff_max),
            retry=retry_if_exception(_worth_retrying),
            reraise=True,
        )

    def __repr__(self) -> str:
        return f"PortalClient({self._scrub(self._base)!r})"

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Reply:
        """Call one method; raises RestError (after retries, for the retryable kinds)."""
        body = await self._post(method, dict(params or {}))
        return Reply(body["result"], _int(body.get("total")), _int(body.get("next")))

    async def batch(self, commands: Mapping[str, Command], *, halt: bool = False) -> BatchReply:
        """Run up to 50 commands in one request; each command's error lands in `errors`."""
        if len(commands) > MAX_COMMANDS:
            raise ValueError(f"a batch holds at most {MAX_COMMANDS} commands, not {len(commands)}")
        if not commands:
            return BatchReply()
        cmd = {key: f"{method}?{build_query(params)}" for key, (method, params) in commands.items()}
        body = await self._post("batch", {"halt": int(halt), "cmd": cmd})
        return _batch_reply(body["result"])

    async def list_all(
        self, method: str, params: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Any]:
        """Every row of a list method, page after page (`start` = the previous page's `next`)."""
        params = dict(params or {})
        while True:
            reply = await self.call(method, params)
            for row in _rows(reply.result):
                yield row
            if reply.next is None:
                return
            params["start"] = reply.next

    async def _post(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with backoff; after `expired_token`, once more with a refreshed token."""
        for last in (False, True):
            token = await self._auth.token()
            try:
                return await self._post_retrying(
                    method, {**payload, "auth": token} if token else payload
                )
            except RestError as error:
                if (
                    last
                    or error.kind is not Kind.AUTH_EXPIRED
                    or not await self._auth.refresh(token)
                ):
                    raise
        raise AssertionError("unreachable: the second round returns or raises")  # pragma: no cover

    async def _post_retrying(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        async for attempt in self._retrying.copy():
            with attempt:
                if self.bucket is not None:
                    await self.bucket.acquire()
                return await self._once(method, payload)
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    async def _once(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._http.post(
                f"{self._auth.base_url}{method}.json",
                data=jsonio.dumps(payload),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                timeout=self._timeout,
            ) as response:
                status, raw = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = self._scrub(f"{type(exc).__name__}: {exc}".rstrip(": "))
            raise RestError(Kind.TRANSPORT, "", reason) from None
        try:
            body = jsonio.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict) and ("error" in body or "error_description" in body):
            raise RestError.from_body(body, status)
        if not isinstance(body, dict) or "result" not in body or status >= 300:
            kind = Kind.SERVER if status >= 500 or status == 429 else Kind.REFUSED
            raise RestError(kind, "", f"unexpected reply: HTTP {status}", status)
        return body

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text


def _worth_retrying(exc: BaseException) -> bool:
    """Retry at once what passes in seconds; OPERATION_TIME_LIMIT lasts minutes, expiry needs a
    new token: those go back to the caller, who retries later."""
    return isinstance(exc, RestError) and exc.kind in (
        Kind.RATE_LIMITED,
        Kind.SERVER,
        Kind.TRANSPORT,
    )


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def _rows(result: Any) -> list[Any]:
    """A list method's rows: the result itself, or its one list (`items`, `tasks`)."""
    if isinstance(result, list):
        return result
    if isinstance(result, dict):
        lists = [value for value in result.values() if isinstance(value, list)]
        if len(lists) == 1:
            return lists[0]
    return []


def _keyed(value: Any) -> dict[str, Any]:
    """PHP arrays arrive as lists when keyed 0..n-1 and as [] when empty."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


def _batch_reply(result: Any) -> BatchReply:
    result = result if isinstance(result, dict) else {}
    errors = {
        key: RestError.from_body(value if isinstance(value, dict) else {}, None)
        for key, value in _keyed(result.get("result_error")).items()
    }
    return BatchReply(
        results=_keyed(result.get("result")),
        errors=errors,
        totals={
            k: n
            for k, v in _keyed(result.get("result_total")).items()
            if (n := _int(v)) is not None
        },
        nexts={
            k: n for k, v in _keyed(result.get("result_next")).items() if (n := _int(v)) is not None
        },
    )
