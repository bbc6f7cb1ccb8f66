"""Test harness: real PostgreSQL 16 and a real Redis-compatible server for the whole session.

Without MMHUB_TEST_DATABASE_URL / MMHUB_TEST_REDIS_URL, the session starts embedded servers from the
PyPI wheels in a throwaway directory (fsync off: tests check behaviour, benchmarks check speed).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import make_engine
from app.embedded import EmbeddedServers, remove_state
from app.hubconfig import HubConfig
from app.migrate import upgrade
from app.settings import Settings
from tests.http_app import HubClient, running_app


@pytest.fixture(scope="session")
def urls() -> Iterator[tuple[str, str]]:
    database_url = os.environ.get("MMHUB_TEST_DATABASE_URL")
    redis_url = os.environ.get("MMHUB_TEST_REDIS_URL")
    servers = None
    if not (database_url and redis_url):
        state = Path(tempfile.mkdtemp(prefix="mmhub-test-"))
        state.chmod(0o755)  # the PostgreSQL system user must reach its data directory
        servers = EmbeddedServers(state, durable=False)
        runtime, _ = servers.start()
        database_url = database_url or runtime.database_url
        redis_url = redis_url or runtime.redis_url
    upgrade(database_url)
    yield database_url, redis_url
    if servers is not None:
        servers.stop()
        remove_state(servers.state_dir)


@pytest.fixture(scope="session")
async def engine(urls: tuple[str, str]) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(urls[0], pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
async def clean_database(request: pytest.FixtureRequest) -> None:
    """Each test starts from empty tables (only tests that touch the database pay for it)."""
    if "engine" not in request.fixturenames and "hub" not in request.fixturenames:
        return
    engine: AsyncEngine = request.getfixturevalue("engine")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE events, deliveries, delivery_attempts, target_states, audit_log, replay_jobs,"
                " bitrix24_installs, bitrix24_offline, bitrix24_writes, bitrix24_watermarks RESTART IDENTITY"
            )
        )


@pytest.fixture
async def redis(urls: tuple[str, str]) -> AsyncIterator[Redis]:
    client = Redis.from_url(urls[1])
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def settings_for(urls: tuple[str, str], tmp_path: Path) -> Callable[..., Settings]:
    """Settings on the session's servers with a given hub configuration (a dict as in the YAML).

    The outage spool lives in the test's own directory: never in ./.mmhub, where `make run` keeps one.
    """

    def make(hub: dict[str, Any] | None = None, **overrides: Any) -> Settings:
        config = HubConfig.model_validate(hub or {})
        overrides.setdefault("spool_dir", tmp_path / "spool")
        return Settings(database_url=urls[0], redis_url=urls[1], hub=config, **overrides)

    return make


@pytest.fixture
async def hub(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> AsyncIterator[HubClient]:
    """The real ASGI app with the fixture portals, a 1C source and routes to two targets."""
    from tests.hub_config import HUB_CONFIG

    async with running_app(settings_for(HUB_CONFIG)) as client:
        yield client
