"""Pull a portal's offline event queue into the outbox, so that no change made in the portal is lost.

Bitrix24 keeps one queue entry per changed object while the application is away (api-reference/events/offline-events.md).
A pull reads up to 50 entries with `event.offline.get` (`clear=0`: they are reserved under a `process_id`), commits
them as events with their deliveries, then clears that `process_id`; entries that cannot be taken are reported with
`event.offline.error` and written to the audit log. The `process_id` is kept in PostgreSQL until cleared, so a relay
that dies between commit and clear reads the same batch again: the events are duplicates then (their dedup key is the
entry's), and nothing is created twice. One relay pulls a portal at a time (an advisory lock).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.bitrix24.pulled import covered, pulled_event, timestamp
from app.bitrix24.rest import PortalClient
from app.hubconfig import HubConfig, Portal
from app.ingest.committer import GroupCommitter
from app.ingest.model import NewEvent
from app.models import Bitrix24OfflineState
from app.secrets import redact
from app.sources.errors import ShapeError
from app.support.actions import audit

log = logging.getLogger(__name__)

OFFLINE_CHANNEL = (
    "mmhub_offline"  # NOTIFY payload: the member_id whose queue has news (ONOFFLINEEVENT)
)
PAGE = 50


@dataclass
class PullReport:
    """What one pull did."""

    read: int = 0  # queue entries read
    created: int = 0  # events committed
    duplicates: int = 0  # entries already stored (a batch read again)
    covered: int = 0  # entries whose change an online event had brought
    refused: int = 0  # entries reported with event.offline.error
    calls: int = 0  # REST calls made
    locked: bool = False  # another relay was pulling this portal


class OfflinePuller:
    """Pulls one portal's queue through its application client."""

    def __init__(
        self,
        portal: Portal,
        client: PortalClient,
        engine: AsyncEngine,
        committer: GroupCommitter,
        hub: HubConfig,
    ) -> None:
        assert portal.offline is not None and portal.member_id is not None
        self._portal, self._client, self._engine = portal, client, engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._committer, self._hub = committer, hub
        self._member_id, self._connector = portal.member_id, portal.offline.auth_connector

    async def pull(self) -> PullReport:
        """Empty the queue (as it stands), page by page; a no-op while another relay pulls this portal."""
        report = PullReport()
        key = _lock_key(self._member_id)
        async with self._engine.connect() as lock:
            if not await lock.scalar(select(func.pg_try_advisory_lock(key))):
                report.locked = True
                return report
            try:
                process = await self._stored_process()
                while await self._page(process, report):
                    process = None
            finally:
                await lock.execute(select(func.pg_advisory_unlock(key)))
                await lock.commit()
        return report

    async def _page(self, process: str | None, report: PullReport) -> bool:
        """Read, commit and clear one page; False when the queue had nothing more."""
        params: dict[str, Any] = {"clear": 0, "limit": PAGE, "auth_connector": self._connector}
        if process:
            params["process_id"] = process  # the batch a dead relay reserved: read it again
        reply = await self._client.call("event.offline.get", params)
        report.calls += 1
        result = reply.result if isinstance(reply.result, Mapping) else {}
        entries = [e for e in result.get("events") or [] if isinstance(e, Mapping)]
        process = str(result.get("process_id") or process or "") or None
        if not entries or process is None:
            await self._remember(None)
            return False
        await self._remember(process)
        report.read += len(entries)
        taken, refused = self._convert(entries)
        await self._commit(taken, report)
        if refused:
            await self._refuse(process, refused, report)
        done = [str(entry["MESSAGE_ID"]) for entry, _ in taken]
        if done:
            await self._client.call(
                "event.offline.clear", {"process_id": process, "message_id": done}
            )
            report.calls += 1
        await self._remember(None)
        return True

    def _convert(
        self, entries: list[Mapping[str, Any]]
    ) -> tuple[list[tuple[Mapping[str, Any], NewEvent]], list[tuple[Mapping[str, Any], str]]]:
        taken, refused = [], []
        for entry in entries:
            try:
                taken.append((entry, self._event(entry)))
            except (ShapeError, KeyError, TypeError, ValueError) as exc:
                refused.append((entry, str(exc)[:200] or type(exc).__name__))
        return taken, refused

    def _event(self, entry: Mapping[str, Any]) -> NewEvent:
        message_id, changed = str(entry["MESSAGE_ID"]), timestamp(entry.get("TIMESTAMP_X"))
        data = entry.get("EVENT_DATA")
        return pulled_event(
            self._hub,
            self._portal,
            str(entry["EVENT_NAME"]),
            data if isinstance(data, Mapping) else {},
            changed,
            # The entry names one change of one object: read again after a crash, it is a duplicate.
            dedup_key=f"offline:{self._member_id}:{message_id}:{changed.isoformat()}",
            origin="offline",
            extra={
                "id": entry.get("ID"),
                "message_id": message_id,
                "changed_at": changed.isoformat(),
            },
            raw=dict(entry),
        )

    async def _commit(
        self, taken: list[tuple[Mapping[str, Any], NewEvent]], report: PullReport
    ) -> None:
        async with self._engine.connect() as conn:
            fresh = [event for _entry, event in taken if not await covered(conn, event)]
        report.covered += len(taken) - len(fresh)
        for event in fresh:  # each waits for its own commit; the group committer batches them
            outcome = await self._committer.submit(event)
            report.duplicates += outcome.duplicate
            report.created += not outcome.duplicate

    async def _refuse(
        self, process: str, refused: list[tuple[Mapping[str, Any], str]], report: PullReport
    ) -> None:
        ids = [str(entry.get("MESSAGE_ID")) for entry, _ in refused]
        await self._client.call("event.offline.error", {"process_id": process, "message_id": ids})
        report.calls += 1
        report.refused += len(refused)
        async with self._sessions.begin() as session:
            for entry, reason in refused:
                audit(
                    session,
                    "mmhub-relay",
                    "offline_error",
                    reason=reason,
                    details={"member_id": self._member_id, "entry": dict(redact(dict(entry)))},
                )
        log.warning(
            "portal %s: %d offline entries reported as errors", self._member_id, len(refused)
        )

    async def _stored_process(self) -> str | None:
        async with self._sessions() as session:
            return await session.scalar(
                select(Bitrix24OfflineState.process_id).where(
                    Bitrix24OfflineState.member_id == self._member_id
                )
            )

    async def _remember(self, process: str | None) -> None:
        await remember_process(self._sessions, self._member_id, process)


async def remember_process(
    sessions: async_sessionmaker[AsyncSession], member_id: str, process: str | None
) -> None:
    """Keep (or forget, with None) the process id of the batch being worked on."""
    values = {"process_id": process, "updated_at": func.now(), "pulled_at": func.now()}
    statement = insert(Bitrix24OfflineState).values(member_id=member_id, **values)
    async with sessions.begin() as session:
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[Bitrix24OfflineState.member_id], set_=values
            )
        )


def _lock_key(member_id: str) -> int:
    """A stable 63-bit advisory lock key for the portal's puller."""
    return int.from_bytes(hashlib.sha256(f"offline:{member_id}".encode()).digest()[:8], "big") >> 1
