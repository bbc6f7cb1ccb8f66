"""Bearer tokens for /admin/v1: roles `viewer` (read) and `operator` (replay, cancel, pause).

The configuration keeps only each token's SHA-256; a presented token is hashed and compared with
every configured hash in constant time, so neither the comparison nor the loop reveals which
token, or how much of one, matched.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Forbidden, Unauthorized
from app.hubconfig import AdminToken

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
# auto_error=False: a missing header is our 401 problem+json, not the framework's 403.
_bearer = HTTPBearer(auto_error=False, description="An admin token from `admin.tokens`")


def match_token(token: str, tokens: list[AdminToken]) -> AdminToken | None:
    """The configured token whose hash matches, checking every one of them (no early exit)."""
    digest = hashlib.sha256(token.encode()).hexdigest().encode()
    found: AdminToken | None = None
    for entry in tokens:
        if hmac.compare_digest(digest, entry.token_sha256.encode()):
            found = entry
    return found


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AdminToken:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("send Authorization: Bearer <admin token>", headers=_CHALLENGE)
    entry = match_token(credentials.credentials, request.app.state.settings.hub.admin.tokens)
    if entry is None:
        raise Unauthorized("the admin token is not valid", headers=_CHALLENGE)
    return entry


async def require_viewer(caller: Annotated[AdminToken, Depends(_caller)]) -> str:
    """Any valid admin token (viewers and operators may read); returns the token's name."""
    return caller.name


async def require_operator(caller: Annotated[AdminToken, Depends(_caller)]) -> str:
    """An operator's token (changes deliveries or targets); returns the token's name."""
    if caller.role != "operator":
        raise Forbidden(f"{caller.name!r} is a {caller.role}; this needs an operator token")
    return caller.name


Viewer = Annotated[str, Depends(require_viewer)]
# Any valid token, when the reply depends on the reader's role (personal data masked for viewers).
Reader = Annotated[AdminToken, Depends(_caller)]
Operator = Annotated[str, Depends(require_operator)]
