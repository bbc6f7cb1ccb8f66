"""Purge batches: old finished events go with their deliveries and attempts; nothing else does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.db import make_sessionmaker
from app.ids import new_id
from app.outbox import retention
from app.outbox.retention import (
    LOCK_TIMEOUT,
    Cursor,
    PurgeReport,
    cutoff_before,
    purge,
    purge_batch,
    purge_step,
)
from tests.dispatch.harness import FORM, deal
from tests.http_app import HubClient

NOW = datetime.now(UTC)
CUTOFF = NOW - timedelta(days=30)
OLD = timedelta(days=45)
RECENT = timedelta(days=3)
ACTIVE = ("pending", "retrying", "delivering", "held")


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


async def add_event(
    conn: AsyncConnection,
    *,
    age: timedelta = OLD,
    statuses: Sequence[str] = ("delivered",),
    attempts: int = 1,
    received_at: datetime | None = None,
) -> uuid.UUID:
    """One event received `age` ago with a delivery per status, each with `attempts` attempts."""
    event_id = new_id()
    await conn.execute(
        text("""
        INSERT INTO events (id, source, type, subject, dedup_key, received_at, headers, payload,
                            raw_body)
        VALUES (:id, 'bitrix24', 'ONCRMDEALADD', 'deal/1', :key, :at, '{}', '{}', '\\x00')
        """),
        {"id": event_id, "key": str(event_id), "at": received_at or NOW - age},
    )
    for status in statuses:
        delivery_id = new_id()
        await conn.execute(
            text("""
            INSERT INTO deliveries (id, event_id, route, target, status, ordering_key)
            VALUES (:id, :event, 'r', 'erp', :status, 'deal/1')
            """),
            {"id": delivery_id, "event": event_id, "status": status},
        )
        await conn.execute(
            text("""
            INSERT INTO delivery_attempts (delivery_id, target, number, started_at, duration_ms,
                                           outcome)
            SELECT :id, 'erp', n, now(), 5, 'delivered' FROM generate_series(1, :n) n
            """),
            {"id": delivery_id, "n": attempts},
        )
    return event_id


async def add_events(engine: AsyncEngine, count: int, **kwargs: object) -> list[uuid.UUID]:
    async with engine.begin() as conn:
        return [await add_event(conn, **kwargs) for _ in range(count)]  # type: ignore[arg-type]


async def counts(engine: AsyncEngine) -> tuple[int, int, int]:
    async with engine.connect() as conn:
        row = (await conn.execute(text("""
                SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM deliveries),
                       (SELECT count(*) FROM delivery_attempts)
                """))).one()
    return int(row[0]), int(row[1]), int(row[2])


async def present(engine: AsyncEngine, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id FROM events WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": list(ids)}
        )
        return set(rows.scalars())


async def run_purge(
    sessions: async_sessionmaker[AsyncSession], *, include_dead: bool = False, batch: int = 1000
) -> PurgeReport:
    # A bound, not a speed assertion: purge must never sit waiting on a lock.
    return await asyncio.wait_for(
        purge(sessions, CUTOFF, include_dead=include_dead, batch=batch), timeout=20
    )


async def test_old_delivered_events_go_with_their_deliveries_and_attempts(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with engine.begin() as conn:
        done = await add_event(conn, statuses=("delivered", "cancelled"), attempts=3)
        bare = await add_event(conn, statuses=())  # no deliveries: nothing left to do
        recent = await add_event(conn, age=RECENT, attempts=2)

    report = await run_purge(sessions)

    assert await present(engine, [done, bare, recent]) == {recent}
    assert await counts(engine) == (1, 1, 2)
    assert (report.events, report.deliveries, report.attempts) == (2, 2, 6)
    assert report.batches == 1 and report.busy == 0 and report.seconds > 0


async def test_recent_events_stay_whatever_their_state(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with engine.begin() as conn:
        kept = [
            await add_event(conn, age=RECENT, statuses=(status,))
            for status in ("delivered", "cancelled", "dead")
        ]
        # Just inside the retention period.
        kept.append(await add_event(conn, received_at=CUTOFF + timedelta(seconds=1)))
        edge = await add_event(conn, received_at=CUTOFF)  # not "before the cutoff"

    report = await run_purge(sessions, include_dead=True)

    assert await present(engine, [*kept, edge]) == {*kept, edge}
    assert report.events == 0 and report.batches == 0


async def test_dead_events_stay_unless_include_dead(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with engine.begin() as conn:
        dead = await add_event(conn, statuses=("dead",), attempts=6)
        mixed = await add_event(conn, statuses=("delivered", "dead"))
        delivered = await add_event(conn)

    first = await run_purge(sessions)
    assert await present(engine, [dead, mixed, delivered]) == {dead, mixed}
    assert (first.events, first.deliveries, first.attempts) == (1, 1, 1)

    second = await run_purge(sessions, include_dead=True)
    assert await present(engine, [dead, mixed]) == set()
    assert (second.events, second.deliveries, second.attempts) == (2, 3, 8)
    assert await counts(engine) == (0, 0, 0)


@pytest.mark.parametrize("status", ACTIVE)
async def test_events_with_an_active_delivery_stay(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], status: str
) -> None:
    async with engine.begin() as conn:
        busy = await add_event(conn, statuses=("delivered", status), attempts=2)
        busy_dead = await add_event(conn, statuses=("dead", status))
        done = await add_event(conn)

    report = await run_purge(sessions, include_dead=True)

    assert await present(engine, [busy, busy_dead, done]) == {busy, busy_dead}
    assert await counts(engine) == (2, 4, 6)
    assert (report.events, report.deliveries, report.attempts, report.busy) == (1, 1, 1, 0)


async def test_purge_batch_deletes_at_most_a_batch_and_later_batches_finish(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await add_events(engine, 25)
    kept = await add_events(engine, 3, age=RECENT)

    removed = []
    for _ in range(10):  # a bound: the loop must stop by itself well before this
        async with sessions.begin() as session:
            n = await purge_batch(session, CUTOFF, include_dead=False, batch=10)
        removed.append(n)
        if n == 0:
            break

    assert removed == [10, 10, 5, 0]
    assert await counts(engine) == (3, 3, 3)
    assert await present(engine, kept) == set(kept)


async def test_purge_loop_commits_batch_by_batch_and_stops(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await add_events(engine, 25, attempts=2)
    await add_events(engine, 2, statuses=("retrying",))
    seen: list[tuple[int, int]] = []

    async def remaining_old() -> int:
        async with engine.connect() as conn:
            query = "SELECT count(*) FROM events WHERE received_at < :cutoff"
            return int((await conn.execute(text(query), {"cutoff": CUTOFF})).scalar_one())

    def progress(report: PurgeReport) -> None:
        seen.append((report.batches, report.events))

    report = await asyncio.wait_for(
        purge(sessions, CUTOFF, include_dead=False, batch=10, progress=progress), timeout=20
    )

    assert seen == [(1, 10), (2, 20), (3, 25)]
    assert (report.events, report.deliveries, report.attempts, report.batches) == (25, 25, 50, 3)
    assert len(report.batch_seconds) == 3 and report.last_batch_seconds == report.batch_seconds[-1]
    assert await remaining_old() == 2


async def test_batch_bound_holds_among_events_received_in_the_same_instant(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A group commit gives a whole batch of events one received_at: the cursor breaks the tie."""
    at = NOW - OLD
    done = await add_events(engine, 23, received_at=at)
    busy = await add_events(engine, 4, received_at=at, statuses=("held",))

    report = await run_purge(sessions, batch=5)

    assert report.events == 23 and report.batches == 5
    assert await present(engine, [*done, *busy]) == set(busy)

    # One step at a time: each stays within its batch and starts after the previous one.
    await add_events(engine, 7, received_at=at)
    async with sessions.begin() as session:
        first = await purge_step(session, CUTOFF, include_dead=False, batch=5)
    assert (first.events, first.examined, first.exhausted) == (5, 5, False)
    assert first.cursor is not None
    async with sessions.begin() as session:
        second = await purge_step(session, CUTOFF, include_dead=False, batch=5, after=first.cursor)
    assert (second.events, second.examined, second.exhausted) == (2, 2, True)


