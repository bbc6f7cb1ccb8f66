"""`mmhub deliveries …`: search, one delivery with its attempts, cancel, edit-and-replay."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from app.outbox.queries import delivery_state, get_delivery, search_deliveries
from cli.listing import list_command
from cli.output import (
    Record,
    ago,
    attempts_table,
    console,
    delivery_record,
    emit_json,
    say,
    short,
    status_text,
)
from cli.support import (
    ActorOpt,
    JsonOpt,
    ReasonOpt,
    default_actor,
    fail,
    parse_id,
    run_session,
)

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _delivery_row(item: Record) -> list[str]:
    return [
        item["id"],
        status_text(item["status"]),
        item["target"],
        item["event"]["type"],
        item["event"]["subject"],
        str(item["attempt_count"]),
        ago(item["created_at"]),
        short(item["last_error"], 40),
    ]


app.command("list")(
    list_command(
        search=search_deliveries,
        record=delivery_record,
        columns=("ID", "STATUS", "TARGET", "EVENT", "SUBJECT", "TRIES", "CREATED", "LAST ERROR"),
        row=_delivery_row,
        nothing="no deliveries match",
        doc="Deliveries matching the filters, newest first: mmhub deliveries list --status dead --since 2h.",
    )
)


@app.command("show")
def show(
    delivery_id: Annotated[str, typer.Argument(metavar="ID", help="the delivery id")],
    json_out: JsonOpt = False,
) -> None:
    """One delivery: its event, its state and every attempt."""
    key = parse_id(delivery_id)

    async def work(session: AsyncSession) -> Record:
        return delivery_record(await get_delivery(session, key), detail=True)

    record = run_session(work)
    if json_out:
        emit_json(record)
        return
    from rich.panel import Panel  # only here: `list` renders no panel

    out = console()
    out.print(Panel(_facts(record), title=f"delivery {record['id']}", title_align="left"))
    if record["attempts"]:
        out.print(attempts_table(record["attempts"]))
        last = record["attempts"][-1]
        if last["response_excerpt"]:
            out.print(Panel(last["response_excerpt"], title="last response", title_align="left"))
    else:
        out.print("[dim]no attempts yet[/]")
    if record["payload_override"] is not None:
        sent = json.dumps(record["payload_override"], ensure_ascii=False, indent=2)
        out.print(Panel(sent, title="corrected data (sent instead of the event's)"))


def _facts(record: Record) -> Table:
    event = record["event"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, str]] = [
        ("status", status_text(record["status"])),
        ("target", f"{record['target']} (route {record['route']})"),
        ("event", f"{event['id']}  {event['source']} {event['type']}"),
        ("subject", event["subject"]),
        ("received", f"{event['received_at']:%Y-%m-%d %H:%M:%S} ({ago(event['received_at'])})"),
        ("attempts", str(record["attempt_count"])),
    ]
    if record["status"] in ("pending", "retrying", "held"):
        manual = " (manual)" if record["manual_next"] else ""
        rows.append(("next attempt", ago(record["next_attempt_at"]) + manual))
    if record["delivered_at"]:
        rows.append(("delivered", ago(record["delivered_at"])))
    if record["last_error"]:
        rows.append(("last error", record["last_error"]))
    if record.get("superseded_by"):
        rows.append(("superseded by", f"{record['superseded_by']} (it carried the latest state)"))
    for name, value in rows:
        grid.add_row(name, value)
    return grid


@app.command("cancel")
def cancel(
    delivery_id: Annotated[str, typer.Argument(metavar="ID", help="the delivery id")],
    reason: ReasonOpt = None,
    actor: ActorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stop a delivery for good (a replay brings it back); audited."""
    key, who = parse_id(delivery_id), actor or default_actor()

    async def work(session: AsyncSession) -> tuple[str | None, Record]:
        from app.support.actions import cancel_delivery

        state = await delivery_state(session, key)
        previous = state[1] if state else None
        await cancel_delivery(session, key, who, reason)
        return previous, delivery_record(await get_delivery(session, key))

    previous, record = run_session(work)
    if json_out:
        emit_json({**record, "previous_status": previous})
        return
    say(f"delivery {record['id']} cancelled (was {previous}) by {who}")


@app.command("edit-replay")
def edit_replay(
    delivery_id: Annotated[str, typer.Argument(metavar="ID", help="the delivery id")],
    data_file: Annotated[
        Path, typer.Option("--data-file", help="JSON object to send instead (- for stdin)")
    ],
    reason: Annotated[str, typer.Option("--reason", help="why the data was changed (required)")],
    actor: ActorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send corrected data instead of the event's (the event keeps the original), then replay."""
    key, who = parse_id(delivery_id), actor or default_actor()
    data = _read_object(data_file)

    async def work(session: AsyncSession) -> Record:
        from app.support.actions import edit_and_replay

        await edit_and_replay(session, key, data, who, reason)
        return delivery_record(await get_delivery(session, key))

    record = run_session(work)
    if json_out:
        emit_json(record)
        return
    say(
        f"delivery {record['id']} will be sent again with the corrected data "
        f"({status_text(record['status'])}, next attempt manual); audited as {who}"
    )


def _read_object(path: Path) -> dict[str, Any]:
    try:
        raw = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8-sig")
        data = json.loads(raw)
    except OSError as exc:
        fail(f"--data-file: cannot read {path}: {exc.strerror or exc}")
    except json.JSONDecodeError as exc:
        fail(f"--data-file: not valid JSON: {exc}")
    if not isinstance(data, dict):
        fail("--data-file: the file must hold a JSON object")
    return data
