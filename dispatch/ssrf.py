"""Refuse target URLs that point into our own network unless the target says `allow_private: true`.

A webhook hub POSTs wherever its configuration says; a URL on loopback, a private range or a cloud
metadata address (169.254.169.254) would turn it into a proxy into the internal network. The check
at start catches a misconfiguration early; `GuardedResolver` repeats it on every resolution the
HTTP connector makes, so a name that resolves only later, or rebinds, cannot reach inside either.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from app.hubconfig import Bitrix24Target, HubConfig
from app.hubconfig import Target as TargetSpec

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Carrier-grade NAT space: not "private" to Python 3.11, but never a public webhook receiver.
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def check_target_url(name: str, url: str, allow_private: bool) -> None:
    """Raise ValueError naming the target if `url` is not http(s) or resolves to a non-public address.

    Only `scheme://host` is ever quoted: a URL's path or user info may hold a secret. A host that does
    not resolve now is let through (refusing would stop the hub on a DNS hiccup): `GuardedResolver`
    checks it when it does.
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # an out-of-range port or a malformed IPv6 literal
        raise ValueError(f"target {name!r}: not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"target {name!r}: the URL scheme must be http or https, not {scheme!r}")
    if not host:
        raise ValueError(f"target {name!r}: the URL has no host")
    if allow_private:
        return
    where = f"{scheme}://{host}"
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # drop an IPv6 zone id
        kind = non_public(address)
        if kind:
            raise ValueError(
                f"target {name!r}: {where} resolves to {kind} address {address}; "
                "set allow_private: true on the target to allow it"
            )


def non_public(address: IPAddress) -> str | None:
    """The kind of non-public address this is ("loopback", "private", ...), or None if public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        # ::ffff:127.0.0.1 reaches 127.0.0.1, but Python 3.11 does not call it loopback.
        address = address.ipv4_mapped
    checks = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),  # before "private": Python counts 240/4 as both
        ("private", address.is_private or address in _SHARED),
    )
    return next((kind for kind, hit in checks if hit), None)


class RefusedAddress(OSError):
    """A target's name resolved to a non-public address; aiohttp reports it as a connect error."""


class GuardedResolver(AbstractResolver):
    """Resolve with `inner`, then refuse the name if any address it gives is not public.

    Hosts of targets with `allow_private` resolve anywhere. aiohttp does not resolve IP literals;
    those are fixed, and `check_targets` judged them at start.
    """

    def __init__(self, inner: AbstractResolver, allow_private_hosts: Iterable[str] = ()) -> None:
        self._inner = inner
        self._allowed = frozenset(host.lower() for host in allow_private_hosts)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host.lower() in self._allowed:
            return results
        for result in results:
            address = ipaddress.ip_address(result["host"].split("%", 1)[0])
            kind = non_public(address)
            if kind:
                raise RefusedAddress(
                    f"refused: {host} resolves to {kind} address {address} "
                    "(set allow_private: true on the target to allow it)"
                )
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_connector(
    hub: HubConfig, inner: AbstractResolver | None = None
) -> aiohttp.TCPConnector:
    """The connector every delivery uses: each resolution checked by a `GuardedResolver`."""
    allowed = [
        _host_of(hub.rest_base(s) if isinstance(s, Bitrix24Target) else s.url)
        for s in hub.targets.values()
        if s.allow_private
    ]
    for portal in hub.sources.bitrix24.portals if hub.sources.bitrix24 else []:
        if portal.rest is not None and portal.rest.allow_private:  # enrichment, reconciliation
            allowed.append(_host_of(portal.rest.webhook_url.get_secret_value()))
        if portal.app is not None and portal.app.allow_private:  # the application's REST calls
            allowed.append(_host_of(portal.app.oauth_url))
    resolver = GuardedResolver(inner or DefaultResolver(), [h for h in allowed if h])
    return aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=60, resolver=resolver)


def _host_of(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def check_targets(hub: HubConfig) -> None:
    """Check every target's URL and every portal's REST URL; raise on the first refusal."""
    for name, spec in hub.targets.items():
        check_target_url(name, _url_of(hub, spec), spec.allow_private)
    for portal in hub.sources.bitrix24.portals if hub.sources.bitrix24 else []:
        if portal.rest is not None:  # a portal's REST API (enrichment, reconciliation)
            url = portal.rest.webhook_url.get_secret_value()
            name = f"portal {portal.member_id or portal.domain} rest"
            check_target_url(name, url, portal.rest.allow_private)


def _url_of(hub: HubConfig, spec: TargetSpec) -> str:
    if isinstance(spec, Bitrix24Target):
        return hub.rest_base(spec)  # checked here, never quoted
    return spec.url
