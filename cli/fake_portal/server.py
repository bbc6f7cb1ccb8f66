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

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from app.sources.bitrix24.phpform import parse_php_form
from app.sources.errors import MalformedError
from cli.fake_portal.batch import method_name, run_batch, time_object
from cli.fake_portal.events import Application, EventBus
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
        app: Application | None = None,
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
        self.app_info = app  # the local application, when the hub runs as one
        self.bus = EventBus()
        self._posting: set[asyncio.Task[None]] = set()
        self.posted: list[tuple[str, int]] = []  # (event, HTTP status) of every handler call

    # ---- for tests ----

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def webhook_url(self, user: int = 1) -> str:
        """The inbound webhook URL of `user` (ends with a slash)."""
        return f"{self.url}/rest/{user}/{self.webhooks[user]}/"

    def put(self, entity: str, fields: Mapping[str, Any], *, by: int = 1) -> dict[str, Any]:
        """Create a record (`deal`, `task`, `dynamic-1032`, ...); see `Records.put`."""
        record = self.records.put(entity, fields, by=by)
        self._publish(None)
        return record

    def update(self, entity: str, number: int, fields: Mapping[str, Any], *, by: int = 1) -> Any:
        """Save a record as a user would (new modification time and user), raising its events."""
        record = self.records.update(entity, number, fields, by=by)
        self._publish(None)
        return record

    def delete(self, entity: str, number: int) -> bool:
        gone = self.records.delete(entity, number)
        self._publish(None)
        return gone

    # ---- the application and its events ----

    def app_auth(self, **extra: str) -> dict[str, str]:
        """The `auth` block of an event sent to the application."""
        assert self.app_info is not None, "the portal has no application"
        return {
            "domain": self.domain,
            "client_endpoint": f"{self.url}/rest/",
            "server_endpoint": f"{self.url}/oauth/",
            "member_id": self.app_info.member_id,
            "application_token": self.app_info.application_token,
            "status": "L",
            **extra,
        }

    def install_form(self, *, user: int = 1) -> dict[str, str]:
        """ONAPPINSTALL as the portal sends it on installing the application, with a fresh token pair."""
        assert self.app_info is not None, "the portal has no application"
        refresh = secrets.token_hex(16)
        self.app_info.refresh_tokens[refresh] = user
        access = secrets.token_hex(16)
        self.issue_token(access, user=user)
        auth = self.app_auth(
            access_token=access, refresh_token=refresh, expires_in="3600", scope="crm,task"
        )
        data = {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "ru"}
        return _install_form(data, auth)

    async def install(self, handler: str, *, user: int = 1) -> int:
        """Install the application: POST ONAPPINSTALL to `handler`; the handler's HTTP status."""
        return await self._post(handler, self.install_form(user=user))

    async def flush(self) -> None:
        """Wait until every handler call made so far has been answered."""
        while self._posting:
            await asyncio.gather(*list(self._posting), return_exceptions=True)

    def _publish(self, connector: str | None) -> None:
        """Turn the records' changes into queue entries and handler calls."""
        changes, self.records.changes = self.records.changes, []
        if self.app_info is None:
            return
        for change in changes:
            self.bus.changed(change, connector, self.app_auth())
        posts, self.bus.outbox = self.bus.outbox, []
        for post in posts:
            task = asyncio.get_running_loop().create_task(self._deliver(post.url, post.form))
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)

    async def _deliver(self, url: str, form: dict[str, str]) -> None:
        await self._post(url, form)

    async def _post(self, url: str, form: dict[str, str]) -> int:
        """POST a form to a handler; Bitrix24 does not resend, so a failure is only recorded."""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
                http.post(url, data=form) as reply,
            ):
                status = reply.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.posted.append((form.get("event", ""), status))
        return status

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
        app.router.add_get("/oauth/token/", self._token)
        app.router.add_get("/_fake/stats", self._stats)
        app.router.add_put("/_fake/records/{entity}/{number}", self._put_record)
        app.router.add_delete("/_fake/records/{entity}/{number}", self._delete_record)
        app.router.add_post("/_fake/install", self._install)
        app.router.add_get("/_fake/offline", self._offline)
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
        if method.startswith("event."):
            return self._event_method(method, params), {}
        try:
            return call(self.records, method, params, user)
        finally:
            connector = params.get("auth_connector")
            self._publish(str(connector) if connector else None)

    def _event_method(self, method: str, params: Mapping[str, Any]) -> Any:
        handlers = {
            "event.bind": self.bus.bind,
            "event.unbind": self.bus.unbind,
            "event.get": lambda _params: self.bus.get(),
            "event.offline.get": self.bus.offline_get,
            "event.offline.clear": self.bus.offline_clear,
            "event.offline.error": self.bus.offline_error,
            "event.offline.list": self.bus.offline_list,
        }
        handler = handlers.get(method)
        if handler is None:
            raise Fault(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        return handler(params)

    async def _token(self, request: web.Request) -> web.Response:
        """The authorization server: renew a pair (settings/oauth/auto-renewal.md)."""
        app, query = self.app_info, request.query
        if app is None or (query.get("client_id"), query.get("client_secret")) != (
            app.client_id,
            app.client_secret,
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        user = app.refresh_tokens.pop(query.get("refresh_token", ""), None)
        if query.get("grant_type") != "refresh_token" or user is None:
            return web.json_response({"error": "invalid_grant"}, status=400)
        refresh, access = secrets.token_hex(16), secrets.token_hex(16)
        app.refresh_tokens[refresh] = user
        app.renewals += 1
        self.issue_token(access, user=user)
        return web.json_response(
            {
                "access_token": access,
                "refresh_token": refresh,
                "expires_in": 3600,
                "expires": int(time.time()) + 3600,
                "member_id": app.member_id,
                "client_endpoint": f"{self.url}/rest/",
                "server_endpoint": f"{self.url}/oauth/",
                "domain": "oauth.bitrix.info",
                "scope": "crm,task",
                "status": "L",
                "user_id": user,
            }
        )

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
        record = self.update(entity, number, fields, by=by)
        if record is None:
            record = self.put(entity, {**fields, style_of(entity).id: number}, by=by)
        return web.json_response(record)

    async def _install(self, request: web.Request) -> web.Response:
        """Install the application on this portal: ONAPPINSTALL goes to `handler` (form field or query)."""
        handler = (await request.post()).get("handler") or request.query.get("handler")
        if not isinstance(handler, str) or not handler or self.app_info is None:
            return web.json_response({"error": "handler required (and an application)"}, status=400)
        status = await self.install(handler)
        return web.json_response({"handler": handler, "status": status})

    async def _offline(self, _request: web.Request) -> web.Response:
        """The offline queues as they stand (what event.offline.list shows), per source key."""
        queues = {str(key): [e.shown() for e in queue] for key, queue in self.bus.queues.items()}
        return web.json_response(queues)

    async def _delete_record(self, request: web.Request) -> web.Response:
        gone = self.delete(request.match_info["entity"], int(request.match_info["number"]))
        return web.json_response({"deleted": gone}, status=200 if gone else 404)


def _install_form(data: Mapping[str, str], auth: Mapping[str, str]) -> dict[str, str]:
    form = {"event": "ONAPPINSTALL", "ts": str(int(time.time()))}
    form.update({f"data[{key}]": value for key, value in data.items()})
    form.update({f"auth[{key}]": value for key, value in auth.items()})
    return form


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


# The local application `make run`'s configuration installs (config/dev.yaml names the same values).
DEV_APP = {"client_id": "local.mmhub.dev", "member_id": "devportal0000000000000000000000a1"}


def run_fake_portal(
    host: str, port: int, *, user: int, code: str, deals: int, client_secret: str
) -> None:
    """Serve a fake portal in the foreground (the `mmhub fake-portal` command), with `deals` deals."""
    app = Application(DEV_APP["client_id"], client_secret, member_id=DEV_APP["member_id"])
    portal = FakePortal(webhooks={user: code}, app=app)
    # Deal 7405 is the one tests/fixtures/bitrix24/webhook-deal-add.form is about (README's curl).
    for number in [*range(1, deals + 1), 7405]:
        portal.put("deal", {"ID": number, "TITLE": f"Deal {number}", "STAGE_ID": "NEW"})
    portal.port = port  # the address it gives as client_endpoint
    web.run_app(portal.app(), host=host, port=port, print=None, access_log=None)
