"""Group commit: concurrent ingest requests share one transaction and one fsync.

Each request still waits for its own commit before it replies, so the ack never lies; grouping only
removes the per-request commit cost, which dominates ingest on a durable PostgreSQL. A batch request
submits all its rows at once: they always share one flush, so they commit (or fail) together.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import jsonio
from app.errors import ServiceUnavailable, Unprocessable
from app.ids import new_id
from app.ingest.held import HeldConnection
from app.ingest.idempotency import canonical_json, is_keyed
from app.ingest.model import IngestResult, NewEvent
from app.outbox import writes
from app.telemetry import COMMIT_DELAY_WAITS
from app.tracing import batch_span

log = logging.getLogger(__name__)

# Type, subject, dedup key and origin live in b-tree indexes (at most ~2.7 kB per entry): longer
# values would fail the whole shared statement, so they are refused with the one request.
MAX_IDENTITY_BYTES = 1024
_Key = tuple[str, str]  # (source, dedup_key)


@dataclass(slots=True)
class _Row:
    """An event prepared in its request's own task: serialised once, checked, digested."""

    event: NewEvent
    payload: str
    digest: bytes | None  # of the canonical payload, for events sent with an Idempotency-Key

    @property
    def key(self) -> _Key:
        return (self.event.source, self.event.dedup_key)


@dataclass(slots=True)
class _Submission:
    """One request's rows (one, or a batch's) and the future its request waits on."""

    rows: list[_Row]
    future: asyncio.Future[list[IngestResult]]

    @property
    def may_conflict(self) -> bool:
        """A batch with client keys: one conflicting row must undo the others."""
        return len(self.rows) > 1 and any(row.digest is not None for row in self.rows)


def prepare(event: NewEvent) -> _Row:
    """Serialise the payload and refuse what PostgreSQL could not store (422)."""
    keyed = is_keyed(event.dedup_key)
    payload_bytes = canonical_json(event.payload) if keyed else jsonio.dumps(event.payload)
    payload = payload_bytes.decode()
    texts = (event.type, event.subject, event.dedup_key, event.origin or "")
    if "\\u0000" in payload or any("\x00" in text for text in texts):
        # PostgreSQL stores no NUL in text or jsonb; refused here, it cannot fail a shared batch.
        raise Unprocessable(
            "the payload contains a NUL character (\\u0000), which cannot be stored"
        )
    if any(len(text.encode()) > MAX_IDENTITY_BYTES for text in texts):
        raise Unprocessable(
            f"the event's type, subject or key is longer than {MAX_IDENTITY_BYTES} bytes"
        )
    return _Row(event, payload, hashlib.sha256(payload_bytes).digest() if keyed else None)


class CommitDelay:
    """Whether a commit that would hold one request waits `seconds` for others to share it.

    PostgreSQL's `commit_delay` idea, decided by what waiting achieved: at moderate rates a commit
    often finds one request waiting, and each then pays its own statement, fsync wait, span and
    wake-ups (at 600 requests/s in-process, a 5 ms wait cut the API's CPU per request by 12-24 %, and
    PostgreSQL's by a third; benchmarks/README.md, "The commit delay"). A wait that gathers nobody
    (a lone sender that posts one request after another, or a quiet hour) only adds latency, so the
    delay stops when recent waits gathered less than one request on average, and is tried again
    once every `_PROBE_EVERY` commits.
    """

    _SMOOTHING = 0.2  # weight of the newest wait in the running average
    _PROBE_EVERY = 64

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.gathered = 1.0  # running average of requests a wait gathered; optimistic at start
        self.waits = 0  # how many commits waited (tests and diagnostics)
        self._commits = 0

    def wanted(self) -> bool:
        """Called when a commit would hold a single request."""
        self._commits += 1
        if self.seconds <= 0:
            return False
        return self.gathered >= 1.0 or self._commits % self._PROBE_EVERY == 0

    def record(self, gathered: int) -> None:
        """What the wait gathered: requests that arrived during it."""
        self.waits += 1
        COMMIT_DELAY_WAITS.inc()
        self.gathered += (gathered - self.gathered) * self._SMOOTHING


