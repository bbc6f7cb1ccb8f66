"""Reconciliation: ask the portal which records changed and create the events Bitrix24 never sent.

A webhook that failed is gone for good (Bitrix24 never resends). Every `reconcile.every`, and on
`mmhub reconcile bitrix24`, the portal's records of each configured entity modified since a watermark (kept in
PostgreSQL per portal and entity) are listed with `crm.<entity>.list` (`>DATE_MODIFY`, pages of 50); for each change
that no received event covers, an event is created as the webhook would have brought it (`ONCRM<ENTITY>UPDATE`,
origin `reconcile`), routed and delivered like any other. A second sweep, or one after the real event arrived,
creates nothing: a received event covers its change, and a reconciled one has the change's own dedup key. One sweep
per portal at a time across relays (an advisory lock).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.bitrix24.portals import portal_key
from app.bitrix24.pulled import covered, pulled_event, timestamp
from app.bitrix24.rest import PortalClient
from app.hubconfig import HubConfig, Portal
from app.ingest.committer import GroupCommitter
from app.ingest.model import NewEvent
from app.models import Bitrix24Watermark

log = logging.getLogger(__name__)

FIRST_SWEEP = timedelta(hours=24)  # how far back a portal's first sweep looks, without --since


@dataclass
class Sweep:
    """What one sweep of one portal found and did."""

    listed: int = 0  # records modified since the watermark
    created: int = 0
    covered: int = 0  # changes a received event already carried
    duplicates: int = 0  # changes an earlier sweep already created
    locked: bool = False  # another relay was sweeping this portal
    would_create: list[str] = field(default_factory=list)  # dry run: the subjects


async def sweep(
    portal: Portal,
    client: PortalClient,
    engine: AsyncEngine,
    committer: GroupCommitter | None,
    hub: HubConfig,
    *,
    since: datetime | None = None,
    dry_run: bool = False,
) -> Sweep:
    """Reconcile every configured entity of ``portal``; ``committer`` may be None for a dry run."""
    assert portal.reconcile is not None
    result = Sweep()
    key = _lock_key(portal_key(portal))
    async with engine.connect() as lock:
        if not await lock.scalar(select(func.pg_try_advisory_lock(key))):
            result.locked = True
            return result
        try:
            for entity in portal.reconcile.entities:
                await _entity(
                    portal, client, engine, committer, hub, entity, since, dry_run, result
                )
        finally:
            await lock.execute(select(func.pg_advisory_unlock(key)))
            await lock.commit()
    return result


async def _entity(
    portal: Portal,
    client: PortalClient,
    engine: AsyncEngine,
    committer: GroupCommitter | None,
    hub: HubConfig,
    entity: str,
    since: datetime | None,
    dry_run: bool,
    result: Sweep,
) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    start = since or await _watermark(sessions, portal, entity) or datetime.now(UTC) - FIRST_SWEEP
    params = {
        # `>=`: a record saved in the watermark's own second is read again (its change is then a duplicate).
        "filter": {">=DATE_MODIFY": start.replace(microsecond=0).isoformat()},
        "order": {"DATE_MODIFY": "ASC", "ID": "ASC"},
        "select": ["ID", "DATE_MODIFY"],
    }
    newest = start
    async for row in client.list_all(f"crm.{entity}.list", params):
        changed = timestamp(row.get("DATE_MODIFY"))
        newest = max(newest, changed)
        result.listed += 1
        event = _event(hub, portal, entity, str(row.get("ID")), changed)
        async with engine.connect() as conn:
            if await covered(conn, event):
                result.covered += 1
                continue
        if dry_run or committer is None:
            result.would_create.append(event.subject)
            continue
        outcome = await committer.submit(event)
        result.duplicates += outcome.duplicate
        result.created += not outcome.duplicate
    if not dry_run and newest > start:
        await _advance(sessions, portal, entity, newest)


def _event(hub: HubConfig, portal: Portal, entity: str, number: str, changed: datetime) -> NewEvent:
    name = f"ONCRM{entity.upper()}UPDATE"
    return pulled_event(
        hub,
        portal,
        name,
        {"FIELDS": {"ID": number}},
        changed,
        dedup_key=f"reconcile:{portal_key(portal)}:{entity}:{number}:{changed.isoformat()}",
        origin="reconcile",
        extra={"modified_at": changed.isoformat()},
        raw={"ID": number, "DATE_MODIFY": changed.isoformat()},
    )


async def _watermark(
    sessions: async_sessionmaker[AsyncSession], portal: Portal, entity: str
) -> datetime | None:
    async with sessions() as session:
        found: datetime | None = await session.scalar(
            select(Bitrix24Watermark.modified_at).where(
                Bitrix24Watermark.portal == portal_key(portal), Bitrix24Watermark.entity == entity
            )
        )
        return found


async def _advance(
    sessions: async_sessionmaker[AsyncSession], portal: Portal, entity: str, newest: datetime
) -> None:
    values = {"modified_at": newest, "swept_at": func.now()}
    statement = insert(Bitrix24Watermark).values(portal=portal_key(portal), entity=entity, **values)
    async with sessions.begin() as session:
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[Bitrix24Watermark.portal, Bitrix24Watermark.entity],
                set_={
                    "modified_at": func.greatest(Bitrix24Watermark.modified_at, newest),
                    "swept_at": func.now(),
                },
            )
        )


def _lock_key(portal: str) -> int:
    return int.from_bytes(hashlib.sha256(f"reconcile:{portal}".encode()).digest()[:8], "big") >> 1
