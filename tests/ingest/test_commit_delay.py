"""The commit delay: concurrent requests share a commit, a lone sender is not kept waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.ingest.committer import CommitDelay
from app.settings import Settings
from tests.dispatch.harness import FORM, deal
from tests.http_app import running_app
from tests.hub_config import HUB_CONFIG


async def _transactions(engine: AsyncEngine) -> list[int]:
    """The transaction that stored each event, in arrival order."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT xmin::text::bigint FROM events ORDER BY received_at")
        )
        return [row[0] for row in rows]


def _waits_exported(reply: httpx.Response) -> float:
    [line] = [
        x for x in reply.text.splitlines() if x.startswith("mmhub_ingest_commit_delay_waits_total ")
    ]
    return float(line.split()[1])


async def test_requests_arriving_during_the_delay_share_its_commit(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> None:
    # The first request of a cold process can take long enough on a busy machine to arrive with
    # the next one; another app instance warms this process's caches first.
    async with running_app(settings_for(HUB_CONFIG, ingest_commit_delay="0ms")) as warm:
        first = await warm.post("/webhooks/bitrix24", content=deal(100), headers=FORM)
        assert first.status_code == 200
    async with running_app(settings_for(HUB_CONFIG, ingest_commit_delay="1s")) as hub:
        waited = _waits_exported(await hub.get("/metrics"))

        async def post(deal_id: int, after: float) -> int:
            await asyncio.sleep(after)  # arrivals spread out, as independent senders' are
            reply = await hub.post("/webhooks/bitrix24", content=deal(deal_id), headers=FORM)
            return reply.status_code

        statuses = await asyncio.gather(*(post(i, i * 0.05) for i in range(1, 5)))
        delay: CommitDelay = hub.app.state.committer.delay  # type: ignore[attr-defined]
        assert _waits_exported(await hub.get("/metrics")) == waited + 1
    assert statuses == [200] * 4
    # The first request's commit waited, and the three that came meanwhile went with it.
    warm_up, *measured = await _transactions(engine)
    assert len(measured) == 4 and len(set(measured)) == 1
    assert warm_up not in measured
    assert delay.waits == 1


async def test_a_lone_sender_stops_paying_the_delay(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> None:
    async with running_app(settings_for(HUB_CONFIG, ingest_commit_delay="300ms")) as hub:
        for deal_id in range(1, 21):  # one request after the other: a wait gathers nobody
            reply = await hub.post("/webhooks/bitrix24", content=deal(deal_id), headers=FORM)
            assert reply.status_code == 200
        delay: CommitDelay = hub.app.state.committer.delay  # type: ignore[attr-defined]
    assert len(set(await _transactions(engine))) == 20
    # Only the first commit waited: it gathered nobody, and the average fell below one request.
    assert delay.waits == 1


async def test_no_delay_when_turned_off(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> None:
    async with running_app(settings_for(HUB_CONFIG, ingest_commit_delay="0ms")) as hub:
        statuses = await asyncio.gather(
            *(hub.post("/webhooks/bitrix24", content=deal(i), headers=FORM) for i in (1, 2))
        )
        delay: CommitDelay = hub.app.state.committer.delay  # type: ignore[attr-defined]
    assert [reply.status_code for reply in statuses] == [200, 200]
    assert delay.waits == 0
    assert len(await _transactions(engine)) == 2


def test_the_delay_is_probed_again_after_it_stopped() -> None:
    delay = CommitDelay(0.005)
    assert delay.wanted()
    delay.record(0)  # gathered nobody: off
    asked = [delay.wanted() for _ in range(2, CommitDelay._PROBE_EVERY + 1)]
    assert asked == [False] * (CommitDelay._PROBE_EVERY - 2) + [True]  # the 64th commit tries
    for _ in range(5):
        delay.record(4)  # four requests came during each wait: on again
    assert delay.wanted() and delay.gathered >= 1.0
