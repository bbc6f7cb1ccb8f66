"""Bitrix24's authorization server (oauth.bitrix.info) on 127.0.0.1, as settings/oauth/auto-renewal.md describes it.

`GET /oauth/token/?grant_type=refresh_token&client_id&client_secret&refresh_token` renews a pair: the old refresh
token stops working, errors come as `{"error", "error_description"}`. A test issues the first pair with `issue()`
(what an ONAPPINSTALL would carry) and reads `renewals`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

CLIENT_ID, CLIENT_SECRET = "local.6750a3c1d2e4f5.12345678", "s3cr3t-of-the-local-app-0123456789"


@dataclass
class Grant:
    member_id: str
    domain: str
    access_token: str = field(default_factory=lambda: secrets.token_hex(16))
    refresh_token: str = field(default_factory=lambda: secrets.token_hex(16))


class FakeOAuth:
    """The server: `url` for `app.oauth_url`, `issue()` a grant, `renewals` counted, `down` to fail with 503."""

    def __init__(self, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        self.grants: dict[str, Grant] = {}  # by refresh token
        self.renewals = 0
        self.down = False
        self._runner: web.AppRunner | None = None
        self.url = ""

    def issue(self, member_id: str, domain: str = "some-domain.bitrix24.com") -> Grant:
        grant = Grant(member_id, domain)
        self.grants[grant.refresh_token] = grant
        return grant

    async def _token(self, request: web.Request) -> web.Response:
        if self.down:
            return web.json_response({"error": "SERVICE_UNAVAILABLE"}, status=503)
        query = request.query
        if (query.get("client_id"), query.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return web.json_response(
                {"error": "invalid_client", "error_description": "Invalid client"}, status=401
            )
        grant = self.grants.pop(query.get("refresh_token", ""), None)
        if query.get("grant_type") != "refresh_token" or grant is None:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "Invalid grant"}, status=400
            )
        renewed = Grant(grant.member_id, grant.domain)
        self.grants[renewed.refresh_token] = renewed
        self.renewals += 1
        return web.json_response(
            {
                "access_token": renewed.access_token,
                "client_endpoint": f"https://{grant.domain}/rest/",
                "domain": "oauth.bitrix.info",
                "expires": int(time.time()) + self.expires_in,
                "expires_in": self.expires_in,
                "member_id": grant.member_id,
                "refresh_token": renewed.refresh_token,
                "scope": "crm,task",
                "server_endpoint": "https://oauth.bitrix.info/rest/",
                "status": "L",
                "user_id": 1,
            }
        )

    def current(self, member_id: str) -> Grant:
        """The portal's live grant (the last one issued)."""
        return [g for g in self.grants.values() if g.member_id == member_id][-1]

    async def __aenter__(self) -> FakeOAuth:
        app = web.Application()
        app.router.add_get("/oauth/token/", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/oauth/token/"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
