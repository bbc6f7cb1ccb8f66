"""The outage spool: no authenticated, valid event is refused because PostgreSQL is down.

Bitrix24 never resends, so a 503 loses its event. `Spool.submit` stands in front of the group
commit: when the commit fails, the event is appended to this process's spool file (fsync'd) and the
client gets 202. While any spool file in the directory holds events (this process's or another API
process's on the host), new events join this process's file, so that acceptance order holds. A
background task drains the files into PostgreSQL through the same group commit (dedup applies
there) as soon as it answers, oldest first: a record waits while another process's file holds an
older record of its subject (app/ingest/spoolorder.py), so the events of one subject commit in
acceptance order even when the load balancer spread them over several processes. Each API process holds its own file under
a lock; a restarted process takes over the file its predecessor left (and any other unlocked file
with events in it), so no spooled event is lost by a restart and no two processes drain one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ServiceUnavailable, Unprocessable
from app.ingest.committer import GroupCommitter, prepare
from app.ingest.model import IngestResult, NewEvent
from app.ingest.spoolfile import (
    OtherSpools,
    SpoolFile,
    decode,
    encode,
    now,
    slot_path,
    spool_files,
    stamp_of,
)
from app.ingest.spoolorder import Neighbours
from app.telemetry import SPOOL_EVENTS

log = logging.getLogger(__name__)

_BATCH = 64  # records committed together while draining (of distinct subjects)
_BLOCKED_WAIT = 0.02  # seconds between looks while another process commits an older record
_REJECT_AFTER = 3  # failed commits of one record, with PostgreSQL answering, before it is set aside
_LIVE: list[Spool] = []  # the spools the depth gauge reports
_Record = tuple[SpoolFile, int, bytes]  # a spooled record, the offset just past it, its line


class Spool:
    """Commit, or spool while PostgreSQL is unreachable; drain in order when it is back."""

    def __init__(
        self,
        committer: GroupCommitter,
        engine: AsyncEngine,
        directory: Path,
        max_bytes: int,
        *,
        retry_every: float = 1.0,
        adopt_every: float = 30.0,
    ) -> None:
        self._committer = committer
        self._engine = engine
        self._directory = directory
        self._max_bytes = max_bytes
        self._retry_every = retry_every
        self._adopt_every = adopt_every
        self._own: SpoolFile | None = None
        self._files: list[SpoolFile] = []  # adopted files first, this process's own file last
        self._append_lock = asyncio.Lock()
        self._waiting = asyncio.Event()  # set while any file holds events
        self._drainer: asyncio.Task[None] | None = None
        self._stopping = False
        self._neighbours = Neighbours(directory)
        self._others = OtherSpools(directory)

    @property
    def events(self) -> int:
        """Events waiting in this process's spool files."""
        return sum(file.pending for file in self._files)

    @property
    def active(self) -> bool:
        """New events go to the spool (it holds events, or has not finished draining them)."""
        return self._waiting.is_set()

    @property
    def size(self) -> int:
        """Bytes of events waiting."""
        return sum(file.end - file.done for file in self._files)

    async def start(self) -> None:
        """Claim a spool file and adopt abandoned ones; a spool that cannot be set up is off."""
        if self._max_bytes > 0:
            try:
                await asyncio.to_thread(self._claim)
            except OSError as exc:
                log.error("the outage spool is off: %s: %s", self._directory, exc.strerror)
        if self.events:
            log.warning("%d spooled events left by a previous process: draining", self.events)
            self._waiting.set()
        self._drainer = asyncio.create_task(self._drain_forever())
        _LIVE.append(self)

    async def stop(self) -> None:
        """Stop draining and release the files (what is left stays for the next process)."""
        self._stopping = True
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        for file in self._files:
            file.close()
        self._files.clear()
        if self in _LIVE:
            _LIVE.remove(self)

    async def submit(self, event: NewEvent) -> IngestResult:
        """Commit the event, or spool it: 200 or 202 for the client, 503 only when neither works."""
        if self._waiting.is_set() or self._others_pending():
            return await self._append(event)
        try:
            return await self._committer.submit(event)
        except ServiceUnavailable:
            return await self._append(event)

    async def _append(self, event: NewEvent) -> IngestResult:
        prepare(event)  # what could never be committed is refused now, not at drain
        own = self._own
        if own is None:
            raise ServiceUnavailable("the database is unavailable and the outage spool is off")
        line = encode(event, now())
        async with self._append_lock:
            if own.end + len(line) > self._max_bytes:
                raise ServiceUnavailable("the database is unavailable and the outage spool is full")
            try:
                await asyncio.to_thread(own.append, line)
            except OSError as exc:
                log.error("the outage spool cannot be written: %s", exc.strerror)
                raise ServiceUnavailable(
                    "the database is unavailable and the outage spool cannot be written"
                ) from None
            self._waiting.set()
        log.info("database unavailable: event spooled (%d waiting)", self.events)
        return IngestResult(
            event.id, duplicate=False, deliveries=len(event.deliveries), spooled=True
        )

    def _claim(self) -> None:
        """Take the first free slot, and every other free file that still holds events."""
        self._directory.mkdir(parents=True, exist_ok=True)
        self._files = self._abandoned()
        slot = 0
        while self._own is None:
            self._own = SpoolFile.claim(slot_path(self._directory, slot))
            slot += 1
        self._files.append(self._own)

    def _abandoned(self) -> list[SpoolFile]:
        """Files no live process holds (their process died) that still hold events, now ours."""
        taken = {file.path for file in self._files}
        adopted = []
        for path in spool_files(self._directory):
            file = None if path in taken else SpoolFile.claim(path)
            if file is None:
                continue
            if file.pending:
                log.warning("adopting %s with %d spooled events", path.name, file.pending)
                adopted.append(file)
            else:
                file.close()
        return adopted

    async def _drain_forever(self) -> None:
        # A flag besides the cancellation: the database driver may swallow a CancelledError.
        while not self._stopping:
            try:
                await asyncio.wait_for(self._waiting.wait(), self._adopt_every)
            except TimeoutError:
                if self._own is not None:
                    self._files[:0] = await asyncio.to_thread(self._abandoned)
                    if self.events:
                        self._waiting.set()
                continue
            try:
                await self._drain()
            except ServiceUnavailable:
                await asyncio.sleep(self._retry_every)
            except Exception:
                log.exception("draining the outage spool failed; retrying")
                await asyncio.sleep(self._retry_every)

    async def _drain(self) -> None:
        """Commit the spooled events, oldest first; raises ServiceUnavailable while PostgreSQL is down."""
        while (step := await asyncio.to_thread(self._next)) is not None:
            batch, adopted = step
            self._files[:0] = adopted  # abandoned files that held older records: ours now
            if not batch:
                if not adopted:  # another process commits an older record of the subject first
                    await asyncio.sleep(_BLOCKED_WAIT)
                continue
            # Distinct subjects: committed together, they share the group commit's transactions.
            commits = [self._commit(file, line) for file, _, line in batch]
            for result in await asyncio.gather(*commits, return_exceptions=True):
                if isinstance(result, BaseException):
                    raise result  # none advances: the committed ones come back as duplicates
            for file, offset, _ in batch:
                file.advance(offset)
            for file in {id(file): file for file, _, _ in batch}.values():
                await asyncio.to_thread(file.save_offset)  # other processes read our progress
        for file in [f for f in self._files if f is not self._own]:
            self._files.remove(file)  # adopted and drained: left empty, as a free slot
            await asyncio.to_thread(file.reset)
            file.close()
        async with self._append_lock:
            own = self._own
            if own is not None and own.done == own.end and own.end > 0:
                await asyncio.to_thread(own.reset)
            if not self.events:
                self._waiting.clear()
                log.info("the outage spool is drained")

    def _next(self) -> tuple[list[_Record], list[SpoolFile]] | None:
        """Our oldest records, in order, as long as their subjects differ and no other file holds
        an older record of theirs; else the files we could adopt among those that do (their
        process is gone). None when we hold nothing."""
        queues = [(file, deque(lines)) for file in self._files if (lines := file.read(_BATCH))]
        if not queues:
            return None
        mine = {file.path for file in self._files}
        batch: list[_Record] = []
        subjects: set[str] = set()
        while len(batch) < _BATCH and any(queue for _, queue in queues):
            heads = [(stamp_of(q[0][1]), f, q) for f, q in queues if q]
            (stamp, subject), file, queue = min(heads, key=lambda head: head[0][0])
            if subject in subjects or (batch and not subject):
                break  # a damaged record (no subject) goes alone: set aside, it advances at once
            older = self._neighbours.blocking(mine, stamp, subject)
            if older:
                claimed = [] if batch else [SpoolFile.claim(path) for path in older]
                return batch, [f for f in claimed if f is not None]
            offset, line = queue.popleft()
            batch.append((file, offset, line))
            subjects.add(subject)
            if not subject:
                break
        return batch, []

    def _others_pending(self) -> bool:
        if self._own is None:
            return False
        try:
            return self._others.pending({str(file.path) for file in self._files})
        except OSError:
            return False

    async def _commit(self, file: SpoolFile, line: bytes) -> None:
        """Commit one record, retried; a record PostgreSQL keeps refusing while up is set aside."""
        try:
            entry = decode(line)
        except (ValueError, KeyError, TypeError):
            log.error("spool %s: an unreadable record, set aside", file.path.name)
            await asyncio.to_thread(file.set_aside, line)
            return
        for _ in range(_REJECT_AFTER):
            try:
                outcome = await self._committer.submit(entry.event)
            except Unprocessable:
                break
            except ServiceUnavailable:
                if not await self._database_answers():
                    raise
                await asyncio.sleep(self._retry_every)
                continue
            if outcome.duplicate:
                log.info("spooled event %s was a duplicate", entry.event.id)
            return
        log.error("spooled event %s refused by the database, set aside", entry.event.id)
        await asyncio.to_thread(file.set_aside, line)

    async def _database_answers(self) -> bool:
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True


# The depth /metrics and /readyz show: every live spool of this process, read at scrape time.
SPOOL_EVENTS.set_function(lambda: float(sum(spool.events for spool in _LIVE)))
