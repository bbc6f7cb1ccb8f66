"""coalesce: latest — a due delivery with newer waiting ones of the same subject and route gives way to the newest.

Bitrix24 fires several ONCRM*UPDATE events for one save, and a consumer that reads the record back only needs the
latest. When a claimed head has newer waiting deliveries (same target, ordering key and route), the head and every
waiting one between it and the newest end `superseded`, each linked to the newest, which becomes the head and is
claimed next. Nothing is lost: the newest is sent, and it is the one that carries the record's state.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.hubconfig import HubConfig

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


def coalescing_routes(hub: HubConfig) -> frozenset[str]:
    """The names of the routes configured with `coalesce: latest`."""
    return frozenset(route.name for route in hub.routes if route.coalesce == "latest")


async def supersede_stale(
    conn: Any, rows: list[Any], token: uuid.UUID, routes: frozenset[str]
) -> list[Any]:
    """Supersede the claimed heads that have newer waiting deliveries; return the rows still to send.

    Runs in the claim's transaction, on the claim's own rows (``token``), so no other worker holds them.
    """
    heads = [row["id"] for row in rows if row["route"] in routes]
    if not heads:
        return rows
    superseded = {record["id"] for record in await conn.fetch(_SUPERSEDE, heads, token)}
    return [row for row in rows if row["id"] not in superseded]
