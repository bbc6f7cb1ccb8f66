"""The configured portals' REST clients, and the one token bucket per portal they share.

Bitrix24 counts requests per portal (and source address), whatever webhook or application makes
them, so the bucket is named after the portal's host: a portal's `rest` client and every `bitrix24`
target pointed at the same host take from one bucket, in every process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bitrix24.app_auth import OAuthCredentials
from app.bitrix24.cipher import TokenCipher
from app.bitrix24.rest import PortalClient
from app.hubconfig import BITRIX24_RATE_LIMIT, Bitrix24Target, HubConfig, Portal, RateLimit
from app.hubconfig import Target as TargetSpec
from app.ratelimit import TokenBucket

# What the application's clients need: the database (installations) and the key to read tokens.
Installs = tuple[async_sessionmaker[AsyncSession], TokenCipher]

SOURCE_PREFIX = "urn:mastermobile:bitrix24:"  # + the portal's domain (CONTRACT: CloudEvent source)


def bucket_name(webhook_url: str) -> str:
    """`b24:<host[:port]>`: the portal's bucket (the URL's path, which holds the code, is left out)."""
    parts = urlsplit(webhook_url)
    host = (parts.hostname or "").lower()
    return f"b24:{host}:{parts.port}" if parts.port else f"b24:{host}"


def with_headroom(limit: RateLimit) -> RateLimit:
    """The configured limit less a little burst: a request granted at the end of our bucket's
    burst may reach the portal a moment later than its twin in Bitrix24's counter, which has not
    drained by then; two slots absorb a second of that at 2 requests/s."""
    return RateLimit(
        per_second=limit.per_second, burst=max(1, limit.burst - min(2, limit.burst // 10))
    )


def portal_bucket(redis: Redis, webhook_url: str, limit: RateLimit) -> TokenBucket:
    """The token bucket of the portal behind `webhook_url`, shared across processes."""
    return TokenBucket(redis, bucket_name(webhook_url), with_headroom(limit))


def target_bucket(redis: Redis, hub: HubConfig, name: str, spec: TargetSpec) -> TokenBucket | None:
    """A target's bucket: a `bitrix24` target shares its portal's (and its portal's limit)."""
    if isinstance(spec, Bitrix24Target):
        url = hub.rest_base(spec)
        limit = _portal_limit(hub, bucket_name(url)) or spec.rate_limit
        return portal_bucket(redis, url, limit) if limit else None
    return TokenBucket(redis, name, spec.rate_limit) if spec.rate_limit else None


def _portal_limit(hub: HubConfig, bucket: str) -> RateLimit | None:
    for portal in _portals(hub):
        if portal.rest and bucket_name(portal.rest.webhook_url.get_secret_value()) == bucket:
            return portal.rest.rate_limit
    return None


def _portals(hub: HubConfig) -> list[Portal]:
    return hub.sources.bitrix24.portals if hub.sources.bitrix24 else []


class Portals:
    """A REST client per portal with `rest`, found by member_id or domain (as webhooks are)."""

    def __init__(
        self,
        hub: HubConfig,
        redis: Redis,
        http: aiohttp.ClientSession,
        *,
        installs: Installs | None = None,
        **options: Any,
    ) -> None:
        self._by_member: dict[str, PortalClient] = {}
        self._by_domain: dict[str, PortalClient] = {}
        self._config: dict[int, Portal] = {}  # id(client) -> its portal's configuration
        for portal in _portals(hub):
            client = _client(portal, redis, http, installs, options)
            if client is None:
                continue
            self._config[id(client)] = portal
            if portal.member_id:
                self._by_member[portal.member_id] = client
            if portal.domain:
                self._by_domain[portal.domain.lower()] = client

    def get(self, member_id: str | None, domain: str | None) -> PortalClient | None:
        """The client of the portal with this member_id, else this domain; None without `rest`."""
        if member_id and member_id in self._by_member:
            return self._by_member[member_id]
        return self._by_domain.get((domain or "").lower())

    def for_payload(self, payload: Any) -> PortalClient | None:
        """The client of the portal a Bitrix24 event came from (its `auth[member_id]`/`[domain]`)."""
        auth = payload.get("auth") if isinstance(payload, Mapping) else None
        if not isinstance(auth, Mapping):
            return None
        return self.get(_text(auth.get("member_id")), _text(auth.get("domain")))

    def for_event(self, event: Mapping[str, Any]) -> PortalClient | None:
        """The client of a CloudEvent's portal: from its data's `auth`, else its source URN's
        domain (an operator's edited payload may have no `auth`)."""
        found = self.for_payload(event.get("data"))
        source = str(event.get("source") or "")
        if found is None and source.startswith(SOURCE_PREFIX):
            found = self.get(None, source.removeprefix(SOURCE_PREFIX))
        return found

    def portal_of(self, client: PortalClient) -> Portal:
        """The configuration of the portal a client calls."""
        return self._config[id(client)]


def target_portal(hub: HubConfig, spec: Bitrix24Target) -> Portal | None:
    """The configured portal a `bitrix24` target writes to: its `portal:`, else the portal whose REST host it calls."""
    if spec.portal is not None:
        return hub.portal(spec.portal)
    host = bucket_name(hub.rest_base(spec))
    for portal in _portals(hub):
        if portal.rest and bucket_name(portal.rest.webhook_url.get_secret_value()) == host:
            return portal
    return None


def portal_key(portal: Portal) -> str:
    """How writes and events of one portal are matched: its member_id, else its domain."""
    return portal.member_id or portal.domain or ""


def _client(
    portal: Portal,
    redis: Redis,
    http: aiohttp.ClientSession,
    installs: Installs | None,
    options: dict[str, Any],
) -> PortalClient | None:
    """A webhook client when the portal has `rest`, else the installed application's, else none."""
    if portal.rest is not None:
        url = portal.rest.webhook_url.get_secret_value()
        return PortalClient(http, url, portal_bucket(redis, url, portal.rest.rate_limit), **options)
    if portal.app is None or installs is None:
        return None
    credentials = OAuthCredentials(installs[0], installs[1], portal)
    bucket = portal_bucket(redis, credentials.base_url, BITRIX24_RATE_LIMIT)
    return PortalClient(http, credentials, bucket, **options)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
