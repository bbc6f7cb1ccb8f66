"""The portal REST client against the fake portal: limits, batch, pages, errors, backoff."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from app.bitrix24.errors import Kind, RestError
from app.bitrix24.portals import portal_bucket
from app.bitrix24.rest import PortalClient, build_query
from app.hubconfig import RateLimit
from app.ratelimit import TokenBucket
from cli.fake_portal import FakePortal

FAST = {"backoff": 0.05, "backoff_max": 0.2}


@pytest.fixture
async def client(portal: FakePortal, session: aiohttp.ClientSession) -> PortalClient:
    return PortalClient(session, portal.webhook_url(), None, **FAST)


async def test_list_all_follows_next_through_every_page(
    portal: FakePortal, client: PortalClient
) -> None:
    for i in range(120):
        portal.put("deal", {"TITLE": f"d{i}"})
    rows = [row async for row in client.list_all("crm.deal.list", {"select": ["ID"]})]
    assert [row["ID"] for row in rows] == [str(i) for i in range(1, 121)]
    assert portal.stats.by_method["crm.deal.list"] == 3
    portal.put("task", {"title": "t"})
    tasks = [row async for row in client.list_all("tasks.task.list")]
    assert [row["title"] for row in tasks] == ["t"]


async def test_batch_returns_results_and_classified_errors_per_command(
    portal: FakePortal, client: PortalClient
) -> None:
    deal = portal.put("deal", {"TITLE": "x"})
    reply = await client.batch(
        {
            "deal": ("crm.deal.get", {"id": deal["ID"]}),
            "gone": ("crm.deal.get", {"id": 99}),
            "item": ("crm.item.get", {"entityTypeId": 1032, "id": 5}),
            "task": ("tasks.task.get", {"taskId": 5}),
            "list": ("crm.deal.list", {"filter": {">ID": 0}, "select": ["ID", "TITLE"]}),
        }
    )
    assert reply.results["deal"]["TITLE"] == "x"
    assert reply.results["list"] == [{"ID": deal["ID"], "TITLE": "x"}]
    assert reply.totals == {"list": 1}
    assert {key: error.kind for key, error in reply.errors.items()} == {
        "gone": Kind.NOT_FOUND,
        "item": Kind.NOT_FOUND,
        "task": Kind.NOT_FOUND,
    }
    assert portal.stats.requests == 1
    with pytest.raises(ValueError, match="at most 50"):
        await client.batch({str(i): ("crm.deal.get", {"id": 1}) for i in range(51)})


def test_build_query_writes_php_style_nested_keys() -> None:
    query = build_query(
        {
            "filter": {">DATE_MODIFY": "2025-01-01T00:00:00+03:00"},
            "select": ["ID"],
            "x": None,
            "y": True,
        }
    )
    assert (
        query == "filter%5B%3EDATE_MODIFY%5D=2025-01-01T00%3A00%3A00%2B03%3A00&select%5B0%5D=ID&y=1"
    )


async def test_errors_are_read_from_the_body_and_retried_only_when_worth_it(
    portal: FakePortal, client: PortalClient, session: aiohttp.ClientSession
) -> None:
    portal.put("deal", {"TITLE": "x"})
    portal.fail("crm.deal.get", "QUERY_LIMIT_EXCEEDED", "Too many requests", status=503, times=2)
    assert (await client.call("crm.deal.get", {"id": 1})).result["TITLE"] == "x"
    assert portal.stats.by_method["crm.deal.get"] == 3  # two refusals, then the answer

    portal.fail("crm.deal.get", "INTERNAL_SERVER_ERROR", "Internal server error", status=500)
    assert (await client.call("crm.deal.get", {"id": 1})).result["TITLE"] == "x"

    portal.fail("crm.deal.get", "OPERATION_TIME_LIMIT", "Method is blocked", status=429)
    with pytest.raises(RestError) as limited:
        await client.call("crm.deal.get", {"id": 1})
    assert (limited.value.kind, limited.value.retryable) == (Kind.TIME_LIMITED, True)

    portal.fail(
        "crm.deal.get", "expired_token", "The access token provided has expired.", status=401
    )
    with pytest.raises(RestError) as expired:
        await client.call("crm.deal.get", {"id": 1})
    assert (expired.value.kind, expired.value.retryable) == (Kind.AUTH_EXPIRED, True)

    with pytest.raises(RestError) as missing:
        await client.call("crm.deal.get", {"id": 99})
    assert (missing.value.kind, missing.value.status, missing.value.retryable) == (
        Kind.NOT_FOUND,
        400,
        False,
    )
    assert portal.stats.by_method["crm.deal.get"] == 8  # none of the last three was repeated

    wrong = PortalClient(session, f"{portal.url}/rest/1/wrongcode1234/", None, **FAST)
    with pytest.raises(RestError) as denied:
        await wrong.call("crm.deal.list")
    assert (denied.value.kind, denied.value.code) == (Kind.AUTH, "NO_AUTH_FOUND")
    assert "wrongcode1234" not in repr(wrong)


async def test_an_unreachable_portal_is_a_transport_error_without_the_code(
    session: aiohttp.ClientSession,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = PortalClient(
        session, f"http://127.0.0.1:{port}/rest/1/s3cretcode/", None, attempts=2, **FAST
    )
    with pytest.raises(RestError) as failed:
        await client.call("crm.deal.list")
    assert failed.value.kind is Kind.TRANSPORT and failed.value.retryable
    assert "s3cretcode" not in str(failed.value)


async def _burst(clients: list[PortalClient], calls: int) -> list[Any]:
    return await asyncio.gather(
        *(clients[i % len(clients)].call("crm.deal.list") for i in range(calls))
    )


@pytest.fixture
async def two_processes(
    urls: tuple[str, str],
) -> AsyncIterator[tuple[list[Redis], list[aiohttp.ClientSession]]]:
    """What two worker processes hold: their own Redis connection and HTTP session each."""
    redis = [Redis.from_url(urls[1]) for _ in range(2)]
    await redis[0].flushdb()
    sessions = [aiohttp.ClientSession() for _ in range(2)]
    yield redis, sessions
    for client in sessions:
        await client.close()
    for connection in redis:
        await connection.aclose()


@pytest.mark.parametrize("shared", [True, False], ids=["shared bucket", "bucket per process"])
async def test_clients_in_two_processes_stay_within_the_portal_limit_by_sharing_its_bucket(
    two_processes: tuple[list[Redis], list[aiohttp.ClientSession]], shared: bool
) -> None:
    redis, sessions = two_processes
    # Bitrix24's shape at a test's speed: burst 20, draining 10 a second.
    async with FakePortal(per_second=10, burst=20) as portal:
        url, limit = portal.webhook_url(), RateLimit(per_second=10, burst=20)
        clients = [
            PortalClient(
                http,
                url,
                portal_bucket(r, url, limit) if shared else TokenBucket(r, f"own-{i}", limit),
                attempts=30,
                **FAST,
            )
            for i, (r, http) in enumerate(zip(redis, sessions, strict=True))
        ]
        replies = await _burst(clients, 30)
    assert len(replies) == 30  # every call got through (without the shared bucket, by backoff)
    assert portal.stats.requests == 30 + portal.stats.limit_errors
    if shared:
        assert portal.stats.limit_errors == 0
    else:  # the control: the same burst from two processes with their own buckets
        assert portal.stats.limit_errors > 0


class Tokens:
    """OAuth credentials as an application holds them: an access token, renewed on request."""

    def __init__(self, portal: FakePortal, first: str) -> None:
        self.portal, self.current, self.refreshed = portal, first, 0

    @property
    def base_url(self) -> str:
        return f"{self.portal.url}/rest/"

    async def token(self) -> str | None:
        return self.current

    async def refresh(self, expired: str | None) -> bool:
        self.refreshed += 1
        self.current = f"fresh-{self.refreshed}"
        self.portal.issue_token(self.current)
        return True


async def test_an_expired_token_is_refreshed_once_and_the_call_made_again(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    portal.put("deal", {"TITLE": "x"})
    portal.issue_token("old", lifetime=-1)
    tokens = Tokens(portal, "old")
    client = PortalClient(session, tokens, None, **FAST)
    assert (await client.call("crm.deal.get", {"id": 1})).result["TITLE"] == "x"
    assert tokens.refreshed == 1
    assert portal.stats.by_method["crm.deal.get"] == 2

    portal.tokens.clear()  # revoked: a refresh cannot help twice in a row
    with pytest.raises(RestError) as denied:
        await client.call("crm.deal.get", {"id": 1})
    assert denied.value.kind is Kind.AUTH
