"""`mmhub bitrix24 …`: the hub as a Bitrix24 application (token keys; `bind` and offline pulls come with it)."""

from __future__ import annotations

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from app.bitrix24.cipher import CipherError, new_key
from app.bitrix24.installs import rotate_keys
from cli.output import say
from cli.support import fail, load_settings_or_exit, run_session

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
