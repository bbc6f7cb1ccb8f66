"""The drain's statements on deliveries and their attempts: what is due, claim, supersede, record.

Written once, in asyncpg's style (`$n` parameters, run on the pool's own asyncpg connection: see
`dispatch.deliver`), and used by the relay, the drain's hand-over and the drain alike.
"""

from __future__ import annotations

import uuid
from typing import Any

# A delivery is due: waiting and its time has come, or claimed by a worker whose lease ran out.
DUE = """(d.status IN ('pending', 'retrying', 'delivering') AND d.next_attempt_at <= now()
     AND (d.status <> 'delivering' OR d.lease_until < now()))"""

_DUE_TARGETS = f"""
SELECT t.target FROM unnest($1::text[]) AS t(target)
WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.target = t.target AND {DUE})
"""  # noqa: S608 (DUE is a constant of this module)
_ANY_DUE = f"SELECT EXISTS (SELECT 1 FROM deliveries d WHERE d.target = $1 AND {DUE})"  # noqa: S608

# Ordering: a delivery is claimable only when no earlier delivery with the same (target, ordering
# key) is still on its way, so a retrying head holds the ones behind it and every other key flows.
_CLAIM = f"""
WITH due AS (
    SELECT d.id FROM deliveries d
    WHERE d.target = $1 AND {DUE}
      AND NOT EXISTS (
          SELECT 1 FROM deliveries e
          WHERE e.target = d.target AND e.ordering_key = d.ordering_key AND e.seq < d.seq
            AND e.status IN ('pending', 'delivering', 'retrying', 'held')
          -- OFFSET 0 keeps this a per-row probe of ix_deliveries_active_order (target,
          -- ordering_key, seq). Without it the planner may turn it into an anti-join scanning every
          -- active delivery of the target once per candidate, which stale statistics (a backlog
          -- that built up faster than autoanalyze ran) made it choose.
          OFFSET 0)
    ORDER BY d.next_attempt_at
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d
SET status = 'delivering', claim_token = $3, updated_at = now(),
    lease_until = now() + make_interval(secs => $4::float8)
FROM due, events ev
WHERE d.id = due.id AND ev.id = d.event_id
RETURNING d.id, d.route, d.attempt_count, d.manual_next, d.retry_offset, d.payload_override,
          ev.id AS event_id, ev.source, ev.type, ev.subject,
          ev.origin, ev.occurred_at, ev.received_at, ev.payload, ev.request_id, ev.traceparent
"""  # noqa: S608

# Waiting deliveries that a newer one may stand in for (a claimed head is 'delivering').
_SUPERSEDE = """
WITH heads AS (
    SELECT d.id, d.target, d.ordering_key, d.route, d.seq FROM deliveries d
    WHERE d.id = ANY($1::uuid[]) AND d.claim_token = $2
),
newest AS (
    SELECT h.id AS head_id, h.target, h.ordering_key, h.route, h.seq AS head_seq,
           n.id AS newest_id, n.seq AS newest_seq
    FROM heads h
    CROSS JOIN LATERAL (
        SELECT e.id, e.seq FROM deliveries e
        WHERE e.target = h.target AND e.ordering_key = h.ordering_key AND e.route = h.route
          AND e.seq > h.seq AND e.status IN ('pending', 'retrying', 'held')
        ORDER BY e.seq DESC
        LIMIT 1
    ) n
)
UPDATE deliveries x
SET status = 'superseded', superseded_by = nw.newest_id, claim_token = NULL, lease_until = NULL,
    updated_at = now()
FROM newest nw
WHERE x.target = nw.target AND x.ordering_key = nw.ordering_key AND x.route = nw.route
  AND x.seq >= nw.head_seq AND x.seq < nw.newest_seq
  AND (x.id = nw.head_id OR x.status IN ('pending', 'retrying', 'held'))
RETURNING x.id
"""

# The attempts and the deliveries' next states in one statement; a settle applies only while the
# claim token is still ours.
_RECORD = """
WITH attempts AS (
    INSERT INTO delivery_attempts (delivery_id, target, number, started_at, duration_ms,
                                   http_status, error_class, error, response_excerpt, outcome,
                                   manual)
    SELECT a.id, $1, a.number, a.started_at, a.duration_ms, a.http_status, a.error_class,
           a.error, a.excerpt, a.outcome, a.manual
    FROM unnest($2::uuid[], $3::int[], $4::timestamptz[], $5::int[], $6::int[], $7::text[],
                $8::text[], $9::text[], $10::text[], $11::bool[])
         AS a(id, number, started_at, duration_ms, http_status, error_class, error, excerpt,
              outcome, manual)
)
UPDATE deliveries d
SET status = u.status, attempt_count = d.attempt_count + 1,
    next_attempt_at = coalesce(u.next, d.next_attempt_at), last_error = u.error,
    delivered_at = u.delivered, lease_until = NULL, claim_token = NULL, manual_next = false,
    updated_at = now()
FROM unnest($2::uuid[], $12::uuid[], $13::text[], $14::timestamptz[], $15::text[],
            $16::timestamptz[]) AS u(id, token, status, next, error, delivered)
WHERE d.id = u.id AND d.claim_token = u.token
"""


async def due_targets(conn: Any, targets: list[str]) -> list[str]:
    """The targets, of these, with at least one due delivery."""
    return [row["target"] for row in await conn.fetch(_DUE_TARGETS, targets)]


async def any_due(conn: Any, target: str) -> bool:
    """Whether the target has a due delivery."""
    return bool(await conn.fetchval(_ANY_DUE, target))


async def claim(conn: Any, target: str, limit: int, token: uuid.UUID, lease: float) -> list[Any]:
    """Claim up to `limit` due deliveries (heads of their ordering keys) with `token` for `lease`
    seconds; each row carries its event."""
    return list(await conn.fetch(_CLAIM, target, limit, token, lease))


async def supersede(conn: Any, heads: list[uuid.UUID], token: uuid.UUID) -> set[uuid.UUID]:
    """Supersede these claimed heads that have newer waiting deliveries; returns the ones that did."""
    return {row["id"] for row in await conn.fetch(_SUPERSEDE, heads, token)}


async def record(conn: Any, target: str, columns: list[list[Any]]) -> None:
    """Write a batch's attempts and next states (`columns` in `_RECORD`'s parameter order)."""
    await conn.execute(_RECORD, target, *columns)
