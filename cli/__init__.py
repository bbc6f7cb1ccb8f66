"""`mmhub`: the hub's processes and the support engineers' commands.

Imports stay inside the commands: `mmhub --help` loads only Typer (see cli/lazy.py for the support
commands, whose modules load when they run).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from cli.lazy import LazyGroup

if TYPE_CHECKING:
    from app.hubconfig import HubConfig
    from app.settings import Settings

# Plain help (no rich rendering) for the top level: rich's help formatter alone takes longer to
# import than the whole budget of `mmhub --help`; the support commands keep their rich help.
cli = typer.Typer(
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _listening(port: int) -> bool:
    with contextlib.closing(socket.socket()) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@cli.command()
def migrate() -> None:
    """Apply the database migrations (alembic upgrade head)."""
    from app.migrate import upgrade
    from cli.connections import settings_or_exit

    settings = settings_or_exit()
    upgrade(settings.require_database_url)
    typer.echo("database migrated")


@cli.command()
def api(
    host: Annotated[str | None, typer.Option(help="default MMHUB_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default MMHUB_PORT")] = None,
) -> None:
    """Serve the HTTP API (ingest, admin, health, metrics)."""
    import uvicorn

    from app.main import create_app
    from cli.connections import settings_or_exit

    settings = settings_or_exit()
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port if port is not None else settings.port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=10,
    )


@cli.command()
def relay() -> None:
    """Move committed, due deliveries to the queue (wakes on NOTIFY, polls for retries)."""
    import asyncio
    import signal as signals

    from cli.connections import settings_or_exit
    from dispatch.relay import run_relay
    from dispatch.ssrf import check_targets

    settings = settings_or_exit()
    _check_targets(check_targets, settings)
    _serve_metrics("mmhub-relay", settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signals.SIGINT, signals.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_relay(settings, stop)

    asyncio.run(main())


@cli.command()
def worker(
    burst: Annotated[bool, typer.Option(help="exit when the queue is empty")] = False,
) -> None:
    """Deliver: take drain jobs from the queue (an RQ SimpleWorker, see dispatch/worker.py)."""
    from cli.connections import settings_or_exit
    from dispatch.ssrf import check_targets
    from dispatch.worker import run_worker

    settings = settings_or_exit()
    _check_targets(check_targets, settings)
    _serve_metrics("mmhub-worker", settings)
    run_worker(settings, burst=burst)


def _check_targets(check: Callable[[HubConfig], None], settings: Settings) -> None:
    """Refuse to start on a target URL in a private range (unless the target allows it)."""
    try:
        check(settings.hub)
    except ValueError as exc:
        typer.secho(f"configuration error: {exc}", err=True, fg="red")
        raise typer.Exit(2) from None


@cli.command()
def sink(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="MMHUB_DEV_SINK_PORT")] = 8099,
) -> None:
    """A local stand-in target that accepts and logs every request (for `make run`)."""
    from app.logs import setup_logging
    from cli.sink import serve_sink

    setup_logging("INFO")
    serve_sink(host, port)


@cli.command("fake-portal")
def fake_portal(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="MMHUB_DEV_PORTAL_PORT")] = 8098,
    user: Annotated[int, typer.Option(help="the webhook's user id")] = 1,
    code: Annotated[str, typer.Option(envvar="B24_WEBHOOK_CODE", show_default=False)] = "devcode",
    deals: Annotated[int, typer.Option(help="deals to create at start")] = 100,
    client_secret: Annotated[
        str, typer.Option(envvar="B24_CLIENT_SECRET", show_default=False)
    ] = "dev-client-secret",  # noqa: S107 - the dev portal's own, overridable
) -> None:
    """A fake Bitrix24 portal on /rest/{user}/{code}/ with Bitrix24's limits (for `make run`)."""
    from app.logs import setup_logging
    from cli.fake_portal.server import run_fake_portal

    setup_logging("INFO")
    run_fake_portal(host, port, user=user, code=code, deals=deals, client_secret=client_secret)


def _serve_metrics(service: str, settings: Settings) -> None:
    """Traces for this role; its /metrics on MMHUB_METRICS_PORT when set."""
    from prometheus_client import start_http_server

    from app.tracing import setup_tracing

    setup_tracing(service)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host)


ROLES = ("api", "relay", "worker")
# The local tokens config/dev.yaml accepts (by their hashes); printed only when the configuration
# in use accepts them.
DEV_TOKENS = {"operator": "mmhub-dev-operator-token", "viewer": "mmhub-dev-viewer-token"}


def _console_hint(settings: Settings) -> None:
    """Print the console's URL and the dev configuration's local tokens."""
    import hashlib

    typer.echo(f"support console: http://{settings.host}:{settings.port}/console")
    configured = {token.token_sha256 for token in settings.hub.admin.tokens}
    for role, token in DEV_TOKENS.items():
        if hashlib.sha256(token.encode()).hexdigest() in configured:
            typer.echo(f"  local {role} token (dev configuration only): {token}")


def _metrics_ports(settings: Settings) -> dict[str, int]:
    """Each dispatch role needs its own /metrics port: MMHUB_METRICS_PORT and the next one, or
    free ports when it is not set."""
    from app.embedded import free_port

    if settings.metrics_port:
        return {"relay": settings.metrics_port, "worker": settings.metrics_port + 1}
    return {"relay": free_port(), "worker": free_port()}


@cli.command()
def dev(
    with_sink: Annotated[
        bool,
        typer.Option(
            "--sink",
            help="also run `mmhub sink` on 127.0.0.1:8099 and `mmhub fake-portal` on :8098",
        ),
    ] = False,
) -> None:
    """Embedded servers, migrations, then every process role in the foreground (Ctrl-C stops all)."""
    from app.migrate import upgrade
    from cli.connections import config_record, settings_or_exit

    settings = settings_or_exit(own=True)
    upgrade(settings.require_database_url)
    config_record().parent.mkdir(parents=True, exist_ok=True)
    config_record().write_text(str(settings.config.resolve()))
    env = {
        **os.environ,
        "MMHUB_DATABASE_URL": settings.require_database_url,
        "MMHUB_REDIS_URL": settings.require_redis_url,
    }
    roles = [*ROLES, "sink", "fake-portal"] if with_sink else list(ROLES)
    if with_sink and _listening(int(os.environ.get("MMHUB_DEV_PORTAL_PORT", "8098"))):
        roles.remove("fake-portal")  # one runs already (its records and queues outlive the hub)
    metrics = _metrics_ports(settings)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "cli", role],
            env={**env, "MMHUB_METRICS_PORT": str(metrics[role])} if role in metrics else env,
        )
        for role in roles
    ]
    typer.echo(
        f"mmhub is up on http://{settings.host}:{settings.port} "
        f"({', '.join(roles)}); Ctrl-C stops everything"
    )
    typer.echo(f"  api    metrics: http://{settings.host}:{settings.port}/metrics")
    for role, port in metrics.items():
        typer.echo(f"  {role:<6} metrics: http://{settings.host}:{port}/metrics")
    _console_hint(settings)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        child.wait(timeout=30)
    # The embedded servers stop through the atexit hook registered by resolve().
    code = max((child.returncode or 0) for child in children) if not stopping else 0
    raise typer.Exit(code)


def main() -> None:
    cli()
