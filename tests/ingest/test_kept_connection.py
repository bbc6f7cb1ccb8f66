"""The group commit keeps its connections between batches, and outlives losing them."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.dispatch.harness import FORM, deal
from tests.http_app import HubClient


async def test_a_batch_after_its_connection_was_killed_still_commits(
    hub: HubClient, engine: AsyncEngine
) -> None:
    # One after the other: each flusher (asyncio.Queue serves waiting getters in turn) commits one
    # batch, and so holds a connection.
    before = [await hub.post("/webhooks/bitrix24", content=deal(i), headers=FORM) for i in (1, 2)]
    assert [reply.status_code for reply in before] == [200, 200]
    # What a database restart does to the flushers' kept connections (and every other one).
    async with engine.connect() as conn:
        killed = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        )
    assert killed >= 1

    after = [await hub.post("/webhooks/bitrix24", content=deal(i), headers=FORM) for i in (3, 4)]
    assert [reply.status_code for reply in after] == [200, 200], after[0].text
    assert [reply.json()["duplicate"] for reply in after] == [False, False]
    async with engine.connect() as conn:
        stored = await conn.scalar(text("SELECT count(*) FROM events"))
        deliveries = await conn.scalar(text("SELECT count(*) FROM deliveries"))
    assert stored == 4
    assert deliveries == sum(reply.json()["deliveries"] for reply in before + after)
