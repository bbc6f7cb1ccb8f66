"""1C authentication: HTTP Basic or Bearer, as configured for the source."""

from __future__ import annotations

import base64
import binascii
import hmac

from app.errors import NotFound, Unauthorized
from app.hubconfig import BasicAuth, OneCSource


def authenticate(source: OneCSource | None, authorization: str | None) -> None:
    """Check the Authorization header in constant time; raise 401 (or 404 without a 1C source)."""
    if source is None:
        raise NotFound("the 1C source is not configured")
    scheme, _, credentials = (authorization or "").partition(" ")
    auth = source.auth
    if isinstance(auth, BasicAuth):
        expected = f"{auth.username}:{auth.password.get_secret_value()}".encode()
        if scheme.lower() != "basic":
            raise _challenge("Basic")
        try:
            given = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise _challenge("Basic") from None
    else:
        expected = auth.token.get_secret_value().encode()
        if scheme.lower() != "bearer":
            raise _challenge("Bearer")
        given = credentials.strip().encode()
    if not hmac.compare_digest(given, expected):
        raise _challenge(auth.type.capitalize())


def _challenge(scheme: str) -> Unauthorized:
    return Unauthorized(
        "missing or wrong credentials", headers={"WWW-Authenticate": f'{scheme} realm="mmhub"'}
    )
