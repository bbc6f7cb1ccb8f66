"""`mmhub replay`, `deliveries cancel` and `deliveries edit-replay`: rows changed, audit written."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import ReplayJob
from tests.cli.helpers import Mmhub, audit_rows, count_rows, rows, seed

BULK = ("replay", "--status", "dead", "--target", "erp", "--since", "1h")


async def test_replay_one_makes_it_due_and_manual_with_an_audit_row(
    mmhub: Mmhub, engine: AsyncEngine
) -> None:
    [one, other] = await seed(engine, status="dead", attempts=4, count=2)
    result = await mmhub("replay", one, "--reason", "1C is back", "--actor", "anna@support")
    assert result.exit_code == 0, result.output
    assert "1 replayed by anna@support" in result.stdout

    after = await rows(engine)
    assert (after[one].status, after[one].manual_next, after[one].retry_offset) == (
        "pending",
        True,
        4,
    )
    assert after[other].status == "dead"
    [entry] = await audit_rows(engine)
    assert (entry.actor, entry.action, entry.reason, entry.count) == (
        "anna@support",
        "replay",
        "1C is back",
        1,
    )
    assert str(entry.delivery_id) == one
    assert entry.details == {"previous_status": "dead"}


async def test_replay_by_ids_defaults_the_actor_and_speaks_json(
    mmhub: Mmhub, engine: AsyncEngine
) -> None:
    ids = await seed(engine, status="dead", count=2)
    result = await mmhub("replay", *ids, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["matched"], summary["replayed"]) == (2, 2)
    assert [(r["id"], r["previous_status"], r["status"]) for r in summary["deliveries"]] == [
        (ids[0], "dead", "pending"),
        (ids[1], "dead", "pending"),
    ]
    assert {e.actor.endswith("@cli") for e in await audit_rows(engine)} == {True}


async def test_replay_of_an_unknown_id_changes_nothing(mmhub: Mmhub, engine: AsyncEngine) -> None:
    [known] = await seed(engine, status="dead")
    missing = "0193e6a4-6a1b-7c3d-8e9f-0a1b2c3d4e5f"
    result = await mmhub("replay", known, missing)
    assert result.exit_code == 1
    assert f"no delivery {missing}" in result.stderr
    assert (await rows(engine))[known].status == "dead"
    assert await audit_rows(engine) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay"], "nothing to replay"),
        (["replay", "0193e6a4-6a1b-7c3d-8e9f-0a1b2c3d4e5f", "--status", "dead"], "not both"),
        (["replay", "--status", "nope"], "--status: unknown status"),
    ],
)
async def test_replay_usage_errors(mmhub: Mmhub, args: list[str], message: str) -> None:
    result = await mmhub(*args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output


async def test_bulk_dry_run_counts_and_changes_nothing(mmhub: Mmhub, engine: AsyncEngine) -> None:
    dead = await seed(engine, status="dead", count=3)
    await seed(engine, status="delivered", count=2)
    await seed(engine, target="ww", status="dead")
    before = {k: (r.status, r.updated_at) for k, r in (await rows(engine)).items()}

    result = await mmhub(*BULK, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "3 deliveries would be replayed" in result.stdout
    as_json = json.loads((await mmhub(*BULK, "--dry-run", "--json")).stdout)
    assert (as_json["dry_run"], as_json["matched"]) == (True, len(dead))
    assert as_json["filter"]["status"] == ["dead"]

    assert {k: (r.status, r.updated_at) for k, r in (await rows(engine)).items()} == before
    assert await audit_rows(engine) == []
    assert await count_rows(engine, "replay_jobs") == 0


async def test_bulk_over_100_without_yes_and_no_terminal_is_refused(
    mmhub: Mmhub, engine: AsyncEngine
) -> None:
    await seed(engine, status="dead", count=101)
    result = await mmhub(*BULK, "--reason", "1C back")
    assert result.exit_code == 1
    assert "101 deliveries" in result.stderr and "--yes" in result.stderr
    assert "Traceback" not in result.output
    assert {r.status for r in (await rows(engine)).values()} == {"dead"}
    assert await audit_rows(engine) == []
    assert await count_rows(engine, "replay_jobs") == 0


async def test_bulk_over_100_asks_a_person(
    mmhub: Mmhub, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cli.support.interactive", lambda: True)
    await seed(engine, status="dead", count=101)
    refused = await mmhub(*BULK, input="n\n")
    assert refused.exit_code == 1
    assert "Replay 101 deliveries?" in refused.output
    assert {r.status for r in (await rows(engine)).values()} == {"dead"}

    accepted = await mmhub(*BULK, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert {r.status for r in (await rows(engine)).values()} == {"pending"}


async def test_bulk_with_yes_replays_them_all(mmhub: Mmhub, engine: AsyncEngine) -> None:
    dead = await seed(engine, status="dead", count=150, attempts=1)
    [delivered] = await seed(engine, status="delivered")
    result = await mmhub(*BULK, "--reason", "1C back", "--yes", "--actor", "anna@support")
    assert result.exit_code == 0, result.output
    assert "150 of 150 deliveries replayed by anna@support" in result.stdout

    after = await rows(engine)
    assert {(after[i].status, after[i].manual_next) for i in dead} == {("pending", True)}
    assert after[delivered].status == "delivered"
    [entry] = await audit_rows(engine)
    assert (entry.actor, entry.action, entry.count, entry.reason) == (
        "anna@support",
        "bulk_replay",
        150,
        "1C back",
    )
    assert entry.filter["status"] == ["dead"] and entry.filter["target"] == "erp"
    job = await _only_job(engine)
    assert (job.status, job.total, job.done) == ("finished", 150, 150)


async def test_bulk_json_reports_the_job(mmhub: Mmhub, engine: AsyncEngine) -> None:
    await seed(engine, status="dead", count=2)
    result = await mmhub(*BULK, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["matched"], summary["replayed"], summary["status"]) == (2, 2, "finished")
    assert summary["job_id"] == str((await _only_job(engine)).id)


async def test_bulk_over_the_cap_needs_force(
    mmhub: Mmhub, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.support.actions.BULK_CAP", 3)
    await seed(engine, status="dead", count=4)
    refused = await mmhub(*BULK, "--yes")
    assert refused.exit_code == 1
    assert "over the cap of 3" in refused.stderr and "--force" in refused.stderr
    assert {r.status for r in (await rows(engine)).values()} == {"dead"}
    assert await count_rows(engine, "replay_jobs") == 0

    forced = await mmhub(*BULK, "--yes", "--force")
    assert forced.exit_code == 0, forced.output
    assert {r.status for r in (await rows(engine)).values()} == {"pending"}


async def test_interrupting_a_bulk_replay_cancels_its_job(
    mmhub: Mmhub, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C cancels asyncio.run's task; here the task is cancelled after the first batch."""
    from app.support import bulk

    async def one_batch_then_ctrl_c(sessions: Any, job_id: Any, **kwargs: Any) -> Any:
        def progress(job: ReplayJob) -> None:
            kwargs["progress"](job)
            raise asyncio.CancelledError

        return await bulk.run_bulk_replay(sessions, job_id, batch=2, progress=progress)

    monkeypatch.setattr("cli.replay.run_bulk_replay", one_batch_then_ctrl_c)
    await seed(engine, status="dead", count=5)
    result = await mmhub(*BULK, "--actor", "anna@support")
    assert result.exit_code == 130
    assert "cancelled after 2 of 5" in result.stderr
    job = await _only_job(engine)
    assert (job.status, job.done) == ("cancelled", 2)
    assert sorted(r.status for r in (await rows(engine)).values()) == ["dead"] * 3 + ["pending"] * 2
    assert [(e.action, e.actor) for e in await audit_rows(engine)] == [
        ("bulk_replay", "anna@support"),
        ("cancel_bulk_replay", "anna@support"),
    ]


