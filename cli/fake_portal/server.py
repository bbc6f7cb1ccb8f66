"""A fake Bitrix24 portal: a real HTTP server on 127.0.0.1, written from the public REST docs.

- Inbound webhooks `/rest/{user}/{code}/{method}.json` (`.json` optional) and OAuth calls
  `/rest/{method}.json?auth=TOKEN`; a wrong code or token is 401 `NO_AUTH_FOUND`, an expired
  token 401 `expired_token`.
- Params from the query string and the body (JSON, or a PHP-style form), as Bitrix24 reads them.
- `batch`: `cmd` (named or a list) of `method?query` strings, `halt`, `$result[cmd][field]`
  references, at most 50 commands (`ERROR_BATCH_LENGTH_EXCEEDED` beyond), no nested batch.
- Limits (limits.md): a leaky bucket per portal, the counter drains `per_second` a second and a
  request that would take it over `burst` gets 503 `QUERY_LIMIT_EXCEEDED`. Tests inject
  `OPERATION_TIME_LIMIT` (429) or any other error on a method with `fail()`.
- Every reply carries the `time` object; `stats` counts HTTP requests, commands and limit errors.

Tests change records with `put`/`update`/`delete` (or `PUT`/`DELETE /_fake/records/{entity}/{id}`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from app.sources.bitrix24.phpform import parse_php_form
from app.sources.errors import MalformedError
from cli.fake_portal.batch import method_name, run_batch, time_object
from cli.fake_portal.methods import Fault, Result, call
from cli.fake_portal.records import Records, style_of

LIMIT = Fault(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
EXPIRED = Fault(401, "expired_token", "The access token provided has expired.")
NO_AUTH = Fault(401, "NO_AUTH_FOUND", "Wrong authorization data")


class LeakyBucket:
    """Bitrix24's request counter: +1 per request, -`per_second` each second, refuse above `burst`."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._level = 0.0
        self._at = time.monotonic()

    def admit(self) -> bool:
        now = time.monotonic()
        self._level = max(0.0, self._level - (now - self._at) * self.per_second)
        self._at = now
        if self._level + 1 > self.burst:
            return False
        self._level += 1
        return True


@dataclass
class Stats:
    """What benchmarks print: HTTP requests, REST commands run (batch members included), refusals."""

    requests: int = 0
    commands: int = 0
    limit_errors: int = 0
    by_method: Counter[str] = field(default_factory=Counter)


@dataclass
class _Injected:
    method: str
    fault: Fault
    times: int


