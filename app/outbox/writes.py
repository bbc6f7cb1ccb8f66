"""Ingest's statements: a batch of events with their deliveries in one statement (and the NOTIFY
that wakes the relay), the events already stored under the same keys, and undoing a batch that
must be all or nothing. asyncpg's style: the group commit runs them on its kept connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from app.outbox import NOTIFY_CHANNEL

_FLUSH_SQL = f"""
WITH new_events AS (
  INSERT INTO events (id, source, type, subject, dedup_key, origin, occurred_at, request_id,
                      headers, payload, raw_body, payload_hash, traceparent)
  SELECT id, source, type, subject, dedup_key, origin, occurred_at, request_id,
         headers::jsonb, payload::jsonb, raw_body, payload_hash, traceparent
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
              $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::bytea[], $12::bytea[],
              $18::text[])
       AS e(id, source, type, subject, dedup_key, origin, occurred_at, request_id,
            headers, payload, raw_body, payload_hash, traceparent)
  ON CONFLICT (source, dedup_key) DO NOTHING
  RETURNING id
), new_deliveries AS (
  INSERT INTO deliveries (id, event_id, route, target, ordering_key)
  SELECT d.id, d.event_id, d.route, d.target, d.ordering_key
  FROM unnest($13::uuid[], $14::uuid[], $15::text[], $16::text[], $17::text[])
       AS d(id, event_id, route, target, ordering_key)
  WHERE d.event_id IN (SELECT id FROM new_events)
  RETURNING 1
)
SELECT id, (SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE EXISTS (SELECT FROM new_deliveries))
FROM new_events
"""  # noqa: S608 - a constant
_EXISTING_SQL = """
SELECT e.source, e.dedup_key, e.id, e.payload_hash
FROM events e JOIN unnest($1::text[], $2::text[]) AS k(source, dedup_key) USING (source, dedup_key)
"""
_UNDO_SQL = "DELETE FROM events WHERE id = ANY($1::uuid[])"  # deliveries go with them (cascade)


async def insert_events(conn: Any, columns: Sequence[list[Any]]) -> set[uuid.UUID]:
    """Insert the events (`columns` in `_FLUSH_SQL`'s parameter order) and the deliveries of those
    that are new; returns the ids of the new ones (a duplicate's id is not among them)."""
    return {row[0] for row in await conn.fetch(_FLUSH_SQL, *columns)}


async def stored_events(conn: Any, sources: list[str], dedup_keys: list[str]) -> list[Any]:
    """The stored events (source, dedup_key, id, payload_hash) under these keys."""
    return list(await conn.fetch(_EXISTING_SQL, sources, dedup_keys))


async def delete_events(conn: Any, ids: list[uuid.UUID]) -> None:
    """Delete these events; their deliveries go with them (cascade)."""
    await conn.execute(_UNDO_SQL, ids)
