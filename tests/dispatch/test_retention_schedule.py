"""Retention on a schedule: `retention:` in the YAML makes the relay purge, one relay at a time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.hubconfig import Retention
from app.settings import load_hub_config
from dispatch.retention import ACTOR, RETENTION_LOCK, retention_pass
from tests.dispatch.harness import eventually, hub_with_target
from tests.roles import Processes
from tests.test_retention import RECENT, add_events, counts

THIRTY_DAYS = Retention(older_than=timedelta(days=30))


async def audit_rows(engine: AsyncEngine) -> list[tuple[str, str, int, dict[str, object]]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT actor, action, count, details FROM audit_log"))
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_a_pass_purges_what_is_old_and_audits_it(engine: AsyncEngine) -> None:
    await add_events(engine, 3)  # 45 days old, delivered
    recent = await add_events(engine, 1, age=RECENT)
    report = await retention_pass(engine, THIRTY_DAYS)
    assert report is not None and report.events == 3
    async with engine.connect() as conn:
        left = (await conn.execute(text("SELECT id FROM events"))).scalars().all()
    assert left == recent
    [(actor, action, count, details)] = await audit_rows(engine)
    assert (actor, action, count) == (ACTOR, "purge", 3)
    assert details["older_than"] == "30d" and details["include_dead"] is False


async def test_a_pass_skips_while_another_relay_purges(engine: AsyncEngine) -> None:
    await add_events(engine, 2)
    async with engine.connect() as other_relay:
        await other_relay.execute(text("SELECT pg_advisory_lock(:key)"), {"key": RETENTION_LOCK})
        assert await retention_pass(engine, THIRTY_DAYS) is None
        assert await counts(engine) == (2, 2, 2)
        await other_relay.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": RETENTION_LOCK})
    assert await audit_rows(engine) == []
    report = await retention_pass(engine, THIRTY_DAYS)  # the lock was given back after the skip
    assert report is not None and report.events == 2


async def test_the_relay_runs_the_yaml_schedule(
    engine: AsyncEngine, urls: tuple[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "mmhub.yaml"
    hub = hub_with_target("http://127.0.0.1:9/erp") | {
        "retention": {"older_than": "30d", "every": "1h"}
    }
    config.write_text(yaml.safe_dump(hub), encoding="utf-8")
    assert load_hub_config(config).retention == Retention(
        older_than=timedelta(days=30), every=timedelta(hours=1)
    )
    await add_events(engine, 2)
    recent = await add_events(engine, 1, age=RECENT)
    relay = Processes(urls, config)
    try:
        relay.start("relay")

        async def purged() -> bool:
            return await counts(engine) == (1, 1, 1)

        await eventually(purged, seconds=60)
    finally:
        relay.stop_all()
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT id FROM events"))).scalars().all() == recent
    [(actor, _, count, _)] = await audit_rows(engine)
    assert (actor, count) == (ACTOR, 2)