async def test_cancel_a_delivery(mmhub: Mmhub, engine: AsyncEngine) -> None:
    [delivery_id] = await seed(engine, status="retrying", attempts=1)
    result = await mmhub("deliveries", "cancel", delivery_id, "--reason", "duplicate order")
    assert result.exit_code == 0, result.output
    assert "cancelled (was retrying)" in result.stdout
    assert (await rows(engine))[delivery_id].status == "cancelled"
    [entry] = await audit_rows(engine)
    assert (entry.action, entry.reason) == ("cancel", "duplicate order")

    again = await mmhub("deliveries", "cancel", delivery_id)
    assert again.exit_code == 1
    assert "cannot be cancelled" in again.stderr


async def test_edit_and_replay_needs_a_reason_and_sends_the_corrected_data(
    mmhub: Mmhub, engine: AsyncEngine, tmp_path: Path
) -> None:
    [delivery_id] = await seed(engine, status="dead", attempts=1)
    corrected = tmp_path / "corrected.json"
    corrected.write_text(json.dumps({"number": "ЗК-000123", "sum": 1500}), encoding="utf-8")

    no_reason = await mmhub("deliveries", "edit-replay", delivery_id, "--data-file", str(corrected))
    assert no_reason.exit_code == 2
    assert "--reason" in no_reason.output
    blank = await mmhub(
        "deliveries", "edit-replay", delivery_id, "--data-file", str(corrected), "--reason", " "
    )
    assert blank.exit_code == 1 and "needs a reason" in blank.stderr
    not_json = tmp_path / "broken.json"
    not_json.write_text("{nope", encoding="utf-8")
    broken = await mmhub(
        "deliveries", "edit-replay", delivery_id, "--data-file", str(not_json), "--reason", "x"
    )
    assert broken.exit_code == 1 and "not valid JSON" in broken.stderr
    assert await audit_rows(engine) == []

    result = await mmhub(
        "deliveries",
        "edit-replay",
        delivery_id,
        "--data-file",
        str(corrected),
        "--reason",
        "wrong sum",
    )
    assert result.exit_code == 0, result.output
    row = (await rows(engine))[delivery_id]
    assert (row.status, row.manual_next) == ("pending", True)
    assert row.payload_override == {"number": "ЗК-000123", "sum": 1500}
    assert sorted(e.action for e in await audit_rows(engine)) == ["edit", "replay"]


async def _only_job(engine: AsyncEngine) -> Any:
    from sqlalchemy import select

    async with engine.connect() as conn:
        [job] = (await conn.execute(select(ReplayJob))).all()
    return job
