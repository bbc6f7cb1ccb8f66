"""ONAPPINSTALL and ONAPPUNINSTALL: the hub installed on a portal as a local application, and removed from it.

An install is taken only from a portal the configuration names with `app`, and only once the authorization server
has renewed its refresh token for this application and that portal (the event's own fields prove nothing). The
renewed pair and the portal's new application token are stored encrypted. An uninstall must carry the installed
application token; it wipes the tokens.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import Request
from sqlalchemy import func, select

from app.bitrix24.installs import InstalledTokens, revoke, save_install, verified_pair
from app.bitrix24.oauth import OAuthRefused, OAuthUnavailable
from app.bitrix24.offline import OFFLINE_CHANNEL
from app.errors import ServiceUnavailable, Unauthorized, Unprocessable
from app.hubconfig import Portal
from app.settings import Settings
from app.sources.bitrix24.verify import authenticate_installed

log = logging.getLogger(__name__)

LIFECYCLE_EVENTS = frozenset({"ONAPPINSTALL", "ONAPPUNINSTALL", "ONOFFLINEEVENT"})


def app_portal(settings: Settings, auth: dict[str, Any]) -> Portal:
    """The configured application portal of an install or uninstall, matched by member_id only."""
    source = settings.hub.sources.bitrix24
    member_id = auth.get("member_id")
    portal = next(
        (p for p in (source.portals if source else []) if p.app and p.member_id == member_id), None
    )
    if portal is None:
        raise Unauthorized("the configuration names no application portal with this member_id")
    return portal


async def handle(request: Request, event: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Install or uninstall; the reply body. Raises a HubError for anything refused."""
    auth = payload.get("auth")
    if not isinstance(auth, dict):
        raise Unauthorized("the body carries no auth")
    portal = app_portal(request.app.state.settings, auth)
    if event == "ONOFFLINEEVENT":
        await _pull_soon(request, portal, payload)
        return {"status": "pull requested", "member_id": portal.member_id}
    if event == "ONAPPINSTALL":
        await _install(request, portal, auth)
        return {"status": "installed", "member_id": portal.member_id}
    await _uninstall(request, portal, auth)
    return {"status": "uninstalled", "member_id": portal.member_id}


async def _pull_soon(request: Request, portal: Portal, payload: dict[str, Any]) -> None:
    """ONOFFLINEEVENT: the portal's offline queue has news; wake the relay that pulls it (no data comes with it)."""
    settings: Settings = request.app.state.settings
    await authenticate_installed(
        settings.hub.sources.bitrix24, payload, request.app.state.installed_tokens
    )
    async with request.app.state.engine.connect() as conn:
        await conn.execute(select(func.pg_notify(OFFLINE_CHANNEL, portal.member_id)))
        await conn.commit()


async def _install(request: Request, portal: Portal, auth: dict[str, Any]) -> None:
    refresh_token, app_token = auth.get("refresh_token"), auth.get("application_token")
    if not (
        isinstance(refresh_token, str)
        and refresh_token
        and isinstance(app_token, str)
        and app_token
    ):
        raise Unprocessable("ONAPPINSTALL needs auth[refresh_token] and auth[application_token]")
    try:
        pair = await verified_pair(portal, refresh_token)
    except OAuthRefused as exc:
        raise Unauthorized(f"install not confirmed by the authorization server: {exc}") from None
    except OAuthUnavailable as exc:
        raise ServiceUnavailable(
            f"install not confirmed yet: {exc}", {"Retry-After": "30"}
        ) from None
    domain = auth.get("domain") if isinstance(auth.get("domain"), str) else portal.domain
    async with request.app.state.sessions() as session, session.begin():
        await save_install(session, request.app.state.cipher, pair, app_token, domain)
    tokens: InstalledTokens = request.app.state.installed_tokens
    tokens.forget(pair.member_id)
    log.info("installed on Bitrix24 portal %s (scope %s)", pair.member_id, pair.scope)


async def _uninstall(request: Request, portal: Portal, auth: dict[str, Any]) -> None:
    tokens: InstalledTokens = request.app.state.installed_tokens
    assert portal.member_id is not None
    sent = auth.get("application_token")
    accepted = [*portal.tokens(), *await tokens.get(portal.member_id, fresh=True)]
    if not isinstance(sent, str) or not any(
        hmac.compare_digest(sent.encode(), token.encode()) for token in accepted
    ):
        raise Unauthorized("the application token does not match the installed one")
    async with request.app.state.sessions() as session, session.begin():
        revoked = await revoke(session, portal.member_id)
    tokens.forget(portal.member_id)
    log.info(
        "uninstalled from Bitrix24 portal %s (%s)",
        portal.member_id,
        "revoked" if revoked else "was not active",
    )
