"""Reading the records events are about, by subject, in `batch` calls of up to 50.

A subject names the record (`deal/7405`, `dynamic-1032/21`, `task/123`; see the contract's event
identity). Classic CRM entities are read with their own `crm.<entity>.get` (the UPPER_CASE fields
integrations with 1C already know), smart processes with `crm.item.get`, tasks with
`tasks.task.get`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.bitrix24.errors import Kind, RestError
from app.bitrix24.rest import MAX_COMMANDS, Command, PortalClient

CLASSIC = frozenset({"deal", "lead", "contact", "company", "quote"})
_DYNAMIC = re.compile(r"dynamic-([1-9][0-9]*)")
_ID = re.compile(r"[1-9][0-9]*")


@dataclass(frozen=True, slots=True)
class Read:
    """A record as read (`record`), or why there is none (`reason`), or the failure (`error`)."""

    record: Any = None
    reason: str | None = None  # set when the record is missing or not readable: record is None
    error: RestError | None = None  # a failed read: try again later


def read_command(subject: str) -> tuple[Command, str | None] | None:
    """The REST call that reads the subject's record and the key its result sits under, if any."""
    entity, _, number = subject.partition("/")
    if not _ID.fullmatch(number):
        return None
    if entity in CLASSIC:
        return (f"crm.{entity}.get", {"id": number}), None
    dynamic = _DYNAMIC.fullmatch(entity)
    if dynamic:
        return ("crm.item.get", {"entityTypeId": dynamic.group(1), "id": number}), "item"
    if entity == "task":
        return ("tasks.task.get", {"taskId": number}), "task"
    return None


async def read_records(client: PortalClient, subjects: Iterable[str]) -> dict[str, Read]:
    """Each subject's record, in one `batch` per 50 subjects (duplicates are read once)."""
    reads: dict[str, Read] = {}
    readable: list[tuple[str, Command, str | None]] = []
    for subject in dict.fromkeys(subjects):
        found = read_command(subject)
        if found is None:
            reads[subject] = Read(reason=f"{subject} is not a record the REST API reads")
        else:
            readable.append((subject, *found))
    for start in range(0, len(readable), MAX_COMMANDS):
        reads.update(await _read_chunk(client, readable[start : start + MAX_COMMANDS]))
    return reads


async def _read_chunk(
    client: PortalClient, chunk: list[tuple[str, Command, str | None]]
) -> dict[str, Read]:
    try:
        reply = await client.batch({str(i): command for i, (_, command, _) in enumerate(chunk)})
    except RestError as failed:
        return {subject: Read(error=failed) for subject, _, _ in chunk}
    reads: dict[str, Read] = {}
    for i, (subject, _, key) in enumerate(chunk):
        error = reply.errors.get(str(i))
        result = reply.results.get(str(i))
        if error is not None and error.kind is Kind.NOT_FOUND:
            reads[subject] = Read(reason=f"not found in the portal: {error}")
        elif error is not None:
            reads[subject] = Read(error=error)
        elif isinstance(result, dict) and (key is None or isinstance(result.get(key), dict)):
            reads[subject] = Read(record=result if key is None else result[key])
        else:  # tasks.task.get may answer an empty result for a task it cannot show
            reads[subject] = Read(reason="not found in the portal: empty result")
    return reads
