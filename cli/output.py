"""How the support commands print: records as plain dicts, stable JSON for scripts, rich for people.

Every command turns ORM rows into records (dicts) while its session is open; `--json` dumps those
records (ids as strings, times ISO 8601 in UTC), the tables and panels render the same records.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from app import jsonio
from app.models import AuditEntry, Delivery, DeliveryAttempt, Event

Record = dict[str, Any]

STATUS_STYLES = {
    "pending": "cyan",
    "delivering": "blue",
    "delivered": "green",
    "retrying": "yellow",
    "dead": "bold red",
    "held": "magenta",
    "cancelled": "dim",
}


def console(*, stderr: bool = False) -> Console:
    """A rich console on the current stdout (or stderr), made per call so redirection is honoured."""
    return Console(stderr=stderr, highlight=False)


# Piped output is read by grep and scripts, not by eyes on an 80-column terminal: rows stay whole
# on one line (wrapping every cell to 80 columns also tripled the time to render 50 rows).
PIPED_WIDTH = 1000


def print_table(rows: Table) -> None:
    """Print a table on stdout: fitted to a terminal, or one line per row when piped."""
    out = console()
    if not out.is_terminal:
        out = Console(highlight=False, width=PIPED_WIDTH)
    out.print(rows)


def say(message: str, *, stderr: bool = False) -> None:
    """One message for people (rich markup allowed), never hard-wrapped so it can be copied."""
    console(stderr=stderr).print(message, soft_wrap=True)


def emit_json(data: Any) -> None:
    """Write `data` as indented JSON on stdout: UUIDs as strings, datetimes ISO 8601 with `Z`."""
    raw = jsonio.dumps(data, indent=True)
    sys.stdout.write(raw.decode() + "\n")
    sys.stdout.flush()


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """A relative time for people: `just now`, `45s ago`, `3m ago`, `2h ago`, `5d ago`, `in 2m`."""
    if when is None:
        return "-"
    now = now or datetime.now(UTC)
    seconds = (now - (when if when.tzinfo else when.replace(tzinfo=UTC))).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 1:
        return "just now"
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if seconds >= size:
            amount = f"{int(seconds // size)}{unit}"
            return f"in {amount}" if future else f"{amount} ago"
    return "just now"  # pragma: no cover - the loop always returns for seconds >= 1


def status_text(status: str) -> str:
    """A delivery status with its colour, as rich markup."""
    return f"[{STATUS_STYLES.get(status, 'default')}]{status}[/]"


def table(*columns: str, title: str | None = None) -> Table:
    """A compact table; the ID column never wraps so ids can be copied whole."""
    result = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        result.add_column(name, no_wrap=name == "ID", overflow="fold")
    return result


def short(text: str | None, width: int = 60) -> str:
    """One line of at most `width` characters (an error message in a table cell)."""
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def event_summary(event: Event) -> Record:
    """The event fields every delivery record carries."""
    return {
        "id": str(event.id),
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "received_at": event.received_at,
    }


def delivery_record(delivery: Delivery, *, detail: bool = False) -> Record:
    """A delivery with its event; with `detail`, the data sent and every attempt too."""
    record: Record = {
        "id": str(delivery.id),
        "event_id": str(delivery.event_id),
        "status": delivery.status,
        "target": delivery.target,
        "route": delivery.route,
        "attempt_count": delivery.attempt_count,
        "next_attempt_at": delivery.next_attempt_at,
        "last_error": delivery.last_error,
        "superseded_by": str(delivery.superseded_by) if delivery.superseded_by else None,
        "manual_next": delivery.manual_next,
        "created_at": delivery.created_at,
        "updated_at": delivery.updated_at,
        "delivered_at": delivery.delivered_at,
        "event": event_summary(delivery.event),
    }
    if detail:
        record["event"]["payload"] = delivery.event.payload
        record["payload_override"] = delivery.payload_override
        record["attempts"] = [attempt_record(a) for a in delivery.attempts]
    return record


def attempt_record(attempt: DeliveryAttempt) -> Record:
    """One delivery attempt as it was recorded."""
    return {
        "number": attempt.number,
        "started_at": attempt.started_at,
        "duration_ms": attempt.duration_ms,
        "http_status": attempt.http_status,
        "outcome": attempt.outcome,
        "error_class": attempt.error_class,
        "error": attempt.error,
        "response_excerpt": attempt.response_excerpt,
        "manual": attempt.manual,
    }


def event_record(event: Event, *, detail: bool = False) -> Record:
    """An event with its deliveries; with `detail`, its payload and every attempt too."""
    deliveries = []
    for delivery in sorted(event.deliveries, key=lambda d: d.seq):
        item: Record = {
            "id": str(delivery.id),
            "target": delivery.target,
            "route": delivery.route,
            "status": delivery.status,
            "attempt_count": delivery.attempt_count,
            "last_error": delivery.last_error,
        }
        if detail:
            item["attempts"] = [attempt_record(a) for a in delivery.attempts]
        deliveries.append(item)
    record: Record = {
        **event_summary(event),
        "origin": event.origin,
        "occurred_at": event.occurred_at,
        "request_id": event.request_id,
        "deliveries": deliveries,
    }
    if detail:
        record["headers"] = event.headers
        record["payload"] = event.payload
    return record


def audit_record(entry: AuditEntry) -> Record:
    """One audit row: who did what, to how many, and why."""
    return {
        "id": str(entry.id),
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "delivery_id": str(entry.delivery_id) if entry.delivery_id else None,
        "filter": entry.filter,
        "count": entry.count,
        "reason": entry.reason,
        "details": entry.details,
    }


def attempts_table(attempts: Iterable[Record], title: str | None = "attempts") -> Table:
    """Attempts, oldest first: number, when, how long, HTTP status, outcome, error, manual."""
    result = table("#", "STARTED", "DURATION", "HTTP", "OUTCOME", "ERROR", "MANUAL", title=title)
    for a in attempts:
        result.add_row(
            str(a["number"]),
            f"{a['started_at']:%Y-%m-%d %H:%M:%S} ({ago(a['started_at'])})",
            f"{a['duration_ms']} ms",
            str(a["http_status"] or "-"),
            a["outcome"],
            short(" ".join(filter(None, (a["error_class"], a["error"]))), 50),
            "yes" if a["manual"] else "",
        )
    return result


def cursor_hint(next_cursor: str | None, shown: int) -> str:
    """The line under a list: how many were shown and how to get the next page."""
    if next_cursor is None:
        return f"[dim]{shown} shown[/]"
    return f"[dim]{shown} shown; next page: --cursor {next_cursor}[/]"
