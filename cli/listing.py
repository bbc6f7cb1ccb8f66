"""`mmhub deliveries list` and `mmhub events list`: one command shape for both searches.

The same filters (as the console's), keyset pages, and JSON or a table; only the search, the record
and the table's columns differ, so each list command is made here from those.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from cli.output import Record, cursor_hint, emit_json, print_table, say, table
from cli.support import (
    EventTypeOpt,
    JsonOpt,
    SinceOpt,
    SourceOpt,
    StatusOpt,
    SubjectOpt,
    TargetOpt,
    TextOpt,
    UntilOpt,
    build_filter,
    run_session,
)

LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=500, help="rows per page")]
CursorOpt = Annotated[
    str | None, typer.Option("--cursor", help="the next page, as the previous one printed")
]

# (session, filter, limit, cursor) -> a page with `items` and `next_cursor`
Search = Callable[..., Awaitable[Any]]


def list_command(
    *,
    search: Search,
    record: Callable[[Any], Record],
    columns: Sequence[str],
    row: Callable[[Record], Sequence[str]],
    nothing: str,
    doc: str,
) -> Callable[..., None]:
    """A list command: `search` with the filters, each item as `record`, printed as `row`s."""

    def command(
        status: StatusOpt = None,
        target: TargetOpt = None,
        source: SourceOpt = None,
        event_type: EventTypeOpt = None,
        subject: SubjectOpt = None,
        since: SinceOpt = None,
        until: UntilOpt = None,
        text: TextOpt = None,
        limit: LimitOpt = 50,
        cursor: CursorOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        where = build_filter(
            status=status,
            target=target,
            source=source,
            event_type=event_type,
            subject=subject,
            since=since,
            until=until,
            text=text,
        )

        async def work(session: AsyncSession) -> tuple[list[Record], str | None]:
            page = await search(session, where, limit=limit, cursor=cursor)
            return [record(item) for item in page.items], page.next_cursor

        items, next_cursor = run_session(work)
        if json_out:
            emit_json({"items": items, "next_cursor": next_cursor})
            return
        if not items:
            say(nothing)
            return
        rows = table(*columns)
        for item in items:
            rows.add_row(*row(item))
        print_table(rows)
        say(cursor_hint(next_cursor, len(items)))

    command.__doc__ = doc
    return command
