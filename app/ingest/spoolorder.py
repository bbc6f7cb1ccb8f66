"""Order across API processes: what the other processes' spool files still hold.

A spooled record may be committed once no other file of the host holds an older record of the
same subject (per-subject order is what targets are promised). Each other file is read
incrementally, keeping only (end offset, spooled at, subject) of its pending records; its offset
file says how far its owner has committed, and a generation number in it says when it started over.
"""

from __future__ import annotations

import os
from collections import deque
from datetime import datetime
from pathlib import Path

from app.ingest.spoolfile import read_mark, spool_files, stamp_of


class Neighbour:
    """The pending records of one spool file another process holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: deque[tuple[int, datetime, str]] = deque()
        self._read_to = 0
        self._generation = -1

    def refresh(self) -> None:
        """Drop what its owner committed, read what it appended since the last look."""
        try:
            size = os.stat(self.path).st_size
            done, generation = read_mark(self.path.with_suffix(".offset"), size)
            if generation != self._generation or size < self._read_to:
                self._pending.clear()
                self._read_to, self._generation = 0, generation
            while self._pending and self._pending[0][0] <= done:
                self._pending.popleft()
            self._read_to = max(self._read_to, done)
            with open(self.path, "rb") as handle:
                handle.seek(self._read_to)
                for line in handle:
                    if not line.endswith(b"\n"):
                        break  # being written: not acknowledged yet
                    self._read_to += len(line)
                    self._pending.append((self._read_to, *stamp_of(line)))
        except OSError:
            self._pending.clear()

    def holds_older(self, stamp: datetime, subject: str) -> bool:
        return any(when < stamp and what in (subject, "") for _, when, what in self._pending)


class Neighbours:
    """Every other spool file in the directory."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._known: dict[Path, Neighbour] = {}

    def blocking(self, mine: set[Path], stamp: datetime, subject: str) -> list[Path]:
        """The other files holding a record of this subject spooled before `stamp`."""
        paths = [path for path in spool_files(self._directory) if path not in mine]
        self._known = {path: self._known.get(path) or Neighbour(path) for path in paths}
        found = []
        for neighbour in self._known.values():
            neighbour.refresh()
            if neighbour.holds_older(stamp, subject):
                found.append(neighbour.path)
        return found
