"""The hub's installations on Bitrix24 portals: install, uninstall, the portal's token, fresh access tokens.

Every statement on `bitrix24_installs` is here. Tokens are stored encrypted (app.bitrix24.cipher). An access token
is renewed through the authorization server under the row's lock, so across every process one renewal happens and
the others wait for it and use its result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bitrix24.cipher import TokenCipher
from app.bitrix24.oauth import OAuthRefused, TokenPair, refresh
from app.hubconfig import Portal
from app.models import Bitrix24Install

log = logging.getLogger(__name__)

# Renew this long before the access token expires, so a call never starts with a token about to lapse.
RENEW_BEFORE = timedelta(minutes=5)


class NotInstalled(Exception):
    """The portal has no active installation of the hub (never installed, or uninstalled)."""


@dataclass(frozen=True)
class Access:
    """What a REST call on the portal needs: its REST address and a valid access token."""

    client_endpoint: str
    access_token: str


async def verified_pair(portal: Portal, refresh_token: str) -> TokenPair:
    """Renew an install's tokens at the authorization server: only this application's tokens for this portal pass.

    An install event proves nothing by itself (its fields are the sender's); the authorization server does.
    """
    assert portal.app is not None
    pair = await refresh(portal.app, refresh_token)
    if pair.member_id != portal.member_id:
        raise OAuthRefused("the tokens belong to another portal")
    return pair


async def save_install(
    session: AsyncSession,
    cipher: TokenCipher,
    pair: TokenPair,
    application_token: str,
    domain: str | None,
) -> None:
    """Store (or replace, on a reinstall) the portal's installation with its encrypted tokens."""
    values = {
        "domain": domain,
        "client_endpoint": pair.client_endpoint,
        "scope": pair.scope,
        "application_token": cipher.encrypt(application_token),
        "access_token": cipher.encrypt(pair.access_token),
        "refresh_token": cipher.encrypt(pair.refresh_token),
        "expires_at": pair.expires_at,
        "revoked_at": None,
    }
    statement = insert(Bitrix24Install).values(member_id=pair.member_id, **values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[Bitrix24Install.member_id],
            set_={**values, "installed_at": func.now(), "updated_at": func.now()},
        )
    )


async def revoke(session: AsyncSession, member_id: str) -> bool:
    """Uninstall: wipe the tokens, keep the row (when and what was installed). False if nothing was active."""
    result = await session.execute(
        update(Bitrix24Install)
        .where(Bitrix24Install.member_id == member_id, Bitrix24Install.revoked_at.is_(None))
        .values(
            application_token=None,
            access_token=None,
            refresh_token=None,
            revoked_at=func.now(),
            updated_at=func.now(),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def application_token(
    session: AsyncSession, cipher: TokenCipher, member_id: str
) -> str | None:
    """The application token the portal's active installation brought, if any."""
    stored = await session.scalar(
        select(Bitrix24Install.application_token).where(
            Bitrix24Install.member_id == member_id, Bitrix24Install.revoked_at.is_(None)
        )
    )
    return cipher.decrypt(stored) if stored is not None else None


async def access(
    sessions: async_sessionmaker[AsyncSession],
    cipher: TokenCipher,
    portal: Portal,
    *,
    rejected: str | None = None,
) -> Access:
    """A valid access token for ``portal``, renewed when it is about to expire or was just ``rejected``.

    ``rejected`` is the token a REST call refused as expired: if another process renewed it meanwhile, its new
    token is returned without a second renewal.
    """
    async with sessions() as session, session.begin():
        row = await session.get(Bitrix24Install, portal.member_id, with_for_update=True)
        if (
            row is None
            or row.revoked_at is not None
            or row.access_token is None
            or row.refresh_token is None
        ):
            raise NotInstalled(f"the hub is not installed on portal {portal.member_id}")
        current = cipher.decrypt(row.access_token)
        fresh = row.expires_at is not None and row.expires_at > datetime.now(UTC) + RENEW_BEFORE
        if fresh and current != rejected:
            return Access(row.client_endpoint, current)
        pair = await verified_pair(portal, cipher.decrypt(row.refresh_token))
        row.access_token = cipher.encrypt(pair.access_token)
        row.refresh_token = cipher.encrypt(pair.refresh_token)
        row.expires_at, row.client_endpoint, row.scope = (
            pair.expires_at,
            pair.client_endpoint,
            pair.scope,
        )
        row.updated_at = datetime.now(UTC)
        log.info("renewed the access token of portal %s", portal.member_id)
        return Access(pair.client_endpoint, pair.access_token)


async def rotate_keys(session: AsyncSession, cipher: TokenCipher) -> int:
    """Re-encrypt every stored token with the newest key; returns the installations rewritten."""
    rows = (await session.scalars(select(Bitrix24Install).with_for_update())).all()
    for row in rows:
        for name in ("application_token", "access_token", "refresh_token"):
            value = getattr(row, name)
            if value is not None:
                setattr(row, name, cipher.rotate(value))
    return len(rows)


class InstalledTokens:
    """The application tokens of installed portals, cached per process for the hot path of event checks."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], cipher: TokenCipher, ttl: float = 30.0
    ) -> None:
        self._sessions, self._cipher, self._ttl = sessions, cipher, ttl
        self._cache: dict[str, tuple[str | None, float]] = {}

    async def get(self, member_id: str, *, fresh: bool = False) -> list[str]:
        """The portal's installed token (read again when ``fresh`` or older than the TTL), as a list."""
        cached = self._cache.get(member_id)
        if fresh or cached is None or time.monotonic() - cached[1] > self._ttl:
            async with self._sessions() as session:
                token = await application_token(session, self._cipher, member_id)
            cached = (token, time.monotonic())
            self._cache[member_id] = cached
        return [cached[0]] if cached[0] else []

    def forget(self, member_id: str) -> None:
        self._cache.pop(member_id, None)
