"""Console sessions: an admin token is exchanged once for a session cookie.

The session lives in Redis (so any API process knows it and logout really ends it) under the
SHA-256 of its id; the cookie holds only the random id. Each session has its own CSRF token,
which every state-changing request must send back. Failed logins are counted per client address
and slowed down, then refused for a while.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import Depends, Request
from redis.asyncio import Redis

from app.admin.auth import match_token
from app.hubconfig import AdminToken

COOKIE = "mmhub_console"
SESSION_TTL = 8 * 3600  # seconds; the cookie and the Redis key expire together
THROTTLE_WINDOW = 15 * 60
THROTTLE_FREE = 3  # failures before each further attempt waits
THROTTLE_MAX = 10  # failures after which logins from that address are refused for the window


class LoginRequired(Exception):
    """No valid session: the console answers with a redirect to the login page."""


class CsrfFailed(Exception):
    """A state-changing request without the session's CSRF token."""


@dataclass(frozen=True)
class ConsoleUser:
    """Who is signed in: the admin token's name and role, and the session's CSRF token."""

    name: str
    role: str
    csrf: str
    masked: bool

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def _key(session_id: str) -> str:
    return "mmhub:console:session:" + hashlib.sha256(session_id.encode()).hexdigest()


def _redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis


async def open_session(request: Request, token: AdminToken) -> str:
    """A new session for this token; returns the id to set as the cookie."""
    session_id = secrets.token_urlsafe(32)
    record = {"name": token.name, "role": token.role, "csrf": secrets.token_urlsafe(32)}
    await _redis(request).set(_key(session_id), orjson.dumps(record), ex=SESSION_TTL)
    return session_id


async def close_session(request: Request) -> None:
    """Forget the request's session (logout)."""
    session_id = request.cookies.get(COOKIE)
    if session_id:
        await _redis(request).delete(_key(session_id))


async def current_user(request: Request) -> ConsoleUser:
    """The signed-in user, or LoginRequired; the token must still be configured with that role."""
    session_id = request.cookies.get(COOKIE)
    raw = await _redis(request).get(_key(session_id)) if session_id else None
    if raw is None:
        raise LoginRequired
    record = orjson.loads(raw)
    hub = request.app.state.settings.hub
    configured = {token.name: token.role for token in hub.admin.tokens}
    if configured.get(record["name"]) != record["role"]:
        raise LoginRequired  # the token was removed or its role changed since the login
    masked = hub.pii.mask_for_viewers and record["role"] != "operator"
    return ConsoleUser(record["name"], record["role"], record["csrf"], masked)


async def csrf_checked(request: Request) -> ConsoleUser:
    """The signed-in user of a state-changing request that carries the session's CSRF token."""
    user = await current_user(request)
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        form = await request.form()
        value = form.get("csrf")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), user.csrf.encode()):
        raise CsrfFailed
    return user


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def throttle(request: Request) -> bool:
    """Wait according to this address's recent failed logins; False when it must be refused."""
    key = "mmhub:console:failed:" + _client(request)
    failures = int(await _redis(request).get(key) or 0)
    if failures >= THROTTLE_MAX:
        return False
    if failures >= THROTTLE_FREE:
        await asyncio.sleep(min(0.25 * 2 ** (failures - THROTTLE_FREE), 8.0))
    return True


async def login_failed(request: Request) -> None:
    """Count a failed login for this address (the count expires after the window)."""
    key = "mmhub:console:failed:" + _client(request)
    async with _redis(request).pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, THROTTLE_WINDOW)
        await pipe.execute()


async def log_in(request: Request, token: str) -> AdminToken | None:
    """The admin token this string is, if any (a failure is counted)."""
    entry = match_token(token, request.app.state.settings.hub.admin.tokens) if token else None
    if entry is None:
        await login_failed(request)
    return entry


User = Annotated[ConsoleUser, Depends(current_user)]
Acting = Annotated[ConsoleUser, Depends(csrf_checked)]
