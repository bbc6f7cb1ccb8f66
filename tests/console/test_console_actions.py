"""Console pages and operator actions over the seeded deliveries: each action changes the rows the
service changes and writes its audit row; bad input changes nothing and is never a 500."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.admin.support import (
    OPERATOR_TOKEN,
    Seeded,
    audit_rows,
    delivery_rows,
    execute,
    job_rows,
)
from tests.console.conftest import log_in


def _by_id(rows: list[object], delivery_id: str) -> object:
    return next(row for row in rows if str(row.id) == delivery_id)  # type: ignore[attr-defined]


async def test_replay_needs_a_reason_and_is_audited(
    console: httpx.AsyncClient, seeded: Seeded, engine: AsyncEngine
) -> None:
    csrf = await log_in(console, OPERATOR_TOKEN)
    dead = seeded.deliveries["dead"]
    before = await delivery_rows(engine)
    refused = await console.post(
        f"/console/deliveries/{dead}/replay", data={"csrf": csrf, "reason": " "}
    )
    assert refused.status_code == 303 and "error=" in refused.headers["location"]
    assert await delivery_rows(engine) == before and await audit_rows(engine) == []
    reply = await console.post(
        f"/console/deliveries/{dead}/replay", data={"csrf": csrf, "reason": "counterparty fixed"}
    )
    assert reply.status_code == 303 and "flash=" in reply.headers["location"]
    row = _by_id(await delivery_rows(engine), dead)
    assert (row.status, row.manual_next) == ("pending", True)  # type: ignore[attr-defined]
    [entry] = await audit_rows(engine)
    assert (entry.actor, entry.action, str(entry.delivery_id), entry.reason) == (
        "oscar",
        "replay",
        dead,
        "counterparty fixed",
    )
    page = await console.get(reply.headers["location"])
    assert "Replay requested" in page.text


async def test_edit_and_replay_sends_the_edited_data(
    console: httpx.AsyncClient, seeded: Seeded, engine: AsyncEngine
) -> None:
    csrf = await log_in(console, OPERATOR_TOKEN)
    dead = seeded.deliveries["dead"]
    bad = await console.post(
        f"/console/deliveries/{dead}/edit-replay",
        data={"csrf": csrf, "reason": "fix", "data": "[1, 2"},
    )
    assert bad.status_code == 303 and "not+JSON" in bad.headers["location"]
    assert _by_id(await delivery_rows(engine), dead).payload_override is None  # type: ignore[attr-defined]
    reply = await console.post(
        f"/console/deliveries/{dead}/edit-replay",
        data={
            "csrf": csrf,
            "reason": "counterparty code",
            # A number beyond 64 bits stays exact (orjson alone would round it).
            "data": '{"FIELDS": {"ID": "2", "CODE": "X", "SUM": 123456789012345678901234567890}}',
        },
    )
    assert reply.status_code == 303
    row = _by_id(await delivery_rows(engine), dead)
    assert row.payload_override == {  # type: ignore[attr-defined]
        "FIELDS": {"ID": "2", "CODE": "X", "SUM": 123456789012345678901234567890}
    }
    assert [e.action for e in await audit_rows(engine)] == ["replay", "edit"]
    page = await console.get(f"/console/deliveries/{dead}")
    assert "edited data" in page.text and "&#34;CODE&#34;: &#34;X&#34;" in page.text
    assert "&#34;SUM&#34;: 123456789012345678901234567890" in page.text


async def test_cancel_and_a_refused_cancel(
    console: httpx.AsyncClient, seeded: Seeded, engine: AsyncEngine
) -> None:
    csrf = await log_in(console, OPERATOR_TOKEN)
    contact = seeded.deliveries["contact"]
    reply = await console.post(
        f"/console/deliveries/{contact}/cancel", data={"csrf": csrf, "reason": "test data"}
    )
    assert reply.status_code == 303
    assert _by_id(await delivery_rows(engine), contact).status == "cancelled"  # type: ignore[attr-defined]
    delivered = seeded.deliveries["delivered"]
    again = await console.post(
        f"/console/deliveries/{delivered}/cancel", data={"csrf": csrf, "reason": "x"}
    )
    assert "cannot+be+cancelled" in again.headers["location"]
    assert _by_id(await delivery_rows(engine), delivered).status == "delivered"  # type: ignore[attr-defined]
    assert [e.action for e in await audit_rows(engine)] == ["cancel"]


async def test_bulk_replay_counts_first_then_runs_a_job(
    console: httpx.AsyncClient, seeded: Seeded, engine: AsyncEngine
) -> None:
    csrf = await log_in(console, OPERATOR_TOKEN)
    dry = await console.get("/console/replays/new?status=dead&target=erp&since=2h")
    assert re.search(r'id="matched">1<', dry.text)
    assert await job_rows(engine) == [] and await audit_rows(engine) == []
    form = {"csrf": csrf, "reason": "ERP back", "status": "dead", "target": "erp", "since": "2h"}
    start = await console.post("/console/replays", data=form)
    assert start.status_code == 303 and start.headers["location"].startswith("/console/replays/")
    [job] = await job_rows(engine)
    assert (job.total, job.actor, job.reason) == (1, "oscar", "ERP back")
    [entry] = await audit_rows(engine)
    assert (entry.action, entry.count, entry.filter["target"]) == ("bulk_replay", 1, "erp")
    fragment = await console.get(start.headers["location"], headers={"hx-request": "true"})
    assert fragment.text.lstrip().startswith('<div id="progress"') and "<html" not in fragment.text


async def test_bad_filters_are_a_422_page_and_unknown_ids_a_404(
    console: httpx.AsyncClient, seeded: Seeded
) -> None:
    await log_in(console, OPERATOR_TOKEN)
    bad = await console.get("/console/deliveries?status=lost&since=yesterday")
    assert bad.status_code == 422
    assert "unknown status" in bad.text and "not a time" in bad.text
    missing = await console.get("/console/deliveries/01a23b2b-3be5-773f-afb3-015485c5a1c3")
    assert missing.status_code == 404 and "no delivery" in missing.text
    assert (await console.get("/console/events/not-a-uuid")).status_code == 422
    assert (await console.get("/console/audit?since=soon")).status_code == 422


async def test_pages_follow_the_keyset_cursor(
    console: httpx.AsyncClient, seeded: Seeded, engine: AsyncEngine, monkeypatch: object
) -> None:
    await log_in(console, OPERATOR_TOKEN)
    import app.console.pages as pages

    monkeypatch.setattr(pages, "PAGE_SIZE", 2)  # type: ignore[attr-defined]
    seen: list[str] = []
    url: str | None = "/console/deliveries"
    while url:
        page = await console.get(url)
        seen += re.findall(r'href="/console/deliveries/([0-9a-f-]{36})"', page.text)
        found = re.search(r'href="([^"]+)" rel="next"', page.text)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == set(seeded.deliveries.values())


async def test_the_audit_log_is_searchable(
    console: httpx.AsyncClient, seeded: Seeded, engine: AsyncEngine
) -> None:
    csrf = await log_in(console, OPERATOR_TOKEN)
    await console.post(
        "/console/targets/erp/pause", data={"csrf": csrf, "reason": "maintenance window"}
    )
    await console.post("/console/targets/ww/pause", data={"csrf": csrf, "reason": "WW upgrade"})
    await execute(engine, "UPDATE audit_log SET at = now() - interval '2 days' WHERE target = 'ww'")
    found = await console.get("/console/audit?q=maintenance")
    assert "maintenance window" in found.text and "WW upgrade" not in found.text
    recent = await console.get("/console/audit?since=1d")
    assert "maintenance window" in recent.text and "WW upgrade" not in recent.text
    everything = await console.get("/console/audit")
    assert "maintenance window" in everything.text and "WW upgrade" in everything.text


async def test_the_overview_shows_backlog_chart_and_state(
    console: httpx.AsyncClient, seeded: Seeded, engine: AsyncEngine
) -> None:
    csrf = await log_in(console, OPERATOR_TOKEN)
    await console.post("/console/targets/log/pause", data={"csrf": csrf, "reason": "log rotation"})
    page = (await console.get("/console")).text
    assert "erp, last 24 h: 1 delivered, 0 retrying, 1 dead" in page
    assert 'href="/console/deliveries?target=erp&amp;status=dead">1 dead</a>' in page
    assert 'href="/console/deliveries?target=ww&amp;status=pending">2 pending</a>' in page
    assert "by oscar: log rotation" in page and "1 held" in page
    assert page.count('<rect class="delivered"') == 1 and page.count('<rect class="dead"') == 1
