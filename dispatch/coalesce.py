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
from app.outbox import claims


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
    superseded = await claims.supersede(conn, heads, token)
    return [row for row in rows if row["id"] not in superseded]
