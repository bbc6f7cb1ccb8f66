"""The outage spool's files: one append-only JSON-lines file per API process, held under a lock.

`spool-N.jsonl` holds one event per line, appended and fsync'd before the client gets its 202.
`spool-N.offset` says how far the file has been committed to PostgreSQL; it is written after each
drained batch without fsync: a stale (lower) offset only makes the next drain replay events that
are already stored, which dedup turns into duplicates. Only the reset to 0 before the file is
truncated is fsync'd, so that a truncated file is never read from an old, larger offset.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from app import jsonio
from app.ingest.model import NewEvent, PlannedDelivery

log = logging.getLogger(__name__)

PREFIX, SUFFIX = "spool-", ".jsonl"


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled event, with when it was spooled."""

    spooled_at: datetime
    event: NewEvent


def encode(event: NewEvent, spooled_at: datetime) -> bytes:
    """One line: the event as ingest built it (secrets already removed), and its planned deliveries."""
    record: dict[str, Any] = {
        "spooled_at": spooled_at,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "dedup_key": event.dedup_key,
        "payload": event.payload,
        "raw_body": base64.b64encode(event.raw_body).decode(),
        "headers": event.headers,
        "origin": event.origin,
        "occurred_at": event.occurred_at,
        "request_id": event.request_id,
        "traceparent": event.traceparent,
        "deliveries": [[d.route, d.target] for d in event.deliveries],
    }
    return jsonio.dumps(record) + b"\n"


def decode(line: bytes) -> SpoolEntry:
    """The entry `encode` wrote (ValueError, KeyError or TypeError when the line is damaged)."""
    record = jsonio.loads(line)
    occurred_at = record["occurred_at"]
    event = NewEvent(
        source=record["source"],
        type=record["type"],
        subject=record["subject"],
        dedup_key=record["dedup_key"],
        payload=record["payload"],
        raw_body=base64.b64decode(record["raw_body"]),
        headers=record["headers"],
        origin=record["origin"],
        occurred_at=datetime.fromisoformat(occurred_at) if occurred_at else None,
        request_id=record["request_id"],
        traceparent=record.get("traceparent"),  # absent in lines written before it was kept
        deliveries=[PlannedDelivery(route, target) for route, target in record["deliveries"]],
        id=uuid.UUID(record["id"]),
    )
    return SpoolEntry(datetime.fromisoformat(record["spooled_at"]), event)


