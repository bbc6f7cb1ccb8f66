"""Pause and resume while drains run: never a deadlock, never a 5xx, rows consistent afterwards."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import text

from dispatch.deliver import drain
from tests.admin.support import OPERATOR, AdminHub, Seeded, audit_rows, delivery_rows
from tests.dispatch.harness import deal, eventually, ingest

# What a drain recording a failed batch does: its deliveries' rows first, then the breaker's row.
_TOUCH = "UPDATE deliveries SET updated_at = now() WHERE id = CAST(:id AS uuid)"
_OPEN_BREAKER = (
    "INSERT INTO target_states (target, breaker_open_until, updated_at) "
    "VALUES ('ww', now() - interval '1 s', now()) ON CONFLICT (target) DO UPDATE "
    "SET breaker_open_until = excluded.breaker_open_until, updated_at = now()"
)
_PAUSE_WAITS = (
    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity "
    "WHERE wait_event_type = 'Lock' AND query ILIKE 'update deliveries%' AND pid <> pg_backend_pid())"
)


async def test_pause_while_a_batch_records_is_no_deadlock(admin: AdminHub, seeded: Seeded) -> None:
    """A recording batch holds a waiting row, then wants target_states: pause must not deadlock."""
    async with admin.engine.connect() as recorder:
        await recorder.execute(text(_TOUCH), {"id": seeded.deliveries["contact"]})
        pause = asyncio.create_task(
            admin.client.post("/admin/v1/targets/ww/pause", json={}, headers=OPERATOR)
        )

        async def pause_done_or_waiting() -> bool:
            async with admin.engine.connect() as probe:  # a fresh statistics snapshot each time
                return pause.done() or bool((await probe.execute(text(_PAUSE_WAITS))).scalar())

        await eventually(pause_done_or_waiting)
        await recorder.execute(text(_OPEN_BREAKER))  # waits for the pause to commit, if at all
        await recorder.commit()
        reply = await pause

    assert reply.status_code == 200, reply.text
    statuses = {str(r.id): r.status for r in await delivery_rows(admin.engine)}
    # The row the batch held was skipped, not waited for; the next drain holds it.
    assert statuses[seeded.deliveries["order_ww"]] == "held"
    await admin.drain("ww")
    statuses = {str(r.id): r.status for r in await delivery_rows(admin.engine)}
    assert [statuses[seeded.deliveries[n]] for n in ("contact", "order_ww")] == ["held", "held"]
    assert not [r for r in admin.fake.requests if r.path == "/ww"]
    assert [(e.action, e.target) for e in await audit_rows(admin.engine)] == [("pause", "ww")]


async def test_pause_and_resume_repeatedly_while_drains_run(admin: AdminHub) -> None:
    admin.fake.set_default(delay=0.005)
    await ingest(admin.client, *(deal(n) for n in range(1, 61)))
    stop = asyncio.Event()

    async def drains() -> None:
        while not stop.is_set():
            await asyncio.gather(drain(admin.rt, "erp", 5), drain(admin.rt, "erp", 5))
            await asyncio.sleep(0)

    workers = asyncio.create_task(drains())
    replies = []
    for cycle in range(12):
        for action in ("pause", "resume"):
            path = f"/admin/v1/targets/erp/{action}"
            replies.append(
                await admin.client.post(path, json={"reason": f"{cycle}"}, headers=OPERATOR)
            )
    stop.set()
    await workers

    assert [r.status_code for r in replies if r.status_code != 200] == []
    while await drain(admin.rt, "erp", 5):  # what the relay's next passes would do
        pass
    rows = await delivery_rows(admin.engine)
    assert Counter(r.status for r in rows) == {"delivered": 60}
    assert all(r.attempt_count == 1 and r.claim_token is None for r in rows)
    keys = Counter(r.headers["idempotency-key"] for r in admin.fake.requests)
    assert set(keys) == {str(r.id) for r in rows} and set(keys.values()) == {1}
    assert len(await audit_rows(admin.engine)) == 24
