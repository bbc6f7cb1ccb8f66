"""The audit listing, the stats, and the admin API in the OpenAPI document."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.admin import deps
from app.support import actions
from tests.admin.support import (
    OPERATOR,
    VIEWER,
    AdminHub,
    Seeded,
    assert_problem,
    execute,
)


async def test_the_audit_listing_shows_every_mutation(
    admin: AdminHub, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actions, "BATCH", 1)
    dead, contact = seeded.deliveries["dead"], seeded.deliveries["contact"]
    calls = [
        (f"/admin/v1/deliveries/{dead}/replay", {"reason": "one"}),
        (f"/admin/v1/deliveries/{dead}/edit-replay", {"data": {"a": 1}, "reason": "two"}),
        (f"/admin/v1/deliveries/{contact}/cancel", {"reason": "three"}),
        ("/admin/v1/targets/erp/pause", {"reason": "four"}),
        ("/admin/v1/targets/erp/resume", {"reason": "five"}),
        ("/admin/v1/replays", {"status": "pending", "source": "onec", "reason": "six"}),
        ("/admin/v1/replays", {"status": "pending", "dry_run": True, "reason": "not logged"}),
    ]
    for path, body in calls:
        reply = await admin.client.post(path, json=body, headers=OPERATOR)
        assert reply.status_code in (200, 202), reply.text

    reply = await admin.client.get("/admin/v1/audit", headers=VIEWER)
    assert reply.status_code == 200, reply.text
    listed = [
        (e["actor"], e["action"], e["target"], e["delivery_id"], e["count"], e["reason"])
        for e in reversed(reply.json())
    ]
    assert listed == [
        ("oscar", "replay", "erp", dead, 1, "one"),
        ("oscar", "replay", "erp", dead, 1, "two"),
        ("oscar", "edit", "erp", dead, 1, "two"),
        ("oscar", "cancel", "ww", contact, 1, "three"),
        # The replayed delivery was waiting again: held by the pause, released by the resume.
        ("oscar", "pause", "erp", None, 1, "four"),
        ("oscar", "resume", "erp", None, 1, "five"),
        ("oscar", "bulk_replay", None, None, 2, "six"),
    ]
    newest = reply.json()[0]
    assert newest["filter"] == {"status": ["pending"], "source": "onec"}
    assert newest["at"] and newest["details"]["job_id"]


async def test_audit_since_and_limit(admin: AdminHub, seeded: Seeded) -> None:
    for name in ("dead", "delivered", "contact"):
        url = f"/admin/v1/deliveries/{seeded.deliveries[name]}/replay"
        assert (await admin.client.post(url, headers=OPERATOR)).status_code == 200
    await execute(admin.engine, "UPDATE audit_log SET at = now() - interval '2 days' WHERE id = 1")

    recent = (await admin.client.get("/admin/v1/audit?since=1d", headers=VIEWER)).json()
    assert [e["id"] for e in recent] == [3, 2]
    assert len((await admin.client.get("/admin/v1/audit?limit=1", headers=VIEWER)).json()) == 1
    problem = assert_problem(
        await admin.client.get("/admin/v1/audit?since=soon", headers=VIEWER), 422
    )
    assert problem["detail"].startswith("since: ")


async def test_stats_by_target_and_status_with_the_oldest_due(
    admin: AdminHub, seeded: Seeded
) -> None:
    await execute(
        admin.engine,
        "UPDATE deliveries SET next_attempt_at = now() - interval '10 minutes' WHERE id = :id",
        id=seeded.deliveries["contact"],
    )
    reply = await admin.client.get("/admin/v1/stats", headers=VIEWER)
    assert reply.status_code == 200, reply.text
    stats = reply.json()
    assert stats["by_status"] == {"dead": 1, "delivered": 1, "pending": 3}
    targets = stats["targets"]
    assert {name: t["by_status"] for name, t in targets.items()} == {
        "erp": {"delivered": 1, "dead": 1},
        "log": {"pending": 1},
        "ww": {"pending": 2},
    }
    assert targets["erp"]["oldest_due_seconds"] is None  # nothing waiting
    assert targets["ww"]["oldest_due_seconds"] >= 600
    assert targets["log"]["oldest_due_seconds"] >= 0


async def test_openapi_documents_the_admin_api(admin: AdminHub) -> None:
    spec = (await admin.client.get("/openapi.json")).json()
    admin_paths = {path for path in spec["paths"] if path.startswith("/admin/v1/")}
    assert admin_paths == {
        "/admin/v1/deliveries",
        "/admin/v1/deliveries/{delivery_id}",
        "/admin/v1/deliveries/{delivery_id}/replay",
        "/admin/v1/deliveries/{delivery_id}/edit-replay",
        "/admin/v1/deliveries/{delivery_id}/cancel",
        "/admin/v1/events",
        "/admin/v1/events/{event_id}",
        "/admin/v1/replays",
        "/admin/v1/replays/{job_id}",
        "/admin/v1/replays/{job_id}/cancel",
        "/admin/v1/targets",
        "/admin/v1/targets/{name}/pause",
        "/admin/v1/targets/{name}/resume",
        "/admin/v1/stats",
        "/admin/v1/audit",
    }
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    search = spec["paths"]["/admin/v1/deliveries"]["get"]
    assert {p["name"] for p in search["parameters"]} >= {"status", "since", "q", "cursor"}
    assert {"/healthz", "/readyz"} <= set(spec["paths"])
    # The Bitrix24 webhook is served by a plain route placed first; FastAPI's documents it.
    assert set(spec["paths"]["/webhooks/bitrix24"]) == {"post"}


async def test_shutdown_cancels_a_bulk_replay_and_leaves_it_to_resume(
    admin: AdminHub, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()

    async def stuck(*args: Any, **kwargs: Any) -> None:
        started.set()
        await asyncio.Event().wait()  # a batch that never ends, until cancelled

    monkeypatch.setattr(deps, "run_bulk_replay", stuck)
    runner: deps.ReplayRunner = admin.client.app.state.replays  # type: ignore[attr-defined]
    reply = await admin.client.post("/admin/v1/replays", json={}, headers=OPERATOR)
    job_id = reply.json()["id"]
    await asyncio.wait_for(started.wait(), 20)  # a bound, not a speed assertion
    [task] = runner.tasks.values()

    await runner.close()  # what the lifespan does on shutdown
    assert task.cancelled()
    assert runner.tasks == {}
    reply = await admin.client.get(f"/admin/v1/replays/{job_id}", headers=VIEWER)
    assert reply.json()["status"] == "running"  # the next API process resumes it
