"""`mmhub reconcile bitrix24 [--portal] [--since 24h] [--dry-run]`: create the events Bitrix24 never sent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import aiohttp
import typer
from redis.asyncio import Redis

from app.bitrix24.errors import RestError
from app.bitrix24.installs import NotInstalled
from app.bitrix24.oauth import OAuthRefused, OAuthUnavailable
from app.bitrix24.portals import Portals, portal_key
from app.bitrix24.reconcile import Sweep, sweep
from app.durations import parse_duration
from app.ingest.committer import GroupCommitter
from cli.output import say
from cli.support import Sessions, fail, load_settings_or_exit, run

app = typer.Typer(no_args_is_help=True)


@app.command("bitrix24")
def reconcile_bitrix24(
    portal: Annotated[
        str | None,
        typer.Option("--portal", help="member_id (default: every portal with reconcile)"),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="look back this far instead of from the watermark, e.g. 24h"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print what would be created, create nothing")
    ] = False,
) -> None:
    """List each configured entity's records modified since the watermark; create the events no received event covers."""
    settings = load_settings_or_exit()
    source = settings.hub.sources.bitrix24
    portals = [
        p
        for p in (source.portals if source else [])
        if p.reconcile and portal in (None, p.member_id)
    ]
    if not portals:
        fail(f"no portal {portal or ''} with `reconcile` in the configuration".replace("  ", " "))
    try:
        start = datetime.now(UTC) - parse_duration(since) if since else None
    except ValueError as exc:
        fail(f"--since: {exc}")
    cipher = settings.token_cipher()

    async def work(sessions: Sessions) -> list[tuple[str, Sweep]]:
        engine = sessions.kw["bind"]
        committer = None if dry_run else GroupCommitter(engine)
        if committer is not None:
            await committer.start()
        redis = Redis.from_url(settings.require_redis_url, socket_timeout=5)
        try:
            async with aiohttp.ClientSession() as http:
                clients = Portals(
                    settings.hub, redis, http, installs=(sessions, cipher) if cipher else None
                )
                results = []
                for p in portals:
                    client = clients.get(p.member_id, p.domain)
                    if client is None:
                        fail(f"portal {portal_key(p)}: no REST access (`rest`, or `app` installed)")
                    try:
                        found = await sweep(
                            p, client, engine, committer, settings.hub, since=start, dry_run=dry_run
                        )
                    except (RestError, NotInstalled, OAuthRefused, OAuthUnavailable) as exc:
                        fail(f"portal {portal_key(p)}: {exc}")
                    results.append((portal_key(p), found))
                return results
        finally:
            if committer is not None:
                await committer.stop()
            await redis.aclose()

    for key, found in run(work, settings):
        if found.locked:
            say(f"portal {key}: a relay is sweeping it right now; try again in a moment")
            continue
        head = f"portal {key}: {found.listed} records changed, {found.covered} already received"
        if dry_run:
            say(f"{head}; would create {len(found.would_create)} (dry run):")
            for subject in found.would_create:
                say(f"  {subject}")
        else:
            say(f"{head}, {found.duplicates} created before; created {found.created}")
