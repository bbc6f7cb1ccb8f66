"""Retention: remove old, finished events with their deliveries and attempts, in bounded batches.

`purge()` is what `mmhub purge --older-than 30d [--include-dead]` runs: it deletes the events
received before the cutoff whose deliveries are all final (delivered or cancelled; dead too with
`include_dead`; an event without deliveries counts as done), one short transaction per batch, and
never touches an event with a pending, retrying, delivering or held delivery.

Safe while live:
- Rows are taken with `FOR UPDATE SKIP LOCKED`: the event first (then no delivery can be added to
  it: the foreign key check would need its row), then its final deliveries. An event whose delivery
  a worker, a replay or a cancel holds right now is left for the next run, never waited on; a
  delivery that left its final state meanwhile (a replay committed) no longer qualifies when it is
  locked. The delete then only touches rows the batch already holds, so it never waits either
  (`lock_timeout` is a guard). Ingest only inserts new events; a re-sent duplicate of an event a
  batch is deleting waits for that batch's commit, then is stored as a new event.
- `duty_cycle` (default 0.5) rests after each batch as long as the batch took, so the purge uses
  at most about half of one connection's time and backs off by itself when the database is busy.

Cheap at any size, index-driven (no schema change). One batch is:
1. an index range scan of `events(received_at)` starting at a keyset cursor `(received_at, id)`
   where the previous batch stopped (so a run never re-reads the index entries its earlier batches
   deleted, nor the events it left in place), `LIMIT batch`, with `NOT EXISTS` an active delivery
   as one probe of `deliveries(event_id)` per candidate;
2. the candidates' deliveries through `deliveries(event_id) = ANY(…)`: their states, then the lock;
3. their attempts counted index-only on `delivery_attempts(delivery_id, number)`;
4. `DELETE FROM events WHERE id = ANY(…)` by primary key; `ON DELETE CASCADE` deletes each
   event's deliveries through `deliveries(event_id)` and each delivery's attempts through
   `delivery_attempts(delivery_id, number)` (the RI triggers' generic plans are index scans).

Measured by `make bench-purge`; the figures are in benchmarks/README.md.

Why not time partitioning: with `events` partitioned by `received_at`, retention would be a
`DROP PARTITION`, but a unique index on a partitioned table must include the partition key, so the
global `UNIQUE (source, dedup_key)` that ingest deduplicates on (`INSERT … ON CONFLICT DO NOTHING`)
could not exist; `deliveries.event_id` would need a composite foreign key with `received_at`; and a
partition can only be dropped whole, while retention must keep events with active deliveries (and
dead ones without `include_dead`). The index-driven purge is flat per batch (see the bench) and
runs far faster than the ingest it must keep up with: it is the equivalent, without those costs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import DeliveryStatus

DEFAULT_BATCH = 1000
# Half of the time in batches, half resting: see the measurements above.
DEFAULT_DUTY_CYCLE = 0.5
# A guard only: every row a batch deletes is already locked by it, so nothing should ever wait.
LOCK_TIMEOUT = "5s"

_START = datetime(1, 1, 1, tzinfo=UTC)
_NIL = uuid.UUID(int=0)

# Candidates: the next `batch` events before the cutoff in (received_at, id) order after the
# cursor, with no delivery outside the final states; rows another transaction holds are skipped,
# not waited on. `received_at >= :after_at` is the index range condition; the row comparison breaks
# ties (a group commit gives a whole batch of events the same received_at). `OFFSET 0` keeps the
# NOT EXISTS a per-candidate probe of deliveries(event_id): as an anti-join the planner may prefer
# reading every delivery once per batch, which is what must not happen on a large table.
_CANDIDATES = text("""
SELECT e.id, e.received_at
FROM events e
WHERE e.received_at < :cutoff
  AND e.received_at >= :after_at
  AND (e.received_at, e.id) > (:after_at, :after_id)
  AND NOT EXISTS (
      SELECT 1 FROM deliveries d
      WHERE d.event_id = e.id AND d.status <> ALL(CAST(:final AS text[]))
      OFFSET 0)
