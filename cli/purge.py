"""`mmhub purge --older-than 30d [--include-dead]`: retention in bounded batches, safe while live."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from app.durations import parse_duration
from app.outbox.retention import PurgeReport, cutoff_before
from app.support.purge import audited_purge
from cli.output import emit_json, say
from cli.support import ActorOpt, JsonOpt, Sessions, default_actor, fail, run


def purge_command(
    older_than: Annotated[str, typer.Option("--older-than", help="age to keep, e.g. 30d")],
    include_dead: Annotated[
        bool, typer.Option("--include-dead", help="also purge events whose deliveries died")
    ] = False,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="events per transaction")] = 1000,
    duty_cycle: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="share of the time spent deleting")
    ] = 0.5,
    actor: ActorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete finished events older than --older-than with their deliveries and attempts.

    Events with a delivery still on its way are never touched; dead ones only with --include-dead.
    Each batch is its own short transaction: Ctrl-C keeps what was purged so far.
    """
    try:
        cutoff = cutoff_before(parse_duration(older_than))
    except ValueError as exc:
        fail(f"--older-than: {exc}")
    who = actor or default_actor()

    def progress(report: PurgeReport) -> None:
        if not json_out:
            say(f"\rpurged {report.events} events in {report.batches} batches", stderr=True)

    async def work(sessions: Sessions) -> PurgeReport:
        return await audited_purge(
            sessions,
            cutoff,
            actor=who,
            older_than=older_than,
            include_dead=include_dead,
            batch=batch,
            duty_cycle=duty_cycle,
            progress=progress,
        )

    report = run(work)
    if json_out:
        summary = asdict(report)
        summary.pop("batch_seconds", None)
        emit_json({**summary, "cutoff": cutoff.isoformat()})
        return
    say(
        f"purged {report.events} events, {report.deliveries} deliveries and {report.attempts} "
        f"attempts received before {cutoff:%Y-%m-%d %H:%M} UTC in {report.batches} batches "
        f"({report.seconds:.1f}s); {report.busy} busy and {report.kept} replayed events were kept"
    )
