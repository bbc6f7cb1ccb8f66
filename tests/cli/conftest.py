"""Support CLI tests: `mmhub` run in-process against the session's servers, and rows to act on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from cli import cli
from tests.cli.helpers import Mmhub, write_config
from tests.fake_target import FakeTarget
from tests.hub_config import HUB_CONFIG


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """The CLI installs its own stderr log handler; give the root logger back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def cli_env(urls: tuple[str, str], tmp_path: Path) -> dict[str, str]:
    """The environment a support engineer's shell would have: servers, mmhub.yaml, secrets."""
    config = tmp_path / "mmhub.yaml"
    return {
        **write_config(config, HUB_CONFIG),
        "MMHUB_DATABASE_URL": urls[0],
        "MMHUB_REDIS_URL": urls[1],
        "MMHUB_CONFIG": str(config),
        "MMHUB_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def mmhub(cli_env: dict[str, str], engine: AsyncEngine) -> Mmhub:
    """`await mmhub("deliveries", "list", "--json")`: the CLI in a thread (it runs its own loop)."""

    async def invoke(
        *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        runner = CliRunner()
        root = logging.getLogger()
        handlers = root.handlers[:]
        try:
            return await asyncio.to_thread(
                runner.invoke, cli, list(args), input=input, env={**cli_env, **(env or {})}
            )
        finally:
            root.handlers[:] = handlers  # the CLI's handler wrote to the runner's closed stderr

    return invoke


@pytest.fixture
async def fake_target() -> AsyncIterator[FakeTarget]:
    async with FakeTarget() as server:
        yield server
