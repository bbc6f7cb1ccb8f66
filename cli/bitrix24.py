"""`mmhub bitrix24 …`: the hub as a Bitrix24 application: token keys, event handlers."""

from __future__ import annotations

from typing import Annotated

import aiohttp
import typer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from app.bitrix24.bind import BindPlan, bind
from app.bitrix24.cipher import CipherError, new_key
from app.bitrix24.errors import RestError
from app.bitrix24.installs import NotInstalled, rotate_keys
from app.bitrix24.oauth import OAuthRefused, OAuthUnavailable
from app.bitrix24.portals import Portals
from app.hubconfig import Portal
from app.settings import Settings
from cli.output import say
from cli.support import Sessions, fail, load_settings_or_exit, run, run_session

app = typer.Typer(no_args_is_help=True)


@app.command("new-key")
def new_key_command() -> None:
    """Print a new key for MMHUB_TOKEN_KEYS (put it first; keep the old ones until rotate-key ran)."""
    typer.echo(new_key())


@app.command("rotate-key")
def rotate_key_command() -> None:
    """Re-encrypt every stored Bitrix24 token with the first key of MMHUB_TOKEN_KEYS.

    Rotation: MMHUB_TOKEN_KEYS="NEW,OLD" on every process, run this, then drop OLD.
    """
    settings = load_settings_or_exit()
    cipher = settings.token_cipher()
    if cipher is None:
        fail("no Bitrix24 portal has `app`: there are no stored tokens to rotate")

    async def work(session: AsyncSession) -> int:
        try:
            return await rotate_keys(session, cipher)
        except CipherError as exc:
            fail(f"{exc}: keep every key that encrypted a stored token in MMHUB_TOKEN_KEYS")

    count = run_session(work, settings)
    say(f"re-encrypted the tokens of {count} installation(s) with the newest key")


@app.command("bind")
def bind_command(
    portal: Annotated[
        str | None, typer.Option("--portal", help="member_id (default: every application portal)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the changes, make none")] = False,
) -> None:
    """Register the event handlers the routes need (offline with the auth_connector, ONOFFLINEEVENT), idempotently."""
    settings = load_settings_or_exit()
    cipher = settings.token_cipher()
    portals = [p for p in _app_portals(settings) if portal in (None, p.member_id)]
    if cipher is None or not portals:
        fail(
            f"no application portal {portal or ''} in the configuration (a portal with `app`)".replace(
                "  ", " "
            )
        )

    async def work(sessions: Sessions) -> list[tuple[str, BindPlan]]:
        redis = Redis.from_url(settings.require_redis_url, socket_timeout=5)
        try:
            async with aiohttp.ClientSession() as http:
                clients = Portals(settings.hub, redis, http, installs=(sessions, cipher))
                plans = []
                for p in portals:
                    client = clients.get(p.member_id, p.domain)
                    assert client is not None
                    try:
                        plans.append(
                            (str(p.member_id), await bind(client, settings.hub, p, dry_run=dry_run))
                        )
                    except (RestError, NotInstalled, OAuthRefused, OAuthUnavailable) as exc:
                        fail(f"portal {p.member_id}: {exc}")
                return plans
        finally:
            await redis.aclose()

    for member_id, plan in run(work, settings):
        say(f"portal {member_id}:" + (" (dry run: nothing changed)" if dry_run else ""))
        for handler in plan.bind:
            say(f"  + {handler.describe()}")
        for handler in plan.unbind:
            say(f"  - {handler.describe()}")
        for handler in plan.keep:
            say(f"  = {handler.describe()}")
        for pattern in plan.patterns:
            say(f"  ! {pattern}: a route pattern cannot be bound; name the events in the route")


def _app_portals(settings: Settings) -> list[Portal]:
    source = settings.hub.sources.bitrix24
    return [p for p in (source.portals if source else []) if p.app is not None]
