"""The outbox statements' own arguments, pinned on stored rows: how many a claim takes and for
how long, which attempts the breaker counts, and where its ratio tips.

The drain tests reach these statements through whole deliveries; these tests hold each argument
still, so a claim without its limit or lease, or a breaker counting the wrong window, fails here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.hubconfig import CircuitBreaker
from app.outbox.claims import claim
from app.outbox.states import Gate, judge_breaker

TARGET = "erp"


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[Any]:
    """The pool's asyncpg connection, as the drain uses it."""
    async with engine.connect() as connection:
        yield (await connection.get_raw_connection()).driver_connection


async def _due_deliveries(conn: Any, subjects: list[str]) -> list[uuid.UUID]:
    """One event and one due delivery per subject (distinct subjects: none waits for another)."""
    ids = []
    for subject in subjects:
        event_id, delivery_id = uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            "INSERT INTO events (id, source, type, subject, dedup_key, headers, payload, raw_body)"
            " VALUES ($1, 'bitrix24', 'ONCRMDEALUPDATE', $2, $3, '{}', '{}', '')",
            event_id,
            subject,
            f"key:{event_id}",
        )
        await conn.execute(
            "INSERT INTO deliveries (id, event_id, route, target, ordering_key, next_attempt_at)"
            " VALUES ($1, $2, 'deals', $3, $4, now() - interval '1 second')",
            delivery_id,
            event_id,
            TARGET,
            subject,
        )
        ids.append(delivery_id)
    return ids


async def _attempts(conn: Any, outcomes: list[str], *, age: timedelta = timedelta()) -> None:
    """Attempts on the target, each `age` old."""
    [delivery_id] = await _due_deliveries(conn, [f"deal/{uuid.uuid4()}"])
    for number, outcome in enumerate(outcomes, start=1):
        await conn.execute(
            "INSERT INTO delivery_attempts (delivery_id, target, number, started_at, duration_ms,"
            " outcome) VALUES ($1, $2, $3, now() - $4::interval, 5, $5)",
            delivery_id,
            TARGET,
            number,
            age,
            outcome,
        )


async def test_a_claim_takes_at_most_its_limit_and_leases_them(conn: Any) -> None:
    await _due_deliveries(conn, ["deal/1", "deal/2", "deal/3"])
    token = uuid.uuid4()

    claimed = await claim(conn, TARGET, 2, token, 30.0)

    assert len(claimed) == 2
    rows = await conn.fetch(
        "SELECT status, claim_token, lease_until - updated_at AS lease FROM deliveries"
        " ORDER BY status"
    )
    assert sorted(row["status"] for row in rows) == ["delivering", "delivering", "pending"]
    for row in rows:
        if row["status"] == "delivering":
            assert row["claim_token"] == token
            assert row["lease"] == timedelta(seconds=30)  # the lease it was given, not none
        else:
            assert row["claim_token"] is None


BREAKER = CircuitBreaker(
    failure_ratio=0.5, window=timedelta(seconds=60), min_attempts=4, open_for=timedelta(seconds=30)
)


async def _judge(conn: Any) -> Gate:
    return await judge_breaker(conn, TARGET, BREAKER, probe_ok=None, failed=True)


async def test_the_breaker_opens_at_exactly_its_ratio_and_minimum(conn: Any) -> None:
    # 4 attempts (the minimum), 2 of them retryable failures (exactly half): it opens.
    await _attempts(conn, ["retry", "retry", "ok", "ok"])

    assert await _judge(conn) is Gate.OPEN
    state = await conn.fetchrow(
        "SELECT breaker_open_until - updated_at AS open_for FROM target_states WHERE target = $1",
        TARGET,
    )
    assert state["open_for"] == timedelta(seconds=30)


async def test_the_breaker_stays_closed_below_its_ratio(conn: Any) -> None:
    # 4 attempts, 1 failure: a quarter is below half.
    await _attempts(conn, ["retry", "ok", "ok", "ok"])

    assert await _judge(conn) is Gate.CLOSED
    assert await conn.fetchval("SELECT count(*) FROM target_states") == 0


async def test_the_breaker_stays_closed_below_its_minimum_of_attempts(conn: Any) -> None:
    await _attempts(conn, ["retry", "retry", "retry"])  # all failed, but only 3 of 4

    assert await _judge(conn) is Gate.CLOSED


async def test_the_breaker_counts_only_the_attempts_of_its_window(conn: Any) -> None:
    # Failures older than the window are the past: with one recent success, nothing opens.
    await _attempts(conn, ["retry"] * 6, age=timedelta(minutes=5))
    await _attempts(conn, ["ok"])

    assert await _judge(conn) is Gate.CLOSED
