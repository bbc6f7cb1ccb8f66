"""`mmhub replay`: replay deliveries by id, or in bulk by filter with a dry run and a progress bar."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.models import ReplayJob
from app.outbox.filters import DeliveryFilter
from app.outbox.queries import delivery_state
from app.support import actions
from app.support.actions import (
    cancel_replay_job,
    count_matching,
    replay_delivery,
    start_bulk_replay,
)
from app.support.bulk import run_bulk_replay
from cli.output import Record, console, emit_json, print_table, say, status_text, table
from cli.support import (
    ActorOpt,
    EventTypeOpt,
    JsonOpt,
    ReasonOpt,
    Sessions,
    SinceOpt,
    SourceOpt,
    StatusOpt,
    SubjectOpt,
    TargetOpt,
    TextOpt,
    UntilOpt,
    build_filter,
    confirm_many,
    default_actor,
    fail,
    has_filter,
    load_settings_or_exit,
    parse_id,
    run,
    run_session,
)

INTERRUPTED = 130


def replay(
    ids: Annotated[
        list[str] | None, typer.Argument(metavar="ID", help="delivery ids", show_default=False)
    ] = None,
    status: StatusOpt = None,
    target: TargetOpt = None,
    source: SourceOpt = None,
    event_type: EventTypeOpt = None,
    subject: SubjectOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    text: TextOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would be replayed; change nothing")
    ] = False,
    reason: ReasonOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help=f"allow more than {actions.BULK_CAP} deliveries")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="do not ask before touching more than 100")
    ] = False,
    actor: ActorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Replay deliveries by id, or in bulk by filter (try --dry-run first).

    Each replay is a new, manual attempt on the same delivery, audited with who and why.
    Examples: `mmhub replay ID...`; `mmhub replay --status dead --target erp --since 24h`.
    """
    filters = {
        "status": status,
        "target": target,
        "source": source,
        "event_type": event_type,
        "subject": subject,
        "since": since,
        "until": until,
        "text": text,
    }
    who = actor or default_actor()
    if ids and has_filter(**filters):
        fail("give delivery ids or a filter, not both")
    if ids:
        _replay_ids([parse_id(i) for i in ids], who, reason, dry_run, yes, json_out)
    elif has_filter(**filters):
        where = build_filter(**filters)
        _replay_bulk(where, who, reason, dry_run=dry_run, force=force, yes=yes, json_out=json_out)
    else:
        fail(
            "nothing to replay: give delivery ids, or a filter such as "
            "--status dead --target erp --since 24h"
        )


def _replay_ids(
    keys: list[uuid.UUID], who: str, reason: str | None, dry_run: bool, yes: bool, json_out: bool
) -> None:
    keys = list(dict.fromkeys(keys))
    if not dry_run:
        confirm_many(len(keys), yes, "replay")

    async def work(session: AsyncSession) -> list[Record]:
        done = []
        for key in keys:
            state = await delivery_state(session, key)
            if state is None:
                raise NotFound(f"no delivery {key}; nothing was replayed")
            target, status = state
            record = {"id": str(key), "target": target, "previous_status": status}
            if not dry_run:
                record["status"] = (await replay_delivery(session, key, who, reason)).status
            done.append(record)
        return done

    records = run_session(work)
    if json_out:
        replayed = 0 if dry_run else len(records)
        emit_json(
            {
                "dry_run": dry_run,
                "matched": len(records),
                "replayed": replayed,
                "deliveries": records,
            }
        )
        return
    if dry_run:
        say(f"dry run: {len(records)} deliveries would be replayed; nothing was changed")
        return
    rows = table("ID", "TARGET", "WAS", "NOW")
    for r in records:
        rows.add_row(
            r["id"], r["target"], status_text(r["previous_status"]), status_text(r["status"])
        )
    print_table(rows)
    say(f"{len(records)} replayed by {who}; the workers send them now")


def _replay_bulk(
    where: DeliveryFilter,
    who: str,
    reason: str | None,
    *,
    dry_run: bool,
    force: bool,
    yes: bool,
    json_out: bool,
) -> None:
    settings = load_settings_or_exit()

    async def count(session: AsyncSession) -> int:
        return await count_matching(session, where)

    matched = run_session(count, settings)
    summary: Record = {
        "dry_run": dry_run,
        "filter": where.describe(),
        "matched": matched,
        "cap": actions.BULK_CAP,
    }
    if dry_run or matched == 0:
        if json_out:
            emit_json(summary)
        elif matched == 0:
            say("no deliveries match: nothing to replay")
        else:
            say(f"dry run: {matched} deliveries would be replayed; nothing was changed")
        return
    cap = actions.BULK_CAP
    if matched > cap and not force:
        fail(
            f"{matched} deliveries match, over the cap of {cap}: narrow the filter, "
            "or add --force to replay them all"
        )
    confirm_many(matched, yes, "replay")

    async def work(sessions: Sessions) -> tuple[ReplayJob, bool]:
        async with sessions.begin() as session:
            job = await start_bulk_replay(session, where, who, reason, force=force)
        with _progress(job.total, enabled=not json_out) as update:
            try:
                return await run_bulk_replay(sessions, job.id, progress=update), False
            except (asyncio.CancelledError, KeyboardInterrupt):
                # Ctrl-C: asyncio.run cancelled this task; stop the job, then finish normally.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                async with sessions.begin() as session:
                    return await cancel_replay_job(session, job.id, who), True

    job, interrupted = run(work, settings)
    summary |= {"job_id": str(job.id), "status": job.status, "replayed": job.done}
    if json_out:
        emit_json(summary)
    elif interrupted:
        say(
            stderr=True,
            message=f"[yellow]interrupted: replay job {job.id} cancelled after {job.done} of "
            f"{job.total}; those are replayed, the rest are not[/]",
        )
    else:
        say(
            f"{job.done} of {matched} deliveries replayed by {who} (job {job.id}); "
            "the workers send them now"
        )
    if interrupted:
        raise typer.Exit(INTERRUPTED)


@contextmanager
def _progress(total: int, *, enabled: bool) -> Iterator[Callable[[ReplayJob], None]]:
    """A progress bar on stderr, fed with the job after each committed batch."""
    if not enabled:
        yield lambda job: None
        return
    with Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
    ) as bar:
        task = bar.add_task("replay", total=total)

        def update(job: ReplayJob) -> None:
            bar.update(task, completed=job.done)

        yield update
