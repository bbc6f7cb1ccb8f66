"""`mmhub spool status`: the events this host's outage spool holds until PostgreSQL takes them."""

from __future__ import annotations

import typer

from app.ingest.spoolfile import pending_entries
from app.settings import ConfigError, load_settings
from cli.output import Record, ago, emit_json, print_table, say, table
from cli.support import JsonOpt, fail

app = typer.Typer(no_args_is_help=True)


@app.command("status")
def status(json_out: JsonOpt = False) -> None:
    """Events waiting in the outage spool (MMHUB_SPOOL_DIR), oldest first; reads no database."""
    try:
        directory = load_settings().spool_path
    except ConfigError as exc:
        fail(f"configuration error: {exc}", 2)
    records: list[Record] = [
        {
            "spooled_at": entry.spooled_at,
            "event_id": str(entry.event.id),
            "source": entry.event.source,
            "type": entry.event.type,
            "subject": entry.event.subject,
            "deliveries": len(entry.event.deliveries),
            "file": path.name,
        }
        for path, entry in (pending_entries(directory) if directory.is_dir() else [])
    ]
    if json_out:
        emit_json(records)
        return
    if not records:
        say(f"the outage spool is empty ({directory})")
        return
    rows = table("SPOOLED", "ID", "SOURCE", "TYPE", "SUBJECT", "FILE", title=str(directory))
    for r in records:
        rows.add_row(
            ago(r["spooled_at"]), r["event_id"], r["source"], r["type"], r["subject"], r["file"]
        )
    print_table(rows)
    say(f"{len(records)} event(s) waiting for PostgreSQL")
