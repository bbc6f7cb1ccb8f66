"""Plumbing shared by the support commands (`deliveries`, `events`, `replay`, `targets`, `audit`).

They call the same service functions as the admin API, in-process: each command opens a small
engine from the settings, runs one coroutine, commits (the command is the transaction boundary)
and disposes the engine. A user error is one red line on stderr and exit code 1 (2 for a
configuration error); never a traceback.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import make_engine, make_sessionmaker
from app.errors import HubError
from app.outbox.filters import DeliveryFilter, parse_when
from app.settings import ConfigError, Settings
from cli.connections import settings_or_exit

T = TypeVar("T")
Sessions = async_sessionmaker[AsyncSession]

# Touching more deliveries than this asks first (or needs --yes).
CONFIRM_OVER = 100

# Options shared by the commands that take a delivery filter.
StatusOpt = Annotated[
    str | None, typer.Option("--status", help="delivery status, or several: dead,retrying")
]
TargetOpt = Annotated[str | None, typer.Option("--target", help="target name, e.g. erp")]
SourceOpt = Annotated[str | None, typer.Option("--source", help="bitrix24 or onec")]
EventTypeOpt = Annotated[
    str | None, typer.Option("--event-type", help="event type; * matches anything: ONCRMDEAL*")
]
SubjectOpt = Annotated[str | None, typer.Option("--subject", help="e.g. deal/7405")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="received at or after: 2h, 30m, 7d or ISO 8601")
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="received before: 1h or ISO 8601")]
TextOpt = Annotated[str | None, typer.Option("--text", help="text inside the event's payload")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]
ActorOpt = Annotated[
    str | None, typer.Option("--actor", help="who does this, for the audit (default: user@cli)")
]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="why, for the audit log")]


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with one red line on stderr and a non-zero exit code."""
    typer.secho(message, err=True, fg="red")
    raise typer.Exit(code)


def default_actor() -> str:
    """`user@cli`: the audit's actor when --actor is not given."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@cli"


def describe(exc: ValidationError) -> str:
    """A validation error as the options the user typed: `--status: unknown status 'nope' …`."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"--{key.replace('_', '-')}: {message}" if key else message)
    return "; ".join(lines)


def build_filter(**fields: str | None) -> DeliveryFilter:
    """A DeliveryFilter from the command's options; a bad value ends the command (exit 1)."""
    given = {key: value for key, value in fields.items() if value not in (None, "")}
    try:
        return DeliveryFilter.model_validate(given)
    except ValidationError as exc:
        fail(describe(exc))


def has_filter(**fields: Any) -> bool:
    """True when any filter option was given."""
    return any(value not in (None, "") for value in fields.values())


def parse_since(value: str | None, option: str = "--since") -> datetime | None:
    """A relative (`2h`) or ISO 8601 time, or None; a bad value ends the command (exit 1)."""
    if value in (None, ""):
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        fail(f"{option}: {exc}")


def parse_id(value: str, what: str = "delivery") -> uuid.UUID:
    """A UUID argument; anything else ends the command (exit 1)."""
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        fail(f"not a {what} id: {value!r} (ids look like 0193e6a4-6a1b-7c3d-8e9f-0a1b2c3d4e5f)")


def confirm_many(count: int, yes: bool, doing: str) -> None:
    """Ask before touching more than CONFIRM_OVER deliveries; without a terminal, need --yes."""
    if count <= CONFIRM_OVER or yes:
        return
    if not interactive():
        fail(
            f"this would {doing} {count} deliveries (more than {CONFIRM_OVER}); "
            "no terminal to ask for confirmation, so nothing was changed: add --yes"
        )
    if not typer.confirm(f"{doing.capitalize()} {count} deliveries?", default=False):
        fail("nothing was changed")


def interactive() -> bool:
    """True when a person can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()


def load_settings_or_exit() -> Settings:
    """The hub's settings with the database resolved (the embedded one `make run` started)."""
    return settings_or_exit()


def run(work: Callable[[Sessions], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run `work` with a session factory on a small engine, then dispose of the engine.

    `work` commits what it does (see `run_session` for the one-transaction case). Service errors
    (HubError) and an unreachable or unmigrated database end the command with one clear line.
    """
    settings = settings or load_settings_or_exit()
    try:
        return asyncio.run(_with_engine(settings, work))
    except HubError as exc:
        fail(exc.detail)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", 2)
    except ProgrammingError as exc:
        if "does not exist" in str(exc.orig):
            fail("the database has no mmhub tables yet: run `mmhub migrate`")
        raise
    except (OSError, TimeoutError, OperationalError, InterfaceError) as exc:
        fail(f"cannot reach the database: {_first_line(exc)}")


def run_session(
    work: Callable[[AsyncSession], Awaitable[T]], settings: Settings | None = None
) -> T:
    """Run `work` in one transaction, committed when it returns (rolled back if it raises)."""

    async def once(sessions: Sessions) -> T:
        async with sessions.begin() as session:
            return await work(session)

    return run(once, settings)


async def _with_engine(settings: Settings, work: Callable[[Sessions], Awaitable[T]]) -> T:
    engine = make_engine(settings.require_database_url, pool_size=2, application_name="mmhub-cli")
    try:
        return await work(make_sessionmaker(engine))
    finally:
        await engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
