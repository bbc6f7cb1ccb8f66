"""The real processes: `mmhub relay` and `mmhub worker` survive Redis flushes and killed workers."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from tests.dispatch.harness import deal, deliveries, eventually, hub_with_target, ingest
from tests.fake_target import FakeTarget
from tests.http_app import running_app
from tests.processes import ROOT, Processes


@pytest.fixture
def processes(
    urls: tuple[str, str], tmp_path: Path, fake_target: FakeTarget
) -> Iterator[Processes]:
    config = tmp_path / "mmhub.yaml"
    config.write_text(yaml.safe_dump(hub_with_target(fake_target.url)), encoding="utf-8")
    procs = Processes(urls, config)
    yield procs
    procs.stop_all()


async def all_delivered(engine: AsyncEngine, count: int) -> bool:
    rows = await deliveries(engine)
    return len(rows) == count and all(r.status == "delivered" for r in rows)


async def test_redis_flushed_mid_run_loses_nothing(
    processes: Processes,
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    fake_target: FakeTarget,
    redis: Redis,
) -> None:
    processes.start("relay")
    processes.start("worker")
    settings = settings_for(hub_with_target(fake_target.url))
    async with running_app(settings) as client:
        await ingest(client, *(deal(i) for i in range(1, 31)))
        await eventually(lambda: _received_at_least(fake_target, 1))
        await redis.flushall()  # queued jobs, drain keys and buckets are gone
        await ingest(client, *(deal(i) for i in range(31, 61)))
        await eventually(lambda: all_delivered(engine, 60), seconds=60)

    keys = {r.headers["idempotency-key"] for r in fake_target.requests}
    assert keys == {str(r.id) for r in await deliveries(engine)}


async def test_worker_killed_mid_delivery_is_redelivered_with_the_same_key(
    processes: Processes,
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    fake_target: FakeTarget,
    redis: Redis,
) -> None:
    fake_target.reply(status=200, delay=30)  # the first attempt hangs until its worker dies
    processes.start("relay")
    doomed = processes.start("worker")
    settings = settings_for(hub_with_target(fake_target.url))
    async with running_app(settings) as client:
        await ingest(client, deal(7405))
        await eventually(lambda: _received_at_least(fake_target, 1))
        [claimed] = await deliveries(engine)
        assert claimed.status == "delivering"
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        processes.start("worker")
        await eventually(lambda: all_delivered(engine, 1), seconds=60)

    first, second = fake_target.requests[:2]
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == str(claimed.id)
    [delivery] = await deliveries(engine)
    assert delivery.attempt_count == 1  # the killed attempt left no result to record


async def _received_at_least(fake: FakeTarget, count: int) -> bool:
    return len(fake.requests) >= count


def test_worker_refuses_a_private_target_without_allow_private(
    urls: tuple[str, str], tmp_path: Path
) -> None:
    config = hub_with_target("http://127.0.0.1:9/erp")
    del config["targets"]["erp"]["allow_private"]
    path = tmp_path / "mmhub.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    procs = Processes(urls, path)
    for role in ("worker", "relay"):
        result = subprocess.run(
            [sys.executable, "-m", "cli", role],
            env=procs.env,
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert b"erp" in result.stderr
        assert b"allow_private" in result.stderr
