"""The relay's Bitrix24 offline pullers: one loop per portal with `offline`, woken by ONOFFLINEEVENT or the clock.

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

from app.bitrix24.errors import RestError
from app.bitrix24.installs import NotInstalled
from app.bitrix24.oauth import OAuthRefused, OAuthUnavailable
from app.bitrix24.offline import OFFLINE_CHANNEL, OfflinePuller
from app.bitrix24.portals import Portals
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


def offline_portals(settings: Settings) -> list[Portal]:
    source = settings.hub.sources.bitrix24
    return [p for p in (source.portals if source else []) if p.offline and p.member_id]


async def run_pullers(settings: Settings, stop: asyncio.Event) -> None:
    """Pull every offline portal's queue until `stop` is set."""
    portals = offline_portals(settings)
    cipher = settings.token_cipher()
    if not portals or cipher is None:
        return
    engine = make_engine(
        settings.require_database_url, pool_size=2, application_name="mmhub-puller"
    )
    redis = Redis.from_url(settings.require_redis_url, socket_timeout=5)
    committer = GroupCommitter(engine)
    await committer.start()
    wakes = {portal.member_id: asyncio.Event() for portal in portals}
    try:
        async with aiohttp.ClientSession() as http:
            clients = Portals(
                settings.hub, redis, http, installs=(make_sessionmaker(engine), cipher)
            )
            loops = [
                _loop(
                    OfflinePuller(p, client, engine, committer, settings.hub),
                    wakes[p.member_id],
                    p,
                    stop,
                )
                for p in portals
                if (client := clients.get(p.member_id, p.domain)) is not None
            ]
            await asyncio.gather(
                listen(settings.require_database_url, OFFLINE_CHANNEL, _waker(wakes), stop), *loops
            )
    finally:
        await committer.stop()
        await redis.aclose()
        await engine.dispose()


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
