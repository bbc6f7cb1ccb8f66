"""A real Prometheus (Debian's) scrapes a running hub's three roles and evaluates its alert rules.

Events sent to a paused target: through Prometheus' HTTP API the test sees the backlog and lag
series rise and the lag alert go pending. The rules are the shipped ones with one change: the lag
threshold is 1 s instead of 60 s, so the test need not wait a minute (promtool's unit tests hold the
shipped threshold; see test_alert_rules.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import make_sessionmaker
from app.embedded import free_port
from app.outbox.states import pause_target
from tests.dispatch.harness import FORM, deal, eventually
from tests.fake_target import FakeTarget
from tests.roles import ROOT, Processes, hub_ports

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"


def lowered_rules(path: Path) -> Path:
    """The shipped rules, the lag threshold lowered to 1 s."""
    rules = yaml.safe_load(RULES.read_text())
    [lag] = [r for r in rules["groups"][0]["rules"] if r["alert"] == "MmhubDeliveryLag"]
    assert lag["expr"].endswith("> 60")
    lag["expr"] = lag["expr"].removesuffix("> 60") + "> 1"
    path.write_text(yaml.safe_dump(rules))
    return path


@pytest.fixture
async def prometheus(
    tmp_path: Path,
) -> AsyncIterator[Callable[[dict[str, int]], httpx.AsyncClient]]:
    """`start(ports)`: Prometheus on a free port scraping the roles every second; its API client."""
    running: list[subprocess.Popen[bytes]] = []
    clients: list[httpx.AsyncClient] = []

    def start(ports: dict[str, int]) -> httpx.AsyncClient:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(lowered_rules(tmp_path / "rules.yml"))],
            "scrape_configs": [
                {
                    "job_name": f"mmhub-{role}",
                    "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                }
                for role, port in ports.items()
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        with (tmp_path / "prometheus.log").open("wb") as log:
            running.append(
                subprocess.Popen(
                    [
                        "prometheus",
                        f"--config.file={tmp_path / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp_path / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=log,
                    stderr=log,
                )
            )
        clients.append(httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5))
        return clients[-1]

    yield start
    for client in clients:
        await client.aclose()
    for process in running:
        process.terminate()
        process.wait(timeout=15)


async def query(api: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
    try:
        reply = await api.get("/api/v1/query", params={"query": promql})
    except httpx.TransportError:
        return []  # not listening yet
    return list(reply.json()["data"]["result"]) if reply.status_code == 200 else []


async def value(api: httpx.AsyncClient, promql: str) -> float | None:
    result = await query(api, promql)
    return float(result[0]["value"][1]) if result else None


async def test_prometheus_sees_backlog_and_lag_rise_and_the_lag_alert_pending(
    hub_processes: Callable[..., Processes],
    fake_target: FakeTarget,
    engine: AsyncEngine,
    prometheus: Callable[[dict[str, int]], httpx.AsyncClient],
) -> None:
    async with make_sessionmaker(engine).begin() as session:
        await pause_target(session, "erp", "maintenance window", "test")
    roles = hub_processes(fake_target.url, MMHUB_GAUGES_INTERVAL="500ms")
    ports = hub_ports()
    api = prometheus(ports)  # starts while the roles do
    await roles.start_hub(ports)
    held = 'max(mmhub_deliveries{target="erp",status="held"})'
    lag = 'max(mmhub_oldest_due_seconds{target="erp"})'

    async def all_scraped() -> bool:
        return await value(api, 'count(up{job=~"mmhub-.*"} == 1)') == 3

    async def empty_backlog_seen() -> bool:
        return await value(api, held) == 0 and await value(api, lag) == 0

    await eventually(all_scraped, seconds=60)
    await eventually(empty_backlog_seen, seconds=30)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}") as client:
        for deal_id in (1, 2, 3):
            reply = await client.post("/webhooks/bitrix24", content=deal(deal_id), headers=FORM)
            assert reply.status_code == 200, reply.text

    async def backlog_seen() -> bool:
        return await value(api, held) == 3

    async def lag_alert_pending() -> bool:
        alerts = (await api.get("/api/v1/alerts")).json()["data"]["alerts"]
        return any(
            a["labels"]["alertname"] == "MmhubDeliveryLag"
            and a["labels"]["target"] == "erp"
            and a["state"] == "pending"
            for a in alerts
        )

    await eventually(backlog_seen, seconds=30)
    await eventually(lag_alert_pending, seconds=30)
    assert (await value(api, lag) or 0) > 1
    assert await value(api, 'max(mmhub_target_paused{target="erp"})') == 1
    assert await value(api, 'sum(mmhub_ingested_events_total{source="bitrix24"})') == 3
    assert fake_target.requests == []  # paused: nothing was sent
