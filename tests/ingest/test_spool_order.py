"""The host-wide order of the outage spool: a record waits only for older records of its own
subject in the other processes' files, whatever those files went through meanwhile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.ingest.model import NewEvent
from app.ingest.spoolfile import SpoolFile, encode, slot_path
from app.ingest.spoolorder import Neighbours

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def _at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _append(file: SpoolFile, subject: str, seconds: int) -> None:
    event = NewEvent("bitrix24", "ONCRMDEALUPDATE", subject, f"k{seconds}", {}, b"", {})
    file.append(encode(event, _at(seconds)))


def test_only_an_older_record_of_the_same_subject_blocks(tmp_path: Path) -> None:
    other = SpoolFile.claim(slot_path(tmp_path, 1))
    assert other is not None
    _append(other, "deal/1", 10)
    _append(other, "deal/2", 20)
    neighbours = Neighbours(tmp_path)
    mine = {slot_path(tmp_path, 0)}

    assert neighbours.blocking(mine, _at(30), "deal/1") == [other.path]
    assert neighbours.blocking(mine, _at(30), "deal/3") == []
    assert neighbours.blocking(mine, _at(5), "deal/1") == []  # ours is the older one

    # Its owner commits deal/1: nothing of that subject waits there any more.
    [(offset, _)] = other.read(1)
    other.advance(offset)
    other.save_offset()
    assert neighbours.blocking(mine, _at(30), "deal/1") == []
    assert neighbours.blocking(mine, _at(30), "deal/2") == [other.path]

    # It drains, starts over (to the same size as before) with newer records than ours: no wait.
    [(offset, _)] = other.read(1)
    other.advance(offset)
    other.reset()
    _append(other, "deal/1", 40)
    _append(other, "deal/9", 41)
    assert neighbours.blocking(mine, _at(30), "deal/2") == []
    assert neighbours.blocking(mine, _at(30), "deal/1") == []
    assert neighbours.blocking(mine, _at(50), "deal/1") == [other.path]
    other.close()


def test_a_record_being_written_is_not_read_yet(tmp_path: Path) -> None:
    other = SpoolFile.claim(slot_path(tmp_path, 1))
    assert other is not None
    with other.path.open("ab") as handle:
        handle.write(b'{"spooled_at": "2026-12-03T09:00:01Z", "subj')
    neighbours = Neighbours(tmp_path)
    assert neighbours.blocking(set(), _at(30), "deal/1") == []
    other.close()
