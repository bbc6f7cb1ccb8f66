"""`mmhub events …`: search received events, one event with its deliveries and their attempts."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from app.outbox.queries import get_event, search_events
from cli.listing import list_command
from cli.output import (
    Record,
    ago,
    attempts_table,
    console,
    emit_json,
    event_record,
    short,
    status_text,
)
from cli.support import (
    JsonOpt,
    parse_id,
    run_session,
)

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _event_row(item: Record) -> list[str]:
    return [
        item["id"],
        ago(item["received_at"]),
        item["source"],
        item["type"],
        item["subject"],
        ", ".join(f"{d['target']}:{status_text(d['status'])}" for d in item["deliveries"])
        or "[dim]none (no route)[/]",
    ]


app.command("list")(
    list_command(
        search=search_events,
        record=event_record,
        columns=("ID", "RECEIVED", "SOURCE", "TYPE", "SUBJECT", "DELIVERIES"),
        row=_event_row,
        nothing="no events match",
        doc="Events matching the filters, newest first (--status/--target match any of its deliveries).",
    )
)


@app.command("show")
def show(
    event_id: Annotated[str, typer.Argument(metavar="ID", help="the event id")],
    payload: Annotated[bool, typer.Option("--payload", help="print the stored payload")] = False,
    json_out: JsonOpt = False,
) -> None:
    """One event: what was received, its deliveries and every attempt of each."""
    key = parse_id(event_id, "event")

    async def work(session: AsyncSession) -> Record:
        return event_record(await get_event(session, key), detail=True)

    record = run_session(work)
    if json_out:
        emit_json(record)
        return
    from rich.panel import Panel  # only here: `list` renders no panel

    out = console()
    out.print(Panel(_facts(record), title=f"event {record['id']}", title_align="left"))
    if not record["deliveries"]:
        out.print("[dim]no deliveries: no route took this event[/]")
    for delivery in record["deliveries"]:
        heading = (
            f"delivery {delivery['id']} → {delivery['target']} "
            f"{status_text(delivery['status'])}"
        )
        if delivery["last_error"]:
            heading += f"  [dim]{short(delivery['last_error'], 60)}[/]"
        if delivery["attempts"]:
            out.print(attempts_table(delivery["attempts"], title=heading))
        else:
            out.print(heading + "  [dim]no attempts yet[/]")
    if payload:
        out.print(
            Panel(json.dumps(record["payload"], ensure_ascii=False, indent=2), title="payload")
        )


def _facts(record: Record) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    received = record["received_at"]
    grid.add_row(
        "source", record["source"] + (f" ({record['origin']})" if record["origin"] else "")
    )
    grid.add_row("type", record["type"])
    grid.add_row("subject", record["subject"])
    grid.add_row("received", f"{received:%Y-%m-%d %H:%M:%S} ({ago(received)})")
    if record["occurred_at"]:
        grid.add_row("occurred", f"{record['occurred_at']:%Y-%m-%d %H:%M:%S}")
    if record["request_id"]:
        grid.add_row("request id", record["request_id"])
    return grid
