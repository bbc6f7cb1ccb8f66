"""Support commands that load their module only when run: `mmhub --help` stays fast.

Each support command module imports SQLAlchemy, the admin services and rich; the process roles
and the help never need them. The top-level group lists these commands from the table below
(name and one-line help) and imports a module only when its command is invoked (or its own
`--help` is asked for).
"""

from __future__ import annotations

import gc
import importlib
from typing import Any

import typer
from typer import (
    _click as click,  # Typer's own click (importing `click` too would load a second copy)
)
from typer.core import TyperCommand, TyperGroup

# name -> (module, attribute: a Typer app or a command function, one-line help)
COMMANDS = {
    "deliveries": ("cli.deliveries", "app", "Search, inspect, cancel deliveries."),
    "events": ("cli.events", "app", "Search and inspect received events."),
    "replay": ("cli.replay", "replay", "Replay deliveries by id, or in bulk by filter."),
    "targets": ("cli.targets", "app", "Target states; pause and resume."),
    "audit": ("cli.targets", "audit", "Who replayed, cancelled, paused or resumed what, and why."),
    "stats": ("cli.targets", "stats", "Deliveries by target and status; the oldest due."),
    "admin-token": ("cli.tokens", "admin_token", "Make an admin API token (shown once)."),
    "purge": ("cli.purge", "purge_command", "Delete old events in bounded batches (retention)."),
    "bitrix24": ("cli.bitrix24", "app", "The hub as a Bitrix24 application: keys, event handlers."),
    "reconcile": ("cli.reconcile", "app", "Create the events a source never sent (Bitrix24)."),
    "spool": ("cli.spool", "app", "The outage spool: events waiting for PostgreSQL."),
}


def load(name: str) -> click.Command:
    """The click command for a table entry (its module imported now)."""
    module, attribute, _ = COMMANDS[name]
    # Loading SQLAlchemy, pydantic and the services creates several hundred thousand objects that
    # live as long as the process: the cyclic collector would walk them again at every threshold
    # while they load (a noticeable share of a short command's start), so it waits, and they are
    # then frozen out of its reach.
    gc.disable()
    try:
        target: Any = getattr(importlib.import_module(module), attribute)
    finally:
        gc.freeze()
        gc.enable()
    if isinstance(target, typer.Typer):
        # A group even with one subcommand (`mmhub spool status`): Typer would collapse it.
        command: click.Command = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class _Deferred(TyperCommand):
    """Stands for a command in the listing; becomes the real one when it is invoked."""

    def __init__(self, name: str, short_help: str) -> None:
        super().__init__(name, help=short_help, short_help=short_help)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # Click invokes `ctx.command`: the real command from here on.
        return load(str(self.name)).make_context(info_name, args, parent=parent, **extra)


class LazyGroup(TyperGroup):
    """The `mmhub` group: its own commands plus the deferred support commands."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *COMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            return _Deferred(cmd_name, COMMANDS[cmd_name][2])
        return super().get_command(ctx, cmd_name)
