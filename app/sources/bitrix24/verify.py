"""Bitrix24 authentication: the portal's shared `auth[application_token]`, nothing else."""

from __future__ import annotations

import hmac
from typing import Any

from app.bitrix24.installs import InstalledTokens
from app.errors import Unauthorized
from app.hubconfig import Bitrix24Source, Portal


def authenticate(
    source: Bitrix24Source | None, payload: dict[str, Any], installed: list[str] | None = None
) -> Portal:
    """Match the portal by `auth[member_id]`, else `auth[domain]`, and check its token.

    A portal matched by its domain must not be named by another `member_id`: one portal's token never vouches for
    another portal's events. ``installed`` adds the token an application portal's installation brought.
    """
    auth = payload.get("auth")
    if not isinstance(auth, dict):
        raise Unauthorized("the body carries no auth[application_token]")
    member_id, domain = auth.get("member_id"), auth.get("domain")
    portal = _find_portal(source, member_id, domain)
    token = auth.get("application_token")
    if portal is None or not isinstance(token, str):
        raise Unauthorized("unknown portal or missing application token")
    if portal.member_id and member_id and member_id != portal.member_id:
        raise Unauthorized("the member_id does not belong to the portal of that domain")
    if not token_matches(token, [*portal.tokens(), *(installed or [])]):
        raise Unauthorized("the application token does not match the portal's")
    return portal


def token_matches(token: str, accepted: list[str]) -> bool:
    """Compare ``token`` with every accepted one in constant time (no early exit tells which one was close)."""
    given = token.encode()
    results = [hmac.compare_digest(given, expected.encode()) for expected in accepted]
    return any(results)


def _find_portal(source: Bitrix24Source | None, member_id: Any, domain: Any) -> Portal | None:
    portals = source.portals if source else []
    by_member = isinstance(member_id, str) and member_id
    found = next((p for p in portals if by_member and p.member_id == member_id), None)
    if found is None and isinstance(domain, str) and domain:
        found = next((p for p in portals if p.domain and p.domain == domain.lower()), None)
    return found


async def authenticate_installed(
    source: Bitrix24Source | None, payload: dict[str, Any], installed: InstalledTokens | None
) -> Portal:
    """`authenticate`, also accepting the token of the portal's installation when the portal runs as an application.

    The installed token is cached per process; a mismatch reads it again once, so an event signed with the token of
    an install that another API process took a moment ago is not refused.
    """
    auth = payload.get("auth")
    member_id = auth.get("member_id") if isinstance(auth, dict) else None
    portals = source.portals if source else []
    if installed is None or not any(p.app and p.member_id == member_id for p in portals):
        return authenticate(source, payload)
    assert isinstance(member_id, str)
    try:
        return authenticate(source, payload, await installed.get(member_id))
    except Unauthorized:
        return authenticate(source, payload, await installed.get(member_id, fresh=True))
