"""The fake portal answers as Bitrix24's REST documentation says: shapes, pages, batch, limits."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from cli.fake_portal import FakePortal


async def rest(
    session: aiohttp.ClientSession, url: str, method: str, params: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{url}{method}.json", json=params or {}) as reply:
        return reply.status, await reply.json()


async def test_get_returns_the_record_and_missing_ones_in_each_family_shape(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    deal = portal.put("deal", {"TITLE": "Ten phones"}, by=3)
    portal.put("task", {"title": "Call back"})
    portal.put("dynamic-1032", {"title": "Shipment"})
    url = portal.webhook_url()

    status, body = await rest(session, url, "crm.deal.get", {"id": deal["ID"]})
    assert status == 200
    assert body["result"]["TITLE"] == "Ten phones"
    assert body["result"]["MODIFY_BY_ID"] == "3"
    assert {"start", "finish", "duration", "operating"} <= set(body["time"])

    assert await rest(session, url, "crm.deal.get", {"id": 999}) == (
        400,
        {"error": "", "error_description": "Not found"},
    )
    status, body = await rest(session, url, "crm.item.get", {"entityTypeId": 2, "id": 999})
    assert (status, body["error"]) == (400, "NOT_FOUND")
    status, body = await rest(session, url, "tasks.task.get", {"taskId": 999})
    assert (status, body["error"]) == (400, "ERROR_CORE")
    assert "ACTION_NOT_ALLOWED" in body["error_description"]

    status, body = await rest(session, url, "crm.item.get", {"entityTypeId": 2, "id": deal["ID"]})
    assert body["result"]["item"]["id"] == int(deal["ID"])
    assert body["result"]["item"]["updatedBy"] == 3
    status, body = await rest(session, url, "crm.item.get", {"entityTypeId": 1032, "id": 3})
    assert body["result"]["item"]["title"] == "Shipment"
    status, body = await rest(session, url, "tasks.task.get", {"taskId": 2})
    assert body["result"]["task"]["title"] == "Call back"


async def test_authentication_and_unknown_methods(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    assert await rest(session, f"{portal.url}/rest/1/wrongcode/", "crm.deal.list") == (
        401,
        {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"},
    )
    status, body = await rest(session, portal.webhook_url(), "crm.nothing.here")
    assert (status, body["error"]) == (404, "ERROR_METHOD_NOT_FOUND")

    portal.issue_token("fresh")
    portal.issue_token("stale", lifetime=-1)
    status, body = await rest(session, f"{portal.url}/rest/", "crm.deal.list", {"auth": "fresh"})
    assert (status, body["result"]) == (200, [])
    status, body = await rest(session, f"{portal.url}/rest/", "crm.deal.list", {"auth": "stale"})
    assert (status, body["error"]) == (401, "expired_token")


async def test_lists_come_in_pages_of_50_with_next_and_total(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    for i in range(120):
        portal.put("deal", {"TITLE": f"deal {i}"})
    url, seen, start = portal.webhook_url(), [], 0
    pages = []
    while start is not None:
        _, body = await rest(session, url, "crm.deal.list", {"start": start, "select": ["ID"]})
        pages.append((len(body["result"]), body["total"], body.get("next")))
        seen += [row["ID"] for row in body["result"]]
        start = body.get("next")
    assert pages == [(50, 120, 50), (50, 120, 100), (20, 120, None)]
    assert seen == [str(i) for i in range(1, 121)]
    assert set(body["result"][0]) == {"ID"}


async def test_list_filters_by_modification_time_and_lists_items_and_tasks(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    old = portal.put("deal", {"DATE_MODIFY": "2025-01-01T10:00:00+03:00"})
    new = portal.put("deal", {"DATE_MODIFY": "2025-01-02T10:00:00+03:00"})
    portal.put("task", {"title": "t", "changedDate": "2025-01-03T00:00:00+00:00"})
    url = portal.webhook_url()
    _, body = await rest(
        session, url, "crm.deal.list", {"filter": {">DATE_MODIFY": "2025-01-01T08:00:00+00:00"}}
    )
    assert [row["ID"] for row in body["result"]] == [new["ID"]]
    _, body = await rest(
        session, url, "crm.item.list", {"entityTypeId": 2, "filter": {"@id": [old["ID"]]}}
    )
    assert [row["id"] for row in body["result"]["items"]] == [int(old["ID"])]
    _, body = await rest(
        session, url, "tasks.task.list", {"filter": {">changedDate": "2025-01-02"}}
    )
    assert [row["title"] for row in body["result"]["tasks"]] == ["t"]


async def test_writes_stamp_the_webhook_user_and_deletes_remove(
    session: aiohttp.ClientSession,
) -> None:
    async with FakePortal(webhooks={1: "admincode", 7: "hubcode"}) as portal:
        deal = portal.put("deal", {"TITLE": "a"}, by=1)
        status, body = await rest(
            session,
            portal.webhook_url(7),
            "crm.deal.update",
            {"id": deal["ID"], "fields": {"TITLE": "b"}},
        )
        assert (status, body["result"]) == (200, True)
        stored = portal.records.get("deal", int(deal["ID"]))
        assert stored is not None and (stored["TITLE"], stored["MODIFY_BY_ID"]) == ("b", "7")
        status, body = await rest(
            session, portal.webhook_url(), "crm.deal.delete", {"id": deal["ID"]}
        )
        assert (status, body["result"]) == (200, True)
        assert portal.records.get("deal", int(deal["ID"])) is None


async def test_batch_runs_named_commands_with_references_errors_and_halt(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    deal = portal.put("deal", {"TITLE": "x", "COMPANY_ID": "0"})
    company = portal.put("company", {"TITLE": "Acme"})
    portal.update("deal", int(deal["ID"]), {"COMPANY_ID": company["ID"]})
    cmd = {
        "deal": f"crm.deal.get?id={deal['ID']}",
        "company": "crm.company.get?id=$result[deal][COMPANY_ID]",
        "missing": "crm.deal.get?id=999",
        "deals": "crm.deal.list?select[]=ID",
    }
    status, body = await rest(session, portal.webhook_url(), "batch", {"halt": 0, "cmd": cmd})
    assert status == 200
    result = body["result"]
    assert result["result"]["deal"]["TITLE"] == "x"
    assert result["result"]["company"]["TITLE"] == "Acme"
    assert result["result_error"] == {"missing": {"error": "", "error_description": "Not found"}}
    assert result["result_total"] == {"deals": 1}
    assert result["result_next"] == []
    assert set(result["result_time"]) == {"deal", "company", "deals"}
    assert portal.stats.requests == 1 and portal.stats.commands == 4

    _, body = await rest(session, portal.webhook_url(), "batch", {"halt": 1, "cmd": cmd})
    assert set(body["result"]["result"]) == {"deal", "company"}  # stopped at "missing"


async def test_batch_refuses_more_than_50_commands_and_nesting(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    portal.put("deal", {"TITLE": "x"})
    cmd = ["crm.deal.get?id=1"] * 51 + ["batch?cmd[a]=crm.deal.list"]
    _, body = await rest(session, portal.webhook_url(), "batch", {"cmd": cmd})
    result = body["result"]
    assert isinstance(result["result"], list) and len(result["result"]) == 50
    assert result["result_error"]["50"]["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"
    assert result["result_error"]["51"]["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"
    cmd = {"inner": "batch?cmd[a]=crm.deal.list"}
    _, body = await rest(session, portal.webhook_url(), "batch", {"cmd": cmd})
    assert body["result"]["result_error"]["inner"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"


async def test_beyond_the_burst_requests_get_query_limit_exceeded(
    session: aiohttp.ClientSession,
) -> None:
    # A slow drain, so the count cannot depend on how fast this machine is.
    async with FakePortal(per_second=0.001, burst=5) as portal:
        replies = await asyncio.gather(
            *(rest(session, portal.webhook_url(), "crm.deal.list") for _ in range(8))
        )
    refused = [reply for reply in replies if reply[0] != 200]
    assert (
        refused
        == [(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})] * 3
    )
    assert (portal.stats.requests, portal.stats.limit_errors, portal.stats.commands) == (8, 3, 5)


async def test_injected_operation_time_limit_hits_direct_calls_and_batch_members(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    portal.put("deal", {"TITLE": "x"})
    portal.fail("crm.deal.get", "OPERATION_TIME_LIMIT", "Method is blocked", status=429, times=2)
    status, body = await rest(session, portal.webhook_url(), "crm.deal.get", {"id": 1})
    assert (status, body["error"]) == (429, "OPERATION_TIME_LIMIT")
    _, body = await rest(
        session, portal.webhook_url(), "batch", {"cmd": {"a": "crm.deal.get?id=1"}}
    )
    assert body["result"]["result_error"]["a"]["error"] == "OPERATION_TIME_LIMIT"
    status, _ = await rest(session, portal.webhook_url(), "crm.deal.get", {"id": 1})
    assert status == 200


async def test_form_bodies_and_the_control_api(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    async with session.put(f"{portal.url}/_fake/records/deal/42?by=5", json={"TITLE": "ctl"}):
        pass
    async with session.post(f"{portal.webhook_url()}crm.deal.get.json", data={"id": "42"}) as reply:
        body = await reply.json()
    assert body["result"]["TITLE"] == "ctl" and body["result"]["MODIFY_BY_ID"] == "5"
    async with session.get(f"{portal.url}/_fake/stats") as reply:
        assert (await reply.json())["by_method"] == {"crm.deal.get": 1}
