"""make bench-bitrix24: ten saves of each of 1,000 deals, enriched and coalesced, against the fake portal's limits.

10,000 ONCRMDEALUPDATE events (each deal saved ten times, as Bitrix24 fires them) are routed with `enrich: true` and
`coalesce: latest` to a target, and the fake portal answers at Bitrix24's real limits (2 requests/s, burst 50,
QUERY_LIMIT_EXCEEDED beyond). Two phases: a backlog ingested while the target is paused, then resumed; and events
arriving at 200/s while delivery runs. Printed per phase: deliveries sent, superseded, REST calls, records/s and the
ratio to what the portal's limit allows (2 requests/s × 50 records per batch = 100 records/s), and
QUERY_LIMIT_EXCEEDED seen. The hub runs in-process here (ASGI app, the drain a worker runs), on durable embedded
servers; the portal and the target are real HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
from sqlalchemy import text

from app.db import make_engine, make_sessionmaker
from app.hubconfig import HubConfig
from app.main import create_app
from app.outbox.states import pause_target, resume_target
from app.settings import Settings
from benchmarks.common import embedded_database
from cli.fake_portal import FakePortal
from dispatch.deliver import drain
from dispatch.runtime import Runtime
from tests.dispatch.harness import FORM, deal
from tests.fake_target import FakeTarget

PORTAL = {"member_id": "d897063e1ce7c5eb9f04b9751eef5915", "domain": "some-domain.bitrix24.ru"}
TOKEN = "jvh9y1ulvt2m6k5or90v9mg8nn32ozas"  # noqa: S105 - the fixture portal's, as in tests/hub_config.py
PORTAL_LIMIT = 2 * 50  # records/s the portal's limit allows: 2 requests/s, 50 records per batch


def hub(portal: FakePortal, target_url: str) -> HubConfig:
    return HubConfig.model_validate(
        {
            "sources": {
                "bitrix24": {
                    "portals": [
                        {
                            **PORTAL,
                            "application_token": TOKEN,
                            "rest": {"webhook_url": portal.webhook_url(1), "allow_private": True},
                        }
                    ]
                }
            },
            "targets": {"erp": {"kind": "onec", "url": target_url, "allow_private": True}},
            "routes": [
                {
                    "name": "deals",
                    "from": {"source": "bitrix24", "events": ["ONCRMDEALUPDATE"]},
                    "to": ["erp"],
                    "enrich": True,
                    "coalesce": "latest",
                }
            ],
            "retry": {"schedule": ["1s", "5s", "30s"], "timeout": "30s"},
        }
    )


def bodies(deals: int, saves: int) -> list[bytes]:
    """Save s of every deal, then save s+1 of every deal: how a busy portal interleaves its events."""
    return [
        deal(number, ts=1766000000 + save * 10 + number % 10).replace(
            b"event=ONCRMDEALADD", b"event=ONCRMDEALUPDATE"
        )
        for save in range(saves)
        for number in range(1, deals + 1)
    ]


async def waiting(settings: Settings) -> int:
    engine = make_engine(settings.require_database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text(
                    "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'retrying', 'delivering', 'held')"
                )
            )
        return int(found or 0)
    finally:
        await engine.dispose()


async def drain_until_done(
    rt: Runtime, settings: Settings, sending: asyncio.Event | None = None
) -> None:
    while (sending is not None and not sending.is_set()) or await waiting(settings):
        await drain(rt, "erp", budget=5)
        await asyncio.sleep(0.05)


async def phase(
    settings: Settings,
    portal: FakePortal,
    target: FakeTarget,
    *,
    live: bool,
    events: list[bytes],
    rate: float,
) -> dict[str, Any]:
    app = create_app(settings)
    sessions = make_sessionmaker(make_engine(settings.require_database_url, pool_size=2))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client,
    ):
        rt = await Runtime.open(settings)
        try:
            if not live:
                async with sessions.begin() as session:
                    await pause_target(session, "erp", "bench: build a backlog", "bench")
                for body in events:
                    assert (
                        await client.post("/webhooks/bitrix24", content=body, headers=FORM)
                    ).status_code == 200
            portal.stats.__init__()  # type: ignore[misc]
            target.requests.clear()
            started = time.monotonic()
            if live:
                sent = asyncio.Event()
                drainer = asyncio.create_task(drain_until_done(rt, settings, sent))
                for index, body in enumerate(events):
                    await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
                    assert (
                        await client.post("/webhooks/bitrix24", content=body, headers=FORM)
                    ).status_code == 200
                sent.set()
                await drainer
            else:
                async with sessions.begin() as session:
                    await resume_target(session, "erp")
                await drain_until_done(rt, settings)
            seconds = time.monotonic() - started
        finally:
            await rt.close()
    engine = make_engine(settings.require_database_url, pool_size=1)
    async with engine.connect() as conn:
        counts: dict[str, int] = dict(
            (
                await conn.execute(text("SELECT status, count(*) FROM deliveries GROUP BY status"))
            ).all()
        )
        await conn.execute(
            text("TRUNCATE events, deliveries, delivery_attempts, target_states, audit_log")
        )
        await conn.commit()
    await engine.dispose()
    delivered = len(target.requests)
    return {
        "phase": f"arriving at {rate:g}/s" if live else "backlog, paused then resumed",
        "events": len(events),
        "deliveries sent": delivered,
        "superseded": counts.get("superseded", 0),
        "REST calls": portal.stats.requests,
        "REST calls per 50 deliveries": round(portal.stats.requests / max(delivered / 50, 1e-9), 2),
        "QUERY_LIMIT_EXCEEDED": portal.stats.limit_errors,
        "seconds": round(seconds, 1),
        "records/s": round(delivered / seconds, 1),
        "ratio to the portal's 100 records/s": round(delivered / seconds / PORTAL_LIMIT, 2),
    }


async def main_async(args: argparse.Namespace, database_url: str, redis_url: str) -> int:
    events = bodies(args.deals, args.saves)
    async with FakePortal(webhooks={1: "benchcode"}) as portal, FakeTarget() as target:
        for number in range(1, args.deals + 1):
            portal.put(
                "deal", {"ID": number, "TITLE": f"deal {number}", "OPPORTUNITY": "100.00"}, by=3
            )
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            hub=hub(portal, target.url),
            log_level="WARNING",
        )
        results = [
            await phase(settings, portal, target, live=False, events=events, rate=args.rate),
            await phase(settings, portal, target, live=True, events=events, rate=args.rate),
        ]
    failed = False
    for result in results:
        print()
        for key, value in result.items():
            print(f"  {key:<40} {value}")
    backlog = results[0]
    checks = {
        "backlog: at most one delivery per deal": backlog["deliveries sent"] <= args.deals,
        "backlog: REST calls <= 1.2 x deliveries / 50": backlog["REST calls"]
        <= 1.2 * backlog["deliveries sent"] / 50,
        "no QUERY_LIMIT_EXCEEDED": all(r["QUERY_LIMIT_EXCEEDED"] == 0 for r in results),
    }
    print()
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
        failed |= not ok
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=1000)
    parser.add_argument("--saves", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s in the live phase")
    args = parser.parse_args()
    with embedded_database() as (database_url, redis_url):  # migrates: outside the event loop
        code = asyncio.run(main_async(args, database_url, redis_url))
    raise SystemExit(code)


if __name__ == "__main__":
    main()
