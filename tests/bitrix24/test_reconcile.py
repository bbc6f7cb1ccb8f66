"""Reconciliation: the changes a portal made that no webhook brought become events, once."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.bitrix24.portals import Portals
from app.bitrix24.reconcile import Sweep, sweep
from app.ingest.committer import GroupCommitter
from app.models import Bitrix24Watermark, Delivery, Event
from app.settings import Settings
from cli import cli
from cli.fake_portal import FakePortal
from dispatch.runtime import Runtime
from tests.cli.helpers import write_config
from tests.dispatch.harness import FORM, deal
from tests.http_app import running_app
from tests.hub_config import HUB_CONFIG

DEAL_PORTAL = "d897063e1ce7c5eb9f04b9751eef5915"
HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


def reconciled_hub(portal: FakePortal) -> dict[str, Any]:
    config = copy.deepcopy(HUB_CONFIG)
    for configured in config["sources"]["bitrix24"]["portals"]:
        if configured.get("member_id") == DEAL_PORTAL:
            configured["rest"] = {"webhook_url": portal.webhook_url(1), "allow_private": True}
            configured["reconcile"] = {"every": "15m", "entities": ["deal"]}
    return config


@pytest.fixture
async def swept(
    settings_for: Callable[..., Settings], engine: AsyncEngine, portal: FakePortal
) -> AsyncIterator[Callable[..., Any]]:
    """`await run(since=..., dry_run=...)`: one sweep of the deal portal, as a relay makes it."""
    settings = settings_for(reconciled_hub(portal))
    rt = await Runtime.open(settings)
    committer = GroupCommitter(engine)
    await committer.start()
    [configured] = [p for p in settings.hub.sources.bitrix24.portals if p.reconcile]  # type: ignore[union-attr]
    client = Portals(settings.hub, rt.redis, rt.http).get(configured.member_id, None)

    async def run(**options: Any) -> Sweep:
        assert client is not None
        return await sweep(configured, client, engine, committer, settings.hub, **options)

    try:
        yield run
    finally:
        await committer.stop()
        await rt.close()


async def events(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(Event).order_by(Event.subject))).all())


async def test_changes_no_webhook_brought_become_events_once(
    swept: Callable[..., Any],
    portal: FakePortal,
    engine: AsyncEngine,
    settings_for: Callable[..., Settings],
) -> None:
    for number in range(1, 121):  # three pages of 50
        portal.put("deal", {"ID": number, "TITLE": f"deal {number}"}, by=3)
    async with running_app(
        settings_for(reconciled_hub(portal))
    ) as hub:  # deal 5's webhook did arrive
        reply = await hub.post(
            "/webhooks/bitrix24",
            content=deal(5, ts=int(datetime.now(UTC).timestamp())),
            headers=FORM,
        )
        assert reply.status_code == 200

    first = await swept(since=HOUR_AGO)
    second = await swept()

    assert (first.listed, first.created, first.covered) == (120, 119, 1)
    assert second.created == 0 and second.listed == second.duplicates + second.covered
    stored = await events(engine)
    reconciled = [e for e in stored if e.dedup_key.startswith("reconcile:")]
    assert len(reconciled) == 119 and "deal/5" not in {e.subject for e in reconciled}
    assert {e.type for e in reconciled} == {"ONCRMDEALUPDATE"}
    assert reconciled[0].payload["data"] == {"FIELDS": {"ID": reconciled[0].subject.split("/")[1]}}
    async with engine.connect() as conn:
        deliveries = await conn.scalar(select(func.count()).select_from(Delivery))
        [mark] = (await conn.execute(select(Bitrix24Watermark))).all()
    assert (
        deliveries == 120 * 1 + 119 * 0 or deliveries >= 120
    )  # routed like webhooks (deals-to-erp, audit)
    assert (mark.portal, mark.entity) == (DEAL_PORTAL, "deal")

    portal.update("deal", 7, {"TITLE": "changed later"}, by=3)
    await asyncio.sleep(1.1)  # the portal keeps whole seconds: a later save has a later DATE_MODIFY
    portal.update("deal", 7, {"TITLE": "changed again"}, by=3)
    third = await swept()
    assert third.created == 1


async def test_a_dry_run_creates_nothing_and_keeps_the_watermark(
    swept: Callable[..., Any], portal: FakePortal, engine: AsyncEngine
) -> None:
    for number in range(1, 4):
        portal.put("deal", {"ID": number}, by=3)

    found = await swept(since=HOUR_AGO, dry_run=True)

    assert sorted(found.would_create) == ["deal/1", "deal/2", "deal/3"] and found.created == 0
    assert await events(engine) == []
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Bitrix24Watermark)) == 0


async def test_two_relays_sweeping_at_once_create_each_change_once(
    swept: Callable[..., Any], portal: FakePortal, engine: AsyncEngine
) -> None:
    for number in range(1, 61):
        portal.put("deal", {"ID": number}, by=3)

    results = await asyncio.gather(
        swept(since=HOUR_AGO), swept(since=HOUR_AGO), swept(since=HOUR_AGO)
    )

    assert sum(r.created for r in results) == 60
    assert any(r.locked for r in results) or sum(r.duplicates for r in results) == 60 * (
        len(results) - 1
    )
    assert len(await events(engine)) == 60


async def test_the_command_prints_what_a_dry_run_would_create(
    portal: FakePortal, urls: tuple[str, str], tmp_path: Path, engine: AsyncEngine
) -> None:
    portal.put("deal", {"ID": 42}, by=3)
    config = tmp_path / "mmhub.yaml"
    env = {
        **write_config(config, reconciled_hub(portal)),
        "MMHUB_DATABASE_URL": urls[0],
        "MMHUB_REDIS_URL": urls[1],
        "MMHUB_CONFIG": str(config),
        "MMHUB_LOG_LEVEL": "WARNING",
    }
    args = ["reconcile", "bitrix24", "--since", "1h", "--dry-run"]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)

    assert result.exit_code == 0, result.output
    assert (
        f"portal {DEAL_PORTAL}: 1 records changed, 0 already received; would create 1 (dry run):"
        in result.output
    )
    assert "deal/42" in result.output
    assert await events(engine) == []
