"""REST calls as the installed application: OAuth access tokens from the encrypted installation, renewed once.

`OAuthCredentials` plugs into `PortalClient` (app.bitrix24.rest.Credentials): the REST address is the portal's
`client_endpoint` as the authorization server gave it, the token the installation's, and an `expired_token`
reply renews it (app.bitrix24.installs.access, once across processes) before the call is repeated.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bitrix24.cipher import TokenCipher
from app.bitrix24.installs import NotInstalled, access
from app.bitrix24.oauth import OAuthRefused, OAuthUnavailable
from app.hubconfig import Portal


class OAuthCredentials:
    """The application's tokens for one portal."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], cipher: TokenCipher, portal: Portal
    ) -> None:
        self._sessions, self._cipher, self._portal = sessions, cipher, portal
        domain = portal.domain or "portal.invalid"
        self._endpoint = f"https://{domain}/rest/"  # until the installation says where

    @property
    def base_url(self) -> str:
        return self._endpoint

    async def token(self) -> str | None:
        """The installation's access token (renewed first when about to expire)."""
        granted = await access(self._sessions, self._cipher, self._portal)
        self._endpoint = granted.client_endpoint
        return granted.access_token

    async def refresh(self, expired: str | None) -> bool:
        """Renew after the portal called ``expired`` expired; False when the application cannot."""
        try:
            granted = await access(self._sessions, self._cipher, self._portal, rejected=expired)
        except (NotInstalled, OAuthRefused, OAuthUnavailable):
            return False
        self._endpoint = granted.client_endpoint
        return True
