"""Bulk replay: a dry run only counts, the cap, progress to the end, cancel, resume after a restart.

A dry run writes no audit row: it changes nothing, and the audit log records changes.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.admin.deps import ReplayRunner
from app.outbox.filters import DeliveryFilter
from app.settings import Settings
from app.support import actions
from app.support.bulk import run_bulk_replay
from tests.admin.support import (
    OPERATOR,
    VIEWER,
    AdminHub,
    Seeded,
    assert_problem,
    audit_rows,
    delivery_rows,
    job_rows,
)
from tests.dispatch.harness import eventually
from tests.http_app import running_app


def sessions_of(admin: AdminHub) -> async_sessionmaker[AsyncSession]:
    return admin.client.app.state.sessions  # type: ignore[attr-defined, no-any-return]


async def job(admin: AdminHub, job_id: str) -> dict[str, Any]:
    reply = await admin.client.get(f"/admin/v1/replays/{job_id}", headers=VIEWER)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def manual(admin: AdminHub) -> set[str]:
    """Ids of the deliveries a replay made due (their next attempt is manual)."""
    return {str(row.id) for row in await delivery_rows(admin.engine) if row.manual_next}


async def test_dry_run_counts_and_changes_nothing(admin: AdminHub, seeded: Seeded) -> None:
    before = await delivery_rows(admin.engine)
    reply = await admin.client.post(
        "/admin/v1/replays",
        json={"status": "dead,pending", "dry_run": True, "reason": "checking"},
        headers=OPERATOR,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"dry_run": True, "matched": 4, "cap": 10_000}
    narrow = {"status": ["dead"], "target": "erp", "since": "1h", "dry_run": True}
    reply = await admin.client.post("/admin/v1/replays", json=narrow, headers=OPERATOR)
    assert reply.json()["matched"] == 1
    assert await delivery_rows(admin.engine) == before
    assert await audit_rows(admin.engine) == []
    assert await job_rows(admin.engine) == []


async def test_a_bad_filter_in_the_body_is_422_naming_it(admin: AdminHub, seeded: Seeded) -> None:
    for body, name in (({"status": ["gone"]}, "status"), ({"until": "soon"}, "until")):
        reply = await admin.client.post("/admin/v1/replays", json=body, headers=OPERATOR)
        problem = assert_problem(reply, 422)
        assert problem["errors"][0]["loc"] == ["body", name]
    reply = await admin.client.post("/admin/v1/replays", json={"colour": "red"}, headers=OPERATOR)
    assert_problem(reply, 422)
    assert await job_rows(admin.engine) == []


async def test_over_the_cap_only_when_forced(
    admin: AdminHub, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actions, "BULK_CAP", 3)
    before = await delivery_rows(admin.engine)
    reply = await admin.client.post("/admin/v1/replays", json={"reason": "all"}, headers=OPERATOR)
    problem = assert_problem(reply, 422)
    assert problem["matched"] == 5
    assert "cap of 3" in problem["detail"]
    assert await delivery_rows(admin.engine) == before
    assert (await audit_rows(admin.engine), await job_rows(admin.engine)) == ([], [])

    dry = await admin.client.post("/admin/v1/replays", json={"dry_run": True}, headers=OPERATOR)
    assert dry.json() == {"dry_run": True, "matched": 5, "cap": 3}
    forced = {"reason": "all of them", "force": True}
    reply = await admin.client.post("/admin/v1/replays", json=forced, headers=OPERATOR)
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["id"]

    async def finished() -> bool:
        return bool((await job(admin, job_id))["status"] == "finished")

    await eventually(finished)
    assert await manual(admin) == seeded.ids(*seeded.deliveries)


async def test_progress_reaches_the_total_and_is_audited(
    admin: AdminHub, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actions, "BATCH", 1)
    reply = await admin.client.post(
        "/admin/v1/replays",
        json={"target": "ww", "since": "1h", "reason": "WW lost its database"},
        headers=OPERATOR,
    )
    assert reply.status_code == 202, reply.text
    started = reply.json()
    assert (started["status"], started["total"], started["actor"]) == ("running", 2, "oscar")
    assert started["filter"]["target"] == "ww" and "since" in started["filter"]

    async def finished() -> bool:
        return bool((await job(admin, started["id"]))["status"] == "finished")

    await eventually(finished)
    assert (await job(admin, started["id"]))["done"] == 2
    assert await manual(admin) == seeded.ids("contact", "order_ww")
    [entry] = await audit_rows(admin.engine)
    assert (entry.actor, entry.action, entry.target, entry.count) == (
        "oscar",
        "bulk_replay",
        "ww",
        2,
    )
    assert (entry.reason, entry.filter) == ("WW lost its database", started["filter"])
    assert entry.details == {"job_id": started["id"]}

    await admin.drain("ww")
    for name in ("contact", "order_ww"):
        url = f"/admin/v1/deliveries/{seeded.deliveries[name]}"
        delivery = (await admin.client.get(url, headers=VIEWER)).json()
        assert [a["manual"] for a in delivery["attempts"]] == [True]


async def test_cancel_a_running_job(
    admin: AdminHub, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing works the job in the background: this test drives its batches itself.
    async def idle(self: ReplayRunner, job_id: uuid.UUID) -> None:
        return None

    monkeypatch.setattr(ReplayRunner, "start", idle)
    reply = await admin.client.post("/admin/v1/replays", json={"reason": "r"}, headers=OPERATOR)
    job_id = reply.json()["id"]
    async with sessions_of(admin).begin() as session:
        await actions.replay_batch(session, uuid.UUID(job_id), size=1)
    assert (await job(admin, job_id))["done"] == 1

    url = f"/admin/v1/replays/{job_id}/cancel"
    reply = await admin.client.post(url, headers=OPERATOR)
    assert reply.status_code == 200, reply.text
    assert (reply.json()["status"], reply.json()["done"], reply.json()["total"]) == (
        "cancelled",
        1,
        5,
    )
    ended = await run_bulk_replay(sessions_of(admin), uuid.UUID(job_id), batch=1)
    assert (ended.status, ended.done) == ("cancelled", 1)
    assert len(await manual(admin)) == 1
    actions_logged = [(e.action, e.actor, e.count) for e in await audit_rows(admin.engine)]
    assert actions_logged == [("bulk_replay", "oscar", 5), ("cancel_bulk_replay", "oscar", 1)]
    # Cancelling an ended job changes nothing and is not logged again.
    assert (await admin.client.post(url, headers=OPERATOR)).json()["status"] == "cancelled"
    assert len(await audit_rows(admin.engine)) == 2
    missing = "/admin/v1/replays/00000000-0000-0000-0000-000000000000"
    assert_problem(await admin.client.get(missing, headers=VIEWER), 404)


async def test_a_job_left_running_resumes_when_the_api_starts(
    admin: AdminHub, seeded: Seeded, admin_settings: Settings
) -> None:
    async with sessions_of(admin).begin() as session:
        started = await actions.start_bulk_replay(
            session, DeliveryFilter(target="ww"), "oscar", "restart test", force=False
        )
    async with running_app(admin_settings) as client:

        async def finished() -> bool:
            reply = await client.get(f"/admin/v1/replays/{started.id}", headers=VIEWER)
            return bool(reply.json()["status"] == "finished")

        await eventually(finished)
    assert await manual(admin) == seeded.ids("contact", "order_ww")
