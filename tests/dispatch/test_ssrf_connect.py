"""dispatch.ssrf at connect time: every resolution the delivery session makes is checked.

The names resolve through a resolver the test controls, so a name can start unresolvable or public
and later point at 127.0.0.1, where a real fake target listens.
"""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from app.hubconfig import HubConfig
from dispatch.ssrf import GuardedResolver, check_targets, guarded_connector
from dispatch.targets.transport import post
from tests.fake_target import FakeTarget

PUBLIC = "93.184.215.14"


class ScriptedResolver(AbstractResolver):
    """Answers each name from `answers` (a list per name, consumed in order; the last one repeats)."""

    def __init__(self, answers: dict[str, list[str | None]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        queue = self.answers[host]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        if address is None:
            raise OSError(f"{host} does not resolve")
        return [
            ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=0)
        ]

    async def close(self) -> None:
        return None


def _hub(**allow: bool) -> HubConfig:
    targets = {
        name: {"kind": "http", "url": f"http://{name}.example:9/in", "allow_private": allowed}
        for name, allowed in allow.items()
    }
    return HubConfig.model_validate({"targets": targets})


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.5",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "fd00:ec2::254",
        "fe80::1%eth0",
    ],
)
async def test_each_non_public_address_refused(address: str) -> None:
    guarded = GuardedResolver(ScriptedResolver({"crm.example": [address]}))
    with pytest.raises(OSError, match=r"refused: crm\.example resolves to"):
        await guarded.resolve("crm.example", 443)


async def test_rebinding_refused_at_the_second_resolution() -> None:
    inner = ScriptedResolver({"crm.example": [PUBLIC, "127.0.0.1"]})
    guarded = GuardedResolver(inner)
    assert [r["host"] for r in await guarded.resolve("crm.example", 443)] == [PUBLIC]
    with pytest.raises(OSError, match=r"loopback address 127\.0\.0\.1"):
        await guarded.resolve("crm.example", 443)
    assert inner.calls == ["crm.example", "crm.example"]


async def test_unresolvable_at_start_then_loopback_is_never_delivered() -> None:
    hub = _hub(crm=False)
    check_targets(hub)  # does not resolve at start (.example): let through
    async with FakeTarget() as fake:
        url = f"http://crm.example:{fake.port}/in"
        inner = ScriptedResolver({"crm.example": [None, "127.0.0.1"]})
        connector = guarded_connector(hub, inner)
        async with aiohttp.ClientSession(connector=connector) as session:
            first = await post(session, url, body=b"{}", headers={}, timeout=5)
            second = await post(session, url, body=b"{}", headers={}, timeout=5)
        assert first.error_class == "connect" and first.outcome == "retry"
        assert second.error_class == "refused_address" and second.outcome == "retry"
        assert "loopback address 127.0.0.1" in (second.error or "")
        assert fake.requests == []


async def test_allow_private_target_reaches_loopback_through_the_same_resolver() -> None:
    hub = _hub(crm=False, erp=True)
    async with FakeTarget() as fake:
        inner = ScriptedResolver({"erp.example": ["127.0.0.1"], "crm.example": ["127.0.0.1"]})
        connector = guarded_connector(hub, inner)
        async with aiohttp.ClientSession(connector=connector) as session:
            allowed = await post(
                session, f"http://erp.example:{fake.port}/in", body=b"{}", headers={}, timeout=5
            )
            refused = await post(
                session, f"http://crm.example:{fake.port}/in", body=b"{}", headers={}, timeout=5
            )
        assert allowed.outcome == "delivered"
        assert refused.error_class == "refused_address"
        assert [r.path for r in fake.requests] == ["/in"]
        assert inner.calls == ["erp.example", "crm.example"]


async def test_redirect_to_loopback_not_followed() -> None:
    hub = _hub(erp=True)
    async with FakeTarget() as fake:
        fake.reply(302, headers={"Location": "http://127.0.0.1:1/steal"})
        connector = guarded_connector(hub, ScriptedResolver({"erp.example": ["127.0.0.1"]}))
        async with aiohttp.ClientSession(connector=connector) as session:
            result = await post(
                session, f"http://erp.example:{fake.port}/in", body=b"{}", headers={}, timeout=5
            )
        assert result.http_status == 302
        assert [r.path for r in fake.requests] == ["/in"]