class FakePortal:
    """The server. `webhook_url()` to call it, `records`/`put`/`update`/`delete` for its data."""

    def __init__(
        self,
        *,
        webhooks: Mapping[int, str] | None = None,
        per_second: float = 2.0,
        burst: int = 50,
        domain: str = "fake.bitrix24.test",
    ) -> None:
        self.webhooks = dict(webhooks or {1: "fakewebhookcode"})  # user id -> webhook code
        self.tokens: dict[str, tuple[int, float]] = {}  # OAuth access token -> (user, expiry)
        self.domain = domain
        self.records = Records()
        self.stats = Stats()
        self.bucket = LeakyBucket(per_second, burst)
        self._injected: list[_Injected] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- for tests ----

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def webhook_url(self, user: int = 1) -> str:
        """The inbound webhook URL of `user` (ends with a slash)."""
        return f"{self.url}/rest/{user}/{self.webhooks[user]}/"

    def put(self, entity: str, fields: Mapping[str, Any], *, by: int = 1) -> dict[str, Any]:
        """Create a record (`deal`, `task`, `dynamic-1032`, ...); see `Records.put`."""
        return self.records.put(entity, fields, by=by)

    def update(self, entity: str, number: int, fields: Mapping[str, Any], *, by: int = 1) -> Any:
        """Save a record as a user would (new modification time and user)."""
        return self.records.update(entity, number, fields, by=by)

    def delete(self, entity: str, number: int) -> bool:
        return self.records.delete(entity, number)

    def fail(
        self, method: str, code: str, description: str = "", *, status: int = 400, times: int = 1
    ) -> None:
        """Answer the next `times` calls of `method` (direct or inside a batch) with this error."""
        self._injected.append(_Injected(method.lower(), Fault(status, code, description), times))

    def issue_token(self, token: str, *, user: int = 1, lifetime: float = 3600.0) -> None:
        """Accept `auth=token` on `/rest/{method}` for `lifetime` seconds."""
        self.tokens[token] = (user, time.monotonic() + lifetime)

    # ---- server life ----

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/rest/{user}/{code}/{method}", self._webhook)
        app.router.add_route("*", "/rest/{method}", self._oauth)
        app.router.add_get("/_fake/stats", self._stats)
        app.router.add_put("/_fake/records/{entity}/{number}", self._put_record)
        app.router.add_delete("/_fake/records/{entity}/{number}", self._delete_record)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakePortal:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- requests ----

    async def _webhook(self, request: web.Request) -> web.Response:
        self._count(request)
        user = request.match_info["user"]
        known = self.webhooks.get(int(user)) if user.isdigit() else None
        if known is None or known != request.match_info["code"]:
            return self._fault(NO_AUTH)
        return await self._serve(request, int(user))

    async def _oauth(self, request: web.Request) -> web.Response:
        self._count(request)
        try:
            params = await _params(request)
        except Fault as fault:
            return self._fault(fault)
        grant = self.tokens.get(str(params.get("auth") or ""))
        if grant is None:
            return self._fault(NO_AUTH)
        if grant[1] <= time.monotonic():
            return self._fault(EXPIRED)
        return await self._serve(request, grant[0], params)

    async def _serve(
        self, request: web.Request, user: int, params: dict[str, Any] | None = None
    ) -> web.Response:
        started = time.time()
        method = method_name(request.match_info["method"])
        if not self.bucket.admit():
            self.stats.limit_errors += 1
            return self._fault(LIMIT)
        try:
            params = params if params is not None else await _params(request)
            params.pop("auth", None)
            if method == "batch":
                result, extra = run_batch(params, lambda m, p: self._call(m, p, user))
            else:
                result, extra = self._call(method, params, user)
        except Fault as fault:
            return self._fault(fault)
        body = {"result": result, **extra, "time": time_object(started)}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def _count(self, request: web.Request) -> None:
        """Every HTTP request to /rest counts, refused ones included (what a client spent)."""
        self.stats.requests += 1
        self.stats.by_method[method_name(request.match_info["method"])] += 1

    def _call(self, method: str, params: Mapping[str, Any], user: int) -> Result:
        for injected in self._injected:
            if injected.method == method and injected.times > 0:
                injected.times -= 1
                raise injected.fault
        self.stats.commands += 1
        return call(self.records, method, params, user)

    def _fault(self, fault: Fault) -> web.Response:
        return web.Response(
            status=fault.status, body=orjson.dumps(fault.body()), content_type="application/json"
        )

    # ---- the control API for `make run` ----

    async def _stats(self, _request: web.Request) -> web.Response:
        stats = self.stats
        return web.json_response(
            {
                "requests": stats.requests,
                "commands": stats.commands,
                "limit_errors": stats.limit_errors,
                "by_method": dict(stats.by_method),
            }
        )

    async def _put_record(self, request: web.Request) -> web.Response:
        entity, number = request.match_info["entity"], int(request.match_info["number"])
        fields = await request.json()
        by = int(request.query.get("by", "1"))
        record = self.records.update(entity, number, fields, by=by)
        if record is None:
            record = self.records.put(entity, {**fields, style_of(entity).id: number}, by=by)
        return web.json_response(record)

    async def _delete_record(self, request: web.Request) -> web.Response:
        gone = self.records.delete(request.match_info["entity"], int(request.match_info["number"]))
        return web.json_response({"deleted": gone}, status=200 if gone else 404)


async def _params(request: web.Request) -> dict[str, Any]:
    """Query string and body merged (the body wins), JSON or a PHP-style form."""
    params: dict[str, Any] = {}
    try:
        if request.query_string:
            params.update(parse_php_form(request.query_string.encode()))
        raw = await request.read()
        if raw.strip():
            if request.content_type == "application/json":
                body = orjson.loads(raw)
                if not isinstance(body, dict):
                    raise Fault(400, "INVALID_REQUEST", "the JSON body must be an object")
                params.update(body)
            else:
                params.update(parse_php_form(raw))
    except (orjson.JSONDecodeError, MalformedError) as exc:
        raise Fault(400, "INVALID_REQUEST", f"unreadable parameters: {exc}") from None
    return params


def run_fake_portal(host: str, port: int, *, user: int, code: str, deals: int) -> None:
    """Serve a fake portal in the foreground (the `mmhub fake-portal` command), with `deals` deals."""
    portal = FakePortal(webhooks={user: code})
    # Deal 7405 is the one tests/fixtures/bitrix24/webhook-deal-add.form is about (README's curl).
    for number in [*range(1, deals + 1), 7405]:
        portal.put("deal", {"ID": number, "TITLE": f"Deal {number}", "STAGE_ID": "NEW"})
    web.run_app(portal.app(), host=host, port=port, print=None, access_log=None)