ORDER BY e.received_at, e.id
LIMIT :batch
FOR UPDATE OF e SKIP LOCKED
""")

# The candidates' deliveries, and whether all are final. None can be added while we hold the
# events (the foreign key check needs a lock on the event row).
_DELIVERY_STATES = text("""
SELECT event_id, count(*) AS n, bool_and(status = ANY(CAST(:final AS text[]))) AS done
FROM deliveries
WHERE event_id = ANY(CAST(:events AS uuid[]))
GROUP BY event_id
""")

# Those we can lock and that are (still, as of the lock) final: a replay or a cancel that committed
# meanwhile is seen here, one in progress holds its row and is skipped.
_LOCK_DELIVERIES = text("""
SELECT id, event_id FROM deliveries
WHERE event_id = ANY(CAST(:events AS uuid[])) AND status = ANY(CAST(:final AS text[]))
FOR UPDATE SKIP LOCKED
""")

_COUNT_ATTEMPTS = text("""
SELECT count(*) FROM delivery_attempts WHERE delivery_id = ANY(CAST(:deliveries AS uuid[]))
""")

# Deliveries and attempts follow by ON DELETE CASCADE (an index lookup per row at each level).
_DELETE_EVENTS = text("DELETE FROM events WHERE id = ANY(CAST(:events AS uuid[]))")


def final_statuses(*, include_dead: bool) -> tuple[str, ...]:
    """The delivery states an event may be purged in."""
    final = (
        DeliveryStatus.DELIVERED.value,
        DeliveryStatus.CANCELLED.value,
        DeliveryStatus.SUPERSEDED.value,
        DeliveryStatus.SUPPRESSED.value,
    )
    return (*final, DeliveryStatus.DEAD.value) if include_dead else final


def cutoff_before(older_than: timedelta, *, now: datetime | None = None) -> datetime:
    """The cutoff for `--older-than`: events received before it are old enough to purge."""
    if older_than <= timedelta(0):
        raise ValueError("the retention period must be positive")
    return (now or datetime.now(UTC)) - older_than


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a purge run's scan stopped: the last candidate it looked at."""

    received_at: datetime
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One batch: what it deleted, what it left, where the next batch starts."""

    events: int
    deliveries: int
    attempts: int
    examined: int  # candidates taken from the index (<= batch)
    kept: int  # candidates whose delivery became active meanwhile (a replay committed)
    busy: int  # candidates left because another transaction held one of their deliveries
    cursor: Cursor | None  # the last candidate; None when there was none
    exhausted: bool  # fewer than `batch` candidates: nothing is left before the cutoff


@dataclass
class PurgeReport:
    """Totals of a purge run (`batches` counts the transactions that found candidates)."""

    events: int = 0
    deliveries: int = 0
    attempts: int = 0
    batches: int = 0
    seconds: float = 0.0
    kept: int = 0  # old events replayed while the run looked at them
    busy: int = 0  # old events a worker or an operator held during the run; a later run gets them
    last_batch_seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list, repr=False)


async def purge_step(
    session: AsyncSession,
    cutoff: datetime,
    *,
    include_dead: bool,
    batch: int = DEFAULT_BATCH,
    after: Cursor | None = None,
) -> BatchResult:
    """Delete up to `batch` purgeable events before `cutoff` (after `after`) and what hangs on them.

    Runs in the caller's transaction; the caller commits right after, so the locks are short.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    final = list(final_statuses(include_dead=include_dead))
    start = after or Cursor(_START, _NIL)
    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    params = {"cutoff": cutoff, "after_at": start.received_at, "after_id": start.id}
    rows = (await session.execute(_CANDIDATES, {**params, "final": final, "batch": batch})).all()
    if not rows:
        return BatchResult(0, 0, 0, 0, 0, 0, None, exhausted=True)
    candidates = [row.id for row in rows]
    states = {
        row.event_id: (row.n, row.done)
        for row in await session.execute(_DELIVERY_STATES, {"events": candidates, "final": final})
    }
    done = [e for e in candidates if states.get(e, (0, True))[1]]
    held: dict[uuid.UUID, list[uuid.UUID]] = {}
    if any(e in states for e in done):
        locked = await session.execute(_LOCK_DELIVERIES, {"events": done, "final": final})
        for delivery_id, event_id in locked:
            held.setdefault(event_id, []).append(delivery_id)
    doomed = [e for e in done if len(held.get(e, ())) == states.get(e, (0, True))[0]]
    deliveries = [d for e in doomed for d in held.get(e, ())]
    attempts = 0
    if deliveries:
        count = await session.execute(_COUNT_ATTEMPTS, {"deliveries": deliveries})
        attempts = count.scalar_one()
    if doomed:
        await session.execute(_DELETE_EVENTS, {"events": doomed})
    return BatchResult(
        events=len(doomed),
        deliveries=len(deliveries),
        attempts=attempts,
        examined=len(rows),
        kept=len(rows) - len(done),
        busy=len(done) - len(doomed),
        cursor=Cursor(rows[-1].received_at, rows[-1].id),
        exhausted=len(rows) < batch,
    )


async def purge_batch(
    session: AsyncSession,
    cutoff: datetime,
    *,
    include_dead: bool,
    batch: int = DEFAULT_BATCH,
    after: Cursor | None = None,
) -> int:
    """Delete up to `batch` purgeable events with their deliveries and attempts; returns how many.

    Runs in the caller's transaction (commit right after). Without `after`, the scan starts at the
    oldest event: repeated calls are correct, but `purge()` (which carries the cursor) is cheaper.
    """
    result = await purge_step(session, cutoff, include_dead=include_dead, batch=batch, after=after)
    return result.events


async def purge(
    sessions: async_sessionmaker[AsyncSession],
    cutoff: datetime,
    *,
    include_dead: bool,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[PurgeReport], None] | None = None,
    duty_cycle: float = DEFAULT_DUTY_CYCLE,
) -> PurgeReport:
    """Purge everything purgeable before `cutoff`, one committed transaction per batch.

    `progress` is called after every batch with the running totals. `duty_cycle` is the share of
    the time spent in batches: after a batch that took t seconds the purge rests
    t * (1 - duty_cycle) / duty_cycle, so it backs off by itself when the database is busy
    (1.0: no rest). Interrupting between batches loses nothing: what was committed is gone, the
    rest is still there for the next run.
    """
    if not 0 < duty_cycle <= 1:
        raise ValueError("duty_cycle must be in (0, 1]")
    report = PurgeReport()
    started = time.perf_counter()
    cursor: Cursor | None = None
    while True:
        began = time.perf_counter()
        async with sessions.begin() as session:
            step = await purge_step(
                session, cutoff, include_dead=include_dead, batch=batch, after=cursor
            )
        elapsed = time.perf_counter() - began
        if step.examined:
            _add(report, step, elapsed)
        report.seconds = time.perf_counter() - started
        if step.examined and progress is not None:
            progress(report)
        if step.exhausted:
            return report
        cursor = step.cursor
        if duty_cycle < 1:
            await asyncio.sleep(elapsed * (1 - duty_cycle) / duty_cycle)


def _add(report: PurgeReport, step: BatchResult, elapsed: float) -> None:
    report.events += step.events
    report.deliveries += step.deliveries
    report.attempts += step.attempts
    report.kept += step.kept
    report.busy += step.busy
    report.batches += 1
    report.last_batch_seconds = elapsed
    report.batch_seconds.append(elapsed)
