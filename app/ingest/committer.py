"""Group commit: concurrent ingest requests share one transaction and one fsync.

Each request still waits for its own commit before it replies, so the ack never lies; grouping only
removes the per-request commit cost, which dominates ingest on a durable PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import select, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ServiceUnavailable, Unprocessable
from app.ids import new_id
from app.ingest.model import NewEvent, Outcome
from app.models import Event

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "mmhub_deliveries"
_FLUSH_SQL = f"""
WITH new_events AS (
  INSERT INTO events (id, source, type, subject, dedup_key, origin, occurred_at, request_id,
                      headers, payload, raw_body)
  SELECT id, source, type, subject, dedup_key, origin, occurred_at, request_id,
         headers::jsonb, payload::jsonb, raw_body
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
              $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::bytea[])
       AS e(id, source, type, subject, dedup_key, origin, occurred_at, request_id,
            headers, payload, raw_body)
  ON CONFLICT (source, dedup_key) DO NOTHING
  RETURNING id
), new_deliveries AS (
  INSERT INTO deliveries (id, event_id, route, target, ordering_key)
  SELECT d.id, d.event_id, d.route, d.target, d.ordering_key
  FROM unnest($12::uuid[], $13::uuid[], $14::text[], $15::text[], $16::text[])
       AS d(id, event_id, route, target, ordering_key)
  WHERE d.event_id IN (SELECT id FROM new_events)
  RETURNING 1
)
SELECT id, (SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE EXISTS (SELECT FROM new_deliveries))
FROM new_events
"""  # noqa: S608 - a constant
# An event with its payload already serialised (once, in the request's own task).
_Item = tuple[tuple[NewEvent, str], "asyncio.Future[Outcome]"]


class GroupCommitter:
    """Collects submitted events and commits them in batches on a few connections."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 256, flushers: int = 2) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._flushers = flushers
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

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

    async def submit(self, event: NewEvent) -> Outcome:
        """Store the event and its deliveries; returns once they are committed."""
        payload = storable_payload(event)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(((event, payload), future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                outcomes = await self._flush([item for item, _ in batch])
            except Exception as exc:
                # The transaction did not commit (or we cannot know that it did): nobody gets a 200.
                log.warning("ingest commit failed for %d events: %s", len(batch), _reason(exc))
                error = ServiceUnavailable("the database is unavailable; retry later")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _flush(self, items: Sequence[tuple[NewEvent, str]]) -> list[Outcome]:
        events = [event for event, _ in items]
        payloads = {id(event): payload for event, payload in items}
        # The first of several identical requests in one batch is the one stored.
        firsts: dict[tuple[str, str], NewEvent] = {}
        for event in events:
            firsts.setdefault((event.source, event.dedup_key), event)
        batch = list(firsts.values())
        deliveries = [(e, d) for e in batch for d in e.deliveries]
        args = (
            [e.id for e in batch],
            [e.source for e in batch],
            [e.type for e in batch],
            [e.subject for e in batch],
            [e.dedup_key for e in batch],
            [e.origin for e in batch],
            [e.occurred_at for e in batch],
            [e.request_id for e in batch],
            [orjson.dumps(e.headers).decode() for e in batch],
            [payloads[id(e)] for e in batch],
            [e.raw_body for e in batch],
            [new_id() for _ in deliveries],
            [e.id for e, _ in deliveries],
            [d.route for _, d in deliveries],
            [d.target for _, d in deliveries],
            [e.subject for e, _ in deliveries],
        )
        async with self._engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            # One statement, one round trip, its own transaction: events, deliveries, NOTIFY.
            rows = await raw.fetch(_FLUSH_SQL, *args)
            new_ids = {row[0] for row in rows}
            missing = [k for k, e in firsts.items() if e.id not in new_ids]
            existing = await self._existing_ids(conn, missing)
        return [_outcome(e, firsts, new_ids, existing) for e in events]

    @staticmethod
    async def _existing_ids(
        conn: Any, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], uuid.UUID]:
        if not keys:
            return {}
        result = await conn.execute(
            select(Event.source, Event.dedup_key, Event.id).where(
                tuple_(Event.source, Event.dedup_key).in_(keys)
            )
        )
        return {(source, key): event_id for source, key, event_id in result}


def storable_payload(event: NewEvent) -> str:
    """The payload as JSON text; Unprocessable when PostgreSQL could not store the event."""
    payload = orjson.dumps(event.payload).decode()
    texts = (event.type, event.subject, event.dedup_key, event.origin or "")
    if "\\u0000" in payload or any("\x00" in text for text in texts):
        # PostgreSQL stores no NUL in text or jsonb; refused here, it cannot fail a shared batch.
        raise Unprocessable(
            "the payload contains a NUL character (\\u0000), which cannot be stored"
        )
    return payload


def _event_row(event: NewEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "dedup_key": event.dedup_key,
        "origin": event.origin,
        "occurred_at": event.occurred_at,
        "request_id": event.request_id,
        "headers": event.headers,
        "payload": event.payload,
        "raw_body": event.raw_body,
    }


def _delivery_row(event: NewEvent, route: str, target: str) -> dict[str, Any]:
    return {
        "id": new_id(),
        "event_id": event.id,
        "route": route,
        "target": target,
        "ordering_key": event.subject,
    }


def _outcome(
    event: NewEvent,
    firsts: dict[tuple[str, str], NewEvent],
    new_ids: set[uuid.UUID],
    existing: dict[tuple[str, str], uuid.UUID],
) -> Outcome:
    key = (event.source, event.dedup_key)
    first = firsts[key]
    if first is event and event.id in new_ids:
        return Outcome(event.id, duplicate=False, deliveries=len(event.deliveries))
    original = first.id if first.id in new_ids else existing[key]
    return Outcome(original, duplicate=True, deliveries=0)


def _reason(exc: BaseException) -> str:
    """A short cause without SQL parameters (they may hold payload data)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return type(exc.orig).__name__
    return type(exc).__name__
