"""Bitrix24 authentication: the portal's shared `auth[application_token]`, nothing else."""

from __future__ import annotations

import hmac
from typing import Any

from app.errors import Unauthorized
from app.hubconfig import Bitrix24Source, Portal


def authenticate(source: Bitrix24Source | None, payload: dict[str, Any]) -> Portal:
    """Match the portal by `auth[member_id]`, else `auth[domain]`, and check its token."""
    auth = payload.get("auth")
    if not isinstance(auth, dict):
        raise Unauthorized("the body carries no auth[application_token]")
    member_id, domain = auth.get("member_id"), auth.get("domain")
    portal = _find_portal(source, member_id, domain)
    token = auth.get("application_token")
    if portal is None or not isinstance(token, str):
        raise Unauthorized("unknown portal or missing application token")
    expected = portal.application_token.get_secret_value()
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("the application token does not match the portal's")
    return portal


def _find_portal(source: Bitrix24Source | None, member_id: Any, domain: Any) -> Portal | None:
    portals = source.portals if source else []
    by_member = isinstance(member_id, str) and member_id
    found = next((p for p in portals if by_member and p.member_id == member_id), None)
    if found is None and isinstance(domain, str) and domain:
        found = next((p for p in portals if p.domain and p.domain == domain.lower()), None)
    return found
