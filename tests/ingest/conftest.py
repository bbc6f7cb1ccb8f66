"""Servers an outage test may stop: the session's are shared by every other test."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from app.db import make_engine
from app.embedded import EmbeddedServers, RunningServers, remove_state
from app.migrate import upgrade


@pytest.fixture(scope="module")
def module_servers() -> Iterator[EmbeddedServers]:
    state = Path(tempfile.mkdtemp(prefix="mmhub-outage-"))
    state.chmod(0o755)
    servers = EmbeddedServers(state, durable=False)
    runtime, _ = servers.start()
    upgrade(runtime.database_url)
    yield servers
    servers.stop()
    remove_state(state)


@pytest.fixture
async def own_servers(module_servers: EmbeddedServers) -> EmbeddedServers:
    """The module's servers with PostgreSQL up (a test may have left it stopped), tables empty."""
    runtime = recorded_runtime(module_servers)
    if not (module_servers.pgdata / "postmaster.pid").exists():
        module_servers.start_postgres(runtime.pg_port)
    engine = make_engine(runtime.database_url, pool_size=1)
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE events, deliveries, delivery_attempts RESTART IDENTITY"))
    await engine.dispose()
    return module_servers


def recorded_runtime(servers: EmbeddedServers) -> RunningServers:
    """The ports the servers were started on (also while PostgreSQL is stopped)."""
    return RunningServers(**json.loads(servers.runtime_file.read_text()))
