"""The relay's Bitrix24 tasks: offline pullers (a loop per portal with `offline`, woken by ONOFFLINEEVENT or the
clock) and reconciliation sweeps (a loop per portal with `reconcile`, every `reconcile.every`).

ONOFFLINEEVENT reaches the API, which NOTIFYs `mmhub_offline` with the portal's member_id; the loop pulls at once then,
and every `poll_every` otherwise, so a lost notification delays a pull by at most that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bitrix24.errors import RestError
from app.bitrix24.installs import NotInstalled
from app.bitrix24.oauth import OAuthRefused, OAuthUnavailable
from app.bitrix24.offline import OFFLINE_CHANNEL, OfflinePuller
from app.bitrix24.portals import Portals, portal_key
from app.bitrix24.reconcile import sweep
from app.bitrix24.rest import PortalClient
from app.db import make_engine, make_sessionmaker
from app.hubconfig import Portal
from app.ingest.committer import GroupCommitter
from app.settings import Settings
from dispatch.listen import listen

log = logging.getLogger(__name__)
_FAILURES = (
    RestError,
    NotInstalled,
    OAuthRefused,
    OAuthUnavailable,
    SQLAlchemyError,
    OSError,
    RedisError,
)


def _portals(settings: Settings) -> list[Portal]:
    source = settings.hub.sources.bitrix24
    return [p for p in (source.portals if source else []) if p.member_id or p.domain]


async def run_pullers(settings: Settings, stop: asyncio.Event) -> None:
    """Pull every offline portal's queue, and sweep every reconciled portal, until `stop` is set."""
    portals = [p for p in _portals(settings) if p.offline or p.reconcile]
    if not portals:
        return
    cipher = settings.token_cipher()
    engine = make_engine(
        settings.require_database_url, pool_size=2, application_name="mmhub-puller"
    )
    redis = Redis.from_url(settings.require_redis_url, socket_timeout=5)
    committer = GroupCommitter(engine)
    await committer.start()
    wakes = {portal.member_id: asyncio.Event() for portal in portals if portal.offline}
    try:
        async with aiohttp.ClientSession() as http:
            installs = (make_sessionmaker(engine), cipher) if cipher else None
            clients = Portals(settings.hub, redis, http, installs=installs)
            loops = []
            for p in portals:
                client = clients.get(p.member_id, p.domain)
                if client is None:
                    continue
                if p.offline and p.member_id:
                    puller = OfflinePuller(p, client, engine, committer, settings.hub)
                    loops.append(_loop(puller, wakes[p.member_id], p, stop))
                if p.reconcile:
                    loops.append(_sweeps(p, client, engine, committer, settings, stop))
            if wakes:
                loops.append(
                    listen(settings.require_database_url, OFFLINE_CHANNEL, _waker(wakes), stop)
                )
            await asyncio.gather(*loops)
    finally:
        await committer.stop()
        await redis.aclose()
        await engine.dispose()


async def _sweeps(
    portal: Portal,
    client: PortalClient,
    engine: AsyncEngine,
    committer: GroupCommitter,
    settings: Settings,
    stop: asyncio.Event,
) -> None:
    """Reconcile the portal every `reconcile.every` (one relay at a time: the sweep's advisory lock)."""
    assert portal.reconcile is not None
    every = portal.reconcile.every.total_seconds()
    while not stop.is_set():
        try:
            result = await sweep(portal, client, engine, committer, settings.hub)
        except _FAILURES as exc:
            log.warning("reconciling portal %s failed, retrying: %s", portal_key(portal), exc)
        else:
            if result.created:
                log.info("reconciled portal %s", portal_key(portal), extra=asdict(result))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def _waker(wakes: dict[str | None, asyncio.Event]) -> Callable[[str], None]:
    def wake(member_id: str) -> None:
        for key, event in wakes.items():
            if not member_id or key == member_id:
                event.set()

    return wake


async def _loop(
    puller: OfflinePuller, wake: asyncio.Event, portal: Portal, stop: asyncio.Event
) -> None:
    assert portal.offline is not None
    every = portal.offline.poll_every.total_seconds()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), every)
        wake.clear()
        try:
            report = await puller.pull()
        except _FAILURES as exc:
            log.warning("offline pull of portal %s failed, retrying: %s", portal.member_id, exc)
            continue
        if report.read:
            log.info("offline pull of portal %s", portal.member_id, extra=asdict(report))
