"""The issue's story end to end, with `mmhub` as real processes in a second "terminal".

1C goes down (503), deliveries die; the support engineer finds them, counts them with a dry run,
replays them once 1C is back, the worker delivers them, and the audit says who did it and why.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from dispatch.deliver import drain
from dispatch.runtime import Runtime
from tests.cli.helpers import write_config
from tests.dispatch.harness import (
    attempts,
    deal,
    deliveries,
    eventually,
    hub_with_target,
    ingest,
    make_due,
)
from tests.fake_target import FakeTarget
from tests.http_app import running_app

ROOT = Path(__file__).resolve().parents[2]


class Terminal:
    """`mmhub …` as a separate process, with the environment a shell in the checkout would have."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}

    async def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cli", *args]
        done = await asyncio.to_thread(
            subprocess.run,
            command,
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done


async def test_dead_deliveries_found_counted_replayed_delivered_and_audited(
    urls: tuple[str, str],
    tmp_path: Path,
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    fake_target: FakeTarget,
) -> None:
    hub = hub_with_target(fake_target.url)
    # Two attempts each: 6 failures stay under the circuit breaker's minimum of 10 attempts.
    hub["retry"] = {"schedule": ["50ms"], "timeout": "2s"}
    config = tmp_path / "mmhub.yaml"
    terminal = Terminal(
        {
            **write_config(config, hub),
            "MMHUB_DATABASE_URL": urls[0],
            "MMHUB_REDIS_URL": urls[1],
            "MMHUB_CONFIG": str(config),
            "MMHUB_LOG_LEVEL": "WARNING",
        }
    )
    settings = settings_for(hub)
    fake_target.set_default(status=503)
    async with running_app(settings) as client:
        await ingest(client, deal(1), deal(2), deal(3))
    rt = await Runtime.open(settings)
    try:

        async def worker_pass(until: str) -> bool:
            await make_due(engine)
            await drain(rt, "erp", budget=10)
            return {r.status for r in await deliveries(engine)} == {until}

        await eventually(lambda: worker_pass("dead"))
        dead = {str(r.id) for r in await deliveries(engine)}
        assert {r.status for r in await deliveries(engine)} == {"dead"}

        found = await terminal.run("deliveries", "list", "--status", "dead", "--json")
        assert {item["id"] for item in json.loads(found.stdout)["items"]} == dead

        bulk = ("replay", "--status", "dead", "--target", "erp", "--since", "1h")
        dry = await terminal.run(*bulk, "--dry-run")
        assert "3 deliveries would be replayed" in dry.stdout
        assert {r.status for r in await deliveries(engine)} == {"dead"}

        fake_target.set_default(status=200)  # 1C is back
        replayed = await terminal.run(*bulk, "--reason", "1C back", "--yes")
        assert "3 of 3 deliveries replayed" in replayed.stdout
        await eventually(lambda: worker_pass("delivered"))
    finally:
        await rt.close()

    assert {r.status for r in await deliveries(engine)} == {"delivered"}
    manual = [a for a in await attempts(engine) if a.manual]
    assert sorted(str(a.delivery_id) for a in manual) == sorted(dead)
    assert {a.http_status for a in manual} == {200}

    audit = json.loads((await terminal.run("audit", "--json")).stdout)
    [entry] = [e for e in audit if e["action"] == "bulk_replay"]
    assert entry["actor"].endswith("@cli")
    assert (entry["reason"], entry["count"], entry["target"]) == ("1C back", 3, "erp")