class GroupCommitter:
    """Collects submitted events and commits them in batches on a few connections."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = 256,
        flushers: int = 1,
        commit_delay: float = 0.0,
    ) -> None:
        # One flusher by default: while its commit waits for the fsync, the requests that arrive
        # queue up and go together in the next batch. A second flusher took each of them alone at
        # moderate rates, so every request paid a statement, a span and a wake-up of its own; at
        # high rates the API's CPU, not the commits, is the limit either way.
        self._engine = engine
        self._max_batch = max_batch
        self._flushers = flushers
        self._queue: asyncio.Queue[_Submission] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.delay = CommitDelay(commit_delay)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self._flushers)]

    async def stop(self) -> None:
        """Let queued events commit, then stop the flushers."""
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def submit(self, event: NewEvent) -> IngestResult:
        """Store the event and its deliveries; returns once they are committed."""
        return (await self.submit_many([event]))[0]

    async def submit_many(self, events: Sequence[NewEvent]) -> list[IngestResult]:
        """Store a batch's events in one transaction; a row that cannot be stored names its index."""
        rows = []
        for index, event in enumerate(events):
            try:
                rows.append(prepare(event))
            except Unprocessable as exc:
                if len(events) == 1:
                    raise
                raise Unprocessable(f"row {index}: {exc.detail}", index=index) from None
        future: asyncio.Future[list[IngestResult]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Submission(rows, future))
        return await future

    async def _run(self) -> None:
        held = HeldConnection(self._engine)
        try:
            await self._commit_batches(held)
        finally:
            await held.close()

    async def _commit_batches(self, held: HeldConnection) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.empty() and self.delay.wanted():
                await asyncio.sleep(self.delay.seconds)
                self.delay.record(self._queue.qsize())
            size = len(batch[0].rows)
            while size < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1].rows)
            try:
                traces = [row.event.traceparent for s in batch for row in s.rows]
                with batch_span("ingest group commit", traces):
                    outcomes = await held.run(partial(self._flush, submissions=batch, held=held))
            except Exception as exc:
                # The transaction did not commit (or we cannot know that it did): nobody gets a 200.
                log.warning("ingest commit failed for %d events: %s", size, _reason(exc))
                error = ServiceUnavailable("the database is unavailable; retry later")
                for submission in batch:
                    if not submission.future.done():
                        submission.future.set_exception(error)
            else:
                for submission, outcome in zip(batch, outcomes, strict=True):
                    if not submission.future.done():
                        submission.future.set_result(outcome)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _flush(
        self, conn: AsyncConnection, submissions: Sequence[_Submission], held: HeldConnection
    ) -> list[list[IngestResult]]:
        rows = [row for submission in submissions for row in submission.rows]
        # The first of several identical requests in one batch is the one stored.
        firsts: dict[_Key, _Row] = {}
        for row in rows:
            firsts.setdefault(row.key, row)
        batch = list(firsts.values())
        deliveries = [(r.event, d) for r in batch for d in r.event.deliveries]
        args = (
            [r.event.id for r in batch],
            [r.event.source for r in batch],
            [r.event.type for r in batch],
            [r.event.subject for r in batch],
            [r.event.dedup_key for r in batch],
            [r.event.origin for r in batch],
            [r.event.occurred_at for r in batch],
            [r.event.request_id for r in batch],
            [orjson.dumps(r.event.headers).decode() for r in batch],
            [r.payload for r in batch],
            [r.event.raw_body for r in batch],
            [r.digest for r in batch],
            [new_id() for _ in deliveries],
            [e.id for e, _ in deliveries],
            [d.route for _, d in deliveries],
            [d.target for _, d in deliveries],
            [e.subject for e, _ in deliveries],
            [r.event.traceparent for r in batch],
        )
        # Usually one statement, one round trip, its own transaction: events, deliveries, NOTIFY.
        # A keyed batch needs an explicit transaction: a conflicting row must undo its siblings.
        atomic = any(submission.may_conflict for submission in submissions)
        raw = await held.driver(conn)
        assert raw is not None
        async with raw.transaction() if atomic else contextlib.nullcontext():
            new_ids = await writes.insert_events(raw, args)
            missing = [key for key, row in firsts.items() if row.event.id not in new_ids]
            existing = await _existing(raw, missing)
            outcomes = [
                [_outcome(row, firsts, new_ids, existing) for row in submission.rows]
                for submission in submissions
            ]
            undo = _undone(submissions, outcomes, new_ids)
            if undo:
                await writes.delete_events(raw, undo)
        return outcomes


async def _existing(raw: Any, keys: list[_Key]) -> dict[_Key, tuple[uuid.UUID, bytes | None]]:
    """The stored event id and payload digest of each key that was already taken."""
    if not keys:
        return {}
    found = await writes.stored_events(raw, [k[0] for k in keys], [k[1] for k in keys])
    return {(r["source"], r["dedup_key"]): (r["id"], r["payload_hash"]) for r in found}


def _outcome(
    row: _Row,
    firsts: dict[_Key, _Row],
    new_ids: set[uuid.UUID],
    existing: dict[_Key, tuple[uuid.UUID, bytes | None]],
) -> IngestResult:
    first = firsts[row.key]
    if first is row and row.event.id in new_ids:
        return IngestResult(row.event.id, duplicate=False, deliveries=len(row.event.deliveries))
    if first.event.id in new_ids:
        original, digest = first.event.id, first.digest
    else:
        original, digest = existing[row.key]
        if first is row and original == row.event.id:
            # Our own row, committed by an attempt whose reply was lost (see HeldConnection.run).
            return IngestResult(row.event.id, duplicate=False, deliveries=len(row.event.deliveries))
    # A stored event without a digest predates migration 0004: nothing to compare, a duplicate.
    conflict = row.digest is not None and digest is not None and digest != row.digest
    return IngestResult(original, duplicate=True, deliveries=0, conflict=conflict)


def _undone(
    submissions: Sequence[_Submission], outcomes: list[list[IngestResult]], new_ids: set[uuid.UUID]
) -> list[uuid.UUID]:
    """The rows just inserted for batches that have a conflicting row: all or nothing."""
    return [
        row.event.id
        for submission, results in zip(submissions, outcomes, strict=True)
        if submission.may_conflict and any(result.conflict for result in results)
        for row in submission.rows
        if row.event.id in new_ids
    ]


def _reason(exc: BaseException) -> str:
    """A short cause without SQL parameters (they may hold payload data)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return type(exc.orig).__name__
    return type(exc).__name__
