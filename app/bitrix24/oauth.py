"""Bitrix24's authorization server: renew a token pair with the application's client id and secret.

`GET {oauth_url}?grant_type=refresh_token&client_id=…&client_secret=…&refresh_token=…` answers the new pair, the
portal's `member_id` and its REST `client_endpoint` (settings/oauth/auto-renewal.md in Bitrix24's REST docs).
The reply is authoritative: the hub takes the portal's identity and REST address from it, never from an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from app.hubconfig import PortalApp

# An install waits for this renewal before it is answered: keep it well inside Bitrix24's handler timeout.
TIMEOUT_SECONDS = 10.0


class OAuthRefused(Exception):
    """The authorization server refused the refresh token (expired, revoked, another application's)."""


class OAuthUnavailable(Exception):
    """The authorization server could not be reached or answered garbage: try again later."""


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_at: datetime
    member_id: str
    client_endpoint: str
    scope: str | None


async def refresh(app: PortalApp, refresh_token: str) -> TokenPair:
    """Exchange ``refresh_token`` for a new pair. Error messages never carry a token or the secret."""
    params = {
        "grant_type": "refresh_token",
        "client_id": app.client_id,
        "client_secret": app.client_secret.get_secret_value(),
        "refresh_token": refresh_token,
    }
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)) as http,
            http.get(app.oauth_url, params=params, allow_redirects=False) as reply,
        ):
            status = reply.status
            body: Any = await reply.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise OAuthUnavailable(f"authorization server unreachable: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise OAuthUnavailable(f"authorization server answered HTTP {status} without a JSON object")
    if "error" in body or status >= 400:
        code = str(body.get("error", f"HTTP {status}"))[:64]
        if status >= 500:
            raise OAuthUnavailable(f"authorization server error {code}")
        raise OAuthRefused(f"authorization server refused the token: {code}")
    return _pair(body)


def _pair(body: dict[str, Any]) -> TokenPair:
    try:
        expires_in = int(body.get("expires_in") or 3600)
        return TokenPair(
            access_token=str(body["access_token"]),
            refresh_token=str(body["refresh_token"]),
            expires_at=datetime.now(UTC) + timedelta(seconds=max(60, min(expires_in, 86400))),
            member_id=str(body["member_id"]),
            client_endpoint=str(body["client_endpoint"]),
            scope=str(body["scope"]) if body.get("scope") else None,
        )
    except (KeyError, TypeError, ValueError):
        raise OAuthUnavailable(
            "authorization server reply lacks access_token, member_id or client_endpoint"
        ) from None