async def test_a_locked_delivery_is_skipped_not_waited_on(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with engine.begin() as conn:
        held = await add_event(conn, statuses=("delivered", "cancelled"), attempts=2)
        free = [await add_event(conn) for _ in range(3)]

    async with engine.connect() as other:
        # A worker, a replay or a cancel holds one of the event's deliveries right now.
        await other.execute(
            text("""
            SELECT id FROM deliveries WHERE event_id = :event AND status = 'cancelled'
            FOR UPDATE
            """),
            {"event": held},
        )
        started = asyncio.get_running_loop().time()
        report = await run_purge(sessions)
        waited = asyncio.get_running_loop().time() - started
        assert await present(engine, [held, *free]) == {held}
        await other.rollback()

    assert waited < float(LOCK_TIMEOUT.removesuffix("s"))
    assert (report.events, report.deliveries, report.attempts, report.busy) == (3, 3, 3, 1)
    assert await counts(engine) == (1, 2, 4)

    # Once released, the next run takes it.
    again = await run_purge(sessions)
    assert (again.events, again.deliveries, again.attempts, again.busy) == (1, 2, 4, 0)
    assert await counts(engine) == (0, 0, 0)


async def test_a_locked_event_is_skipped_not_waited_on(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    held, free = await add_events(engine, 2)

    async with engine.connect() as other:
        # E.g. a second purge running at the same time.
        await other.execute(text("SELECT 1 FROM events WHERE id = :id FOR UPDATE"), {"id": held})
        report = await run_purge(sessions)
        await other.rollback()

    assert report.events == 1
    assert await present(engine, [held, free]) == {held}


async def test_a_replay_not_yet_committed_keeps_the_event(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    (event,) = await add_events(engine, 1, statuses=("dead",))

    async with engine.connect() as other:
        await other.execute(
            text("UPDATE deliveries SET status = 'pending' WHERE event_id = :event"),
            {"event": event},
        )
        report = await run_purge(sessions, include_dead=True)
        await other.commit()

    assert report.events == 0 and report.busy == 1
    # Committed, the replay makes the delivery active: still not purgeable.
    assert (await run_purge(sessions, include_dead=True)).events == 0
    assert await present(engine, [event]) == {event}


async def test_purge_batch_finds_purgeable_events_behind_active_ones(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Called alone (no cursor), purge_batch still gets past old events that must stay."""
    at = NOW - OLD
    busy = await add_events(engine, 15, received_at=at - timedelta(days=1), statuses=("retrying",))
    done = await add_events(engine, 5, received_at=at)

    removed = []
    for _ in range(5):
        async with sessions.begin() as session:
            removed.append(await purge_batch(session, CUTOFF, include_dead=False, batch=10))

    assert removed == [5, 0, 0, 0, 0]
    assert await present(engine, [*busy, *done]) == set(busy)


class Interleaved(AsyncSession):
    """A session that lets another transaction commit just before one of the purge's statements."""

    before: tuple[object, Callable[[], Awaitable[None]]] | None = None

    async def execute(self, statement: object, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        if Interleaved.before is not None and statement is Interleaved.before[0]:
            hook, Interleaved.before = Interleaved.before[1], None
            await hook()
        return await super().execute(statement, *args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("moment", ["_DELIVERY_STATES", "_LOCK_DELIVERIES"])
async def test_a_replay_committed_while_a_batch_runs_keeps_the_event(
    engine: AsyncEngine, moment: str
) -> None:
    """The candidate scan saw the delivery delivered; a replay commits before the batch locks it."""
    replayed, other = await add_events(engine, 2)

    async def replay() -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE deliveries SET status = 'pending' WHERE event_id = :e"),
                {"e": replayed},
            )

    Interleaved.before = (getattr(retention, moment), replay)
    async with async_sessionmaker(engine, class_=Interleaved).begin() as session:
        step = await asyncio.wait_for(
            purge_step(session, CUTOFF, include_dead=False, batch=10), timeout=20
        )

    assert Interleaved.before is None  # the replay did run in between
    assert step.examined == 2 and step.events == 1 and step.kept + step.busy == 1
    assert await present(engine, [replayed, other]) == {replayed}
    assert await counts(engine) == (1, 1, 1)


async def test_report_counts_match_the_rows_removed(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with engine.begin() as conn:
        for index in range(40):
            statuses = [("delivered", "cancelled", "dead", "pending")[index % 4]]
            statuses += ["delivered"] * (index % 3)
            await add_event(
                conn, age=OLD if index % 5 else RECENT, statuses=statuses, attempts=index % 4
            )
    before = await counts(engine)

    report = await run_purge(sessions, include_dead=True, batch=7)

    after = await counts(engine)
    removed = tuple(b - a for b, a in zip(before, after, strict=True))
    assert removed == (report.events, report.deliveries, report.attempts)
    assert report.events > 0 and report.attempts > 0


async def test_events_stored_by_the_real_ingest_are_purged(
    hub: HubClient, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ids = []
    for deal_id in (1, 2, 3):
        reply = await hub.post("/webhooks/bitrix24", content=deal(deal_id), headers=FORM)
        assert reply.status_code == 200, reply.text
        ids.append(uuid.UUID(reply.json()["event_id"]))
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE events SET received_at = received_at - interval '40 days' WHERE id = :id"),
            [{"id": ids[0]}, {"id": ids[1]}],
        )
        await conn.execute(
            text("UPDATE deliveries SET status = 'delivered' WHERE event_id = ANY(:ids)"),
            {"ids": ids},
        )
    _, deliveries, _ = await counts(engine)

    report = await run_purge(sessions)

    assert await present(engine, ids) == {ids[2]}
    assert report.events == 2 and report.deliveries == deliveries * 2 // 3
    # Deduplication remembers what retention keeps: a purged event sent again is a new one.
    again = await hub.post("/webhooks/bitrix24", content=deal(1), headers=FORM)
    assert again.status_code == 200 and again.json()["duplicate"] is False
    kept = await hub.post("/webhooks/bitrix24", content=deal(3), headers=FORM)
    assert kept.json()["duplicate"] is True and kept.json()["event_id"] == str(ids[2])


async def test_the_duty_cycle_rests_between_batches(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await add_events(engine, 30)

    report = await asyncio.wait_for(
        purge(sessions, CUTOFF, include_dead=False, batch=10, duty_cycle=0.25), timeout=20
    )

    # After each full batch, three times as long as it took (a lower bound, not a speed).
    busy = sum(report.batch_seconds)
    assert report.batches == 3 and report.events == 30
    rests = 3 * busy
    assert report.seconds >= busy + rests - 0.001 * report.batches
    with pytest.raises(ValueError, match="duty_cycle"):
        await purge(sessions, CUTOFF, include_dead=False, duty_cycle=0)
    with pytest.raises(ValueError, match="duty_cycle"):
        await purge(sessions, CUTOFF, include_dead=False, duty_cycle=1.5)


async def test_parameters_are_checked(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        with pytest.raises(ValueError, match="batch"):
            await purge_step(session, CUTOFF, include_dead=False, batch=0)
    with pytest.raises(ValueError, match="positive"):
        cutoff_before(timedelta(0))
    assert cutoff_before(timedelta(days=30), now=NOW) == NOW - timedelta(days=30)
    assert Cursor(NOW, new_id()).received_at == NOW
