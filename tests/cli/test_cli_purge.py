"""`mmhub purge --older-than 30d [--include-dead]`: the CLI over app.outbox.retention, audited."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.cli.helpers import Mmhub, audit_rows, count_rows, rows, seed

OLD = timedelta(days=40)


async def test_purge_removes_old_finished_events_only(mmhub: Mmhub, engine: AsyncEngine) -> None:
    delivered = await seed(engine, status="delivered", age=OLD, attempts=1, count=3)
    dead = await seed(engine, status="dead", age=OLD, attempts=2)
    retrying = await seed(engine, status="retrying", age=OLD)
    recent = await seed(engine, status="delivered", age=timedelta(days=1))

    result = await mmhub("purge", "--older-than", "30d", "--batch", "2", "--actor", "ops")
    assert result.exit_code == 0, result.output
    assert "purged 3 events" in result.stdout

    left = await rows(engine)
    assert set(left) == {*dead, *retrying, *recent}
    assert not set(delivered) & set(left)
    assert await count_rows(engine, "delivery_attempts") == 2  # the dead delivery's
    [entry] = await audit_rows(engine)
    assert (entry.actor, entry.action, entry.count) == ("ops", "purge", 3)
    assert entry.details["include_dead"] is False


async def test_include_dead_and_json(mmhub: Mmhub, engine: AsyncEngine) -> None:
    await seed(engine, status="dead", age=OLD, attempts=2, count=2)
    result = await mmhub("purge", "--older-than", "30d", "--include-dead", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["events"], report["deliveries"], report["attempts"]) == (2, 2, 4)
    assert await count_rows(engine, "events") == 0


async def test_bad_age_is_a_clear_error(mmhub: Mmhub, engine: AsyncEngine) -> None:
    await seed(engine, status="delivered", age=OLD)
    result = await mmhub("purge", "--older-than", "a month")
    assert result.exit_code == 1
    assert "--older-than" in result.output
    assert "Traceback" not in result.output
    assert await count_rows(engine, "events") == 1