class SpoolFile:
    """One locked spool file: `done` bytes are committed, `end` bytes are acknowledged."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.offset_path = path.with_suffix(".offset")
        self._fd = fd
        self.end = self._drop_torn_tail()
        self.done, self.generation = read_mark(self.offset_path, self.end)
        self.pending = _count_lines(path, self.done, self.end)

    @classmethod
    def claim(cls, path: Path) -> SpoolFile | None:
        """The file under an exclusive lock, or None while another process holds it."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(path, fd)

    def append(self, line: bytes) -> None:
        """Write one record and fsync it (blocking: run it in a thread). A failed write is undone."""
        try:
            os.write(self._fd, line)
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.end)
            raise
        self.end += len(line)
        self.pending += 1

    def read(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` acknowledged lines after `done`, each with the offset just past it."""
        lines: list[tuple[int, bytes]] = []
        position = self.done
        with open(self.path, "rb") as handle:
            handle.seek(position)
            while len(lines) < limit and position < self.end:
                line = handle.readline()
                if not line.endswith(b"\n") or position + len(line) > self.end:
                    break
                position += len(line)
                lines.append((position, line))
        return lines

    def set_aside(self, line: bytes) -> None:
        """Keep a record PostgreSQL refuses (or that cannot be read) in `spool-N.rejected`."""
        with open(self.path.with_suffix(".rejected"), "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def advance(self, offset: int) -> None:
        """Record that everything before `offset` is committed."""
        self.pending -= 1
        self.done = offset

    def save_offset(self) -> None:
        """Persist `done` (no fsync, see the module docstring)."""
        self.offset_path.write_text(f"{self.done} {self.generation}")

    def reset(self) -> None:
        """Everything is committed: start the file over (offset 0 made durable first)."""
        self.generation += 1  # tells other processes reading this file that it started over
        with open(self.offset_path, "w") as handle:
            handle.write(f"0 {self.generation}")
            handle.flush()
            os.fsync(handle.fileno())
        os.ftruncate(self._fd, 0)
        self.end = self.done = self.pending = 0

    def close(self) -> None:
        """Release the lock (the file stays: a free slot for the next process)."""
        os.close(self._fd)

    def _drop_torn_tail(self) -> int:
        """Cut a last line without its newline: a write that crashed before it was acknowledged."""
        size = os.fstat(self._fd).st_size
        with open(self.path, "rb") as handle:
            handle.seek(max(0, size - 1))
            if size == 0 or handle.read(1) == b"\n":
                return size
            handle.seek(0)
            complete = handle.read().rfind(b"\n") + 1
        log.warning("spool %s: dropping an unacknowledged partial record", self.path.name)
        os.ftruncate(self._fd, complete)
        return complete


def read_offset(path: Path, end: int) -> int:
    """The committed offset recorded for a file of `end` bytes (0 when missing or past the end)."""
    return read_mark(path, end)[0]


def read_mark(path: Path, end: int) -> tuple[int, int]:
    """The committed offset and the file's generation (how many times it was started over)."""
    try:
        offset, _, generation = path.read_text().partition(" ")
        mark = int(offset or 0), int(generation or 0)
    except (OSError, ValueError):
        return 0, 0
    return mark if 0 <= mark[0] <= end else (0, mark[1])


def stamp_of(line: bytes) -> tuple[datetime, str]:
    """When a record was spooled, and its subject (a damaged one: the oldest time, it goes first)."""
    try:
        record = orjson.loads(line)
        return datetime.fromisoformat(record["spooled_at"]), str(record["subject"])
    except (ValueError, KeyError, TypeError):
        return datetime.min.replace(tzinfo=UTC), ""


class OtherSpools:
    """Whether another process's spool file in a directory holds events: checked on every request.

    Listing the directory each time cost more than the rest of the check, and its entries change
    only when a process claims a new slot or writes its first offset. So the names are kept and
    listed again when the directory's mtime moves, and on every call while that mtime is too recent
    to trust: an entry created in the same clock tick as the listing would leave it unchanged. The
    sizes are read on every call (appends do not touch the directory).
    """

    def __init__(self, directory: Path) -> None:
        self._directory = str(directory)
        self._stamp: tuple[int, int] | None = None  # (inode, mtime) of the directory when listed
        self._trusted = False  # that mtime was old enough when listed
        self._names: list[str] = []  # paths of the spool files, as os.scandir gives them

    def pending(self, mine: set[str]) -> bool:
        """Whether a spool file not in `mine` (paths as str) is not empty (OSError: unreadable)."""
        stat = os.stat(self._directory)
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp != self._stamp or not self._trusted:
            self._names = _spool_names(self._directory)
            self._stamp = stamp
            self._trusted = time.time_ns() - stat.st_mtime_ns > _RACY_NS
        for name in self._names:
            if name in mine:
                continue
            try:
                if os.stat(name).st_size > 0:
                    return True
            except FileNotFoundError:
                continue
        return False


_RACY_NS = 2_000_000_000  # far beyond any file system's timestamp granularity


def _spool_names(directory: str) -> list[str]:
    with os.scandir(directory) as entries:
        return [e.path for e in entries if e.name.startswith(PREFIX) and e.name.endswith(SUFFIX)]


def spool_files(directory: Path) -> list[Path]:
    """The spool files in a directory, in slot order."""
    return sorted(directory.glob(f"{PREFIX}*{SUFFIX}"), key=_slot)


def slot_path(directory: Path, slot: int) -> Path:
    return directory / f"{PREFIX}{slot}{SUFFIX}"


def pending_entries(directory: Path) -> list[tuple[Path, SpoolEntry]]:
    """Every event not yet committed, in every spool file, oldest first (read-only, no lock)."""
    found: list[tuple[Path, SpoolEntry]] = []
    for path in spool_files(directory):
        data = path.read_bytes()
        data = data[: data.rfind(b"\n") + 1]
        start = read_offset(path.with_suffix(".offset"), len(data))
        for line in data[start:].splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                found.append((path, decode(line)))
    found.sort(key=lambda item: item[1].spooled_at)
    return found


def now() -> datetime:
    return datetime.now(UTC)


def _slot(path: Path) -> int:
    digits = path.name.removeprefix(PREFIX).removesuffix(SUFFIX)
    return int(digits) if digits.isdigit() else 1 << 30


def _count_lines(path: Path, start: int, end: int) -> int:
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read(end - start).count(b"\n")
