"""`mmhub targets …` (states, pause, resume), `mmhub audit` and `mmhub stats`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from app.outbox.queries import audit_entries, target_states
from app.outbox.queries import stats as delivery_stats
from app.settings import Settings
from app.support.actions import pause as pause_target
from app.support.actions import resume as resume_target
from cli.output import (
    Record,
    ago,
    audit_record,
    emit_json,
    print_table,
    say,
    short,
    status_text,
    table,
)
from cli.support import (
    ActorOpt,
    JsonOpt,
    ReasonOpt,
    SinceOpt,
    default_actor,
    fail,
    load_settings_or_exit,
    parse_since,
    run_session,
)

app = typer.Typer(no_args_is_help=True, add_completion=False)

TargetArg = Annotated[str, typer.Argument(metavar="TARGET", help="a target name from mmhub.yaml")]
STATUS_ORDER = ("pending", "delivering", "retrying", "held", "delivered", "dead", "cancelled")


def known_target(settings: Settings, name: str) -> str:
    """The target's name if mmhub.yaml defines it; else the command ends with exit code 2."""
    if name not in settings.hub.targets:
        known = ", ".join(sorted(settings.hub.targets)) or "none configured"
        fail(f"unknown target {name!r} (known: {known})", 2)
    return name


@app.command("list")
def list_targets(json_out: JsonOpt = False) -> None:
    """Every target: kind, paused or not (by whom, why), circuit breaker, deliveries by status."""
    settings = load_settings_or_exit()

    async def work(session: AsyncSession) -> list[Record]:
        states = {s.target: s for s in await target_states(session)}
        counts = (await delivery_stats(session))["targets"]
        records = []
        for name in sorted(set(settings.hub.targets) | set(states) | set(counts)):
            spec, state = settings.hub.targets.get(name), states.get(name)
            records.append(
                {
                    "target": name,
                    "kind": spec.kind if spec else None,
                    "configured": spec is not None,
                    "paused": bool(state and state.paused),
                    "paused_reason": state.paused_reason if state else None,
                    "paused_by": state.paused_by if state else None,
                    "paused_at": state.paused_at if state else None,
                    "breaker_open_until": state.breaker_open_until if state else None,
                    "by_status": counts.get(name, {}).get("by_status", {}),
                    "oldest_due_seconds": counts.get(name, {}).get("oldest_due_seconds"),
                }
            )
        return records

    records = run_session(work, settings)
    if json_out:
        emit_json(records)
        return
    rows = table("TARGET", "KIND", "STATE", "BREAKER", "DELIVERIES")
    for r in records:
        state = "[green]active[/]"
        if r["paused"]:
            state = f"[magenta]paused[/] {ago(r['paused_at'])} by {r['paused_by']}"
            state += f": {short(r['paused_reason'], 40)}" if r["paused_reason"] else ""
        breaker = _breaker(r["breaker_open_until"])
        rows.add_row(
            r["target"],
            r["kind"] or "[dim]not configured[/]",
            state,
            breaker,
            _by_status(r["by_status"]),
        )
    print_table(rows)


@app.command("pause")
def pause(
    target: TargetArg,
    reason: ReasonOpt = None,
    actor: ActorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Hold a target's deliveries (maintenance window): no attempts are spent until it resumes."""
    settings = load_settings_or_exit()
    name, who = known_target(settings, target), actor or default_actor()

    async def work(session: AsyncSession) -> int:
        return await pause_target(session, name, who, reason)

    held = run_session(work, settings)
    if json_out:
        emit_json({"target": name, "paused": True, "held": held, "actor": who, "reason": reason})
        return
    say(
        f"{name} paused by {who}: {held} waiting deliveries held; "
        f"`mmhub targets resume {name}` lets them go"
    )


@app.command("resume")
def resume(
    target: TargetArg,
    reason: ReasonOpt = None,
    actor: ActorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Let a paused target's deliveries go again, due at once."""
    settings = load_settings_or_exit()
    name, who = known_target(settings, target), actor or default_actor()

    async def work(session: AsyncSession) -> int:
        return await resume_target(session, name, who, reason)

    released = run_session(work, settings)
    if json_out:
        emit_json({"target": name, "paused": False, "released": released, "actor": who})
        return
    say(f"{name} resumed by {who}: {released} held deliveries released")


def audit(
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="rows at most")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Who replayed, cancelled, edited or paused what, and why; newest first."""
    after = parse_since(since)

    async def work(session: AsyncSession) -> list[Record]:
        return [audit_record(e) for e in await audit_entries(session, since=after, limit=limit)]

    records = run_session(work)
    if json_out:
        emit_json(records)
        return
    if not records:
        say("no audit entries" + (" in that time" if after else ""))
        return
    rows = table("WHEN", "ACTOR", "ACTION", "TARGET", "WHAT", "COUNT", "REASON")
    for r in records:
        rows.add_row(
            ago(r["at"]),
            r["actor"],
            r["action"],
            r["target"] or "",
            r["delivery_id"] or _describe_filter(r["filter"]),
            str(r["count"]),
            short(r["reason"], 50),
        )
    print_table(rows)


def stats(json_out: JsonOpt = False) -> None:
    """Deliveries by target and status, and how long the oldest due delivery has waited."""

    async def work(session: AsyncSession) -> dict[str, Any]:
        return await delivery_stats(session)

    result = run_session(work)
    if json_out:
        emit_json(result)
        return
    if not result["targets"]:
        say("no deliveries yet")
        return
    rows = table("TARGET", *(s.upper() for s in STATUS_ORDER), "OLDEST DUE")
    for name, entry in result["targets"].items():
        counts = entry["by_status"]
        oldest = entry["oldest_due_seconds"]
        rows.add_row(
            name,
            *(str(counts.get(s, 0)) for s in STATUS_ORDER),
            f"{oldest:.0f}s" if oldest is not None else "-",
        )
    print_table(rows)


def _by_status(counts: dict[str, int]) -> str:
    parts = [f"{status_text(s)} {counts[s]}" for s in STATUS_ORDER if counts.get(s)]
    return ", ".join(parts) or "[dim]none[/]"


def _describe_filter(where: dict[str, Any] | None) -> str:
    if not where:
        return ""
    return " ".join(f"{key}={value}" for key, value in where.items())


def _breaker(open_until: datetime | None) -> str:
    """Closed; open (no attempts) until a probe is due; half-open once it is."""
    if open_until is None:
        return "closed"
    if open_until > datetime.now(UTC):
        return f"[red]open[/], probe {ago(open_until)}"
    return "[yellow]half-open[/]: the next attempt is a probe"
