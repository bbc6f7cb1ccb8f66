"""Fixtures for the observability tests: the hub's three roles as real processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.dispatch.harness import hub_with_target
from tests.fake_target import FakeTarget
from tests.roles import Processes


@pytest.fixture
def hub_processes(urls: tuple[str, str], tmp_path: Path) -> Iterator[Callable[..., Processes]]:
    """`make(target_url, **env)`: roles whose only target `erp` is at `target_url`."""
    made: list[Processes] = []

    def make(target_url: str, **env: str) -> Processes:
        config = tmp_path / "mmhub.yaml"
        config.write_text(yaml.safe_dump(hub_with_target(target_url)), encoding="utf-8")
        made.append(Processes(urls, config, **env))
        return made[-1]

    yield make
    for processes in made:
        processes.stop_all()


@pytest.fixture
async def fake_target() -> AsyncIterator[FakeTarget]:
    """A real HTTP server on 127.0.0.1 standing in for the target `erp`."""
    async with FakeTarget() as server:
        yield server
