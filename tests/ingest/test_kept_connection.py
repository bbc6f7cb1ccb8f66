"""The group commit keeps its connections between batches, and outlives losing them."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.dispatch.harness import FORM, deal
from tests.http_app import HubClient


async def test_a_batch_after_its_connection_was_killed_still_commits(
    hub: HubClient, engine: AsyncEngine
) -> None:
    first = await hub.post("/webhooks/bitrix24", content=deal(1), headers=FORM)
    assert first.status_code == 200, first.text
    # What a database restart does to the flushers' kept connections (and every other one).
    async with engine.connect() as conn:
        killed = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        )
    assert killed >= 1

    second = await hub.post("/webhooks/bitrix24", content=deal(2), headers=FORM)
    assert second.status_code == 200, second.text
    assert second.json()["duplicate"] is False
    async with engine.connect() as conn:
        stored = await conn.scalar(text("SELECT count(*) FROM events"))
        deliveries = await conn.scalar(text("SELECT count(*) FROM deliveries"))
    assert stored == 2
    assert deliveries == first.json()["deliveries"] + second.json()["deliveries"]
