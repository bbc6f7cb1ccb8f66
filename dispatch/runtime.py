"""What a worker process holds for its whole life: one event loop, pools, an HTTP session.

RQ calls our jobs as plain functions. Running each on `asyncio.run` would build and throw away the
database pool, the HTTP connection pool and the Redis client every time, so the worker keeps one
loop and one set of connections, and jobs run their coroutines on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import uvloop
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.bitrix24.app_auth import OAuthCredentials
from app.bitrix24.portals import Installs, Portals, target_bucket
from app.db import make_engine, make_sessionmaker
from app.hubconfig import Bitrix24Target as Bitrix24Spec
from app.hubconfig import HubConfig
from app.ratelimit import TokenBucket
from app.settings import Settings
from dispatch.ssrf import guarded_connector
from dispatch.targets import build_target
from dispatch.targets.base import Target
from dispatch.targets.bitrix24 import Bitrix24Target

T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    http: aiohttp.ClientSession
    targets: dict[str, Target]
    buckets: dict[str, TokenBucket]
    portals: Portals  # REST clients of the portals with `rest` (enrichment)
    # Caps concurrent requests per target within this process.
    slots: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        engine = make_engine(
            settings.require_database_url, pool_size=4, application_name="mmhub-dispatch"
        )
        redis = Redis.from_url(settings.require_redis_url, socket_timeout=5)
        hub = settings.hub
        # Every resolution is checked against the SSRF rules at connect time (dispatch.ssrf).
        http = aiohttp.ClientSession(connector=guarded_connector(hub), auto_decompress=True)
        sessions = make_sessionmaker(engine)
        cipher = settings.token_cipher()  # application portals' tokens
        targets = {name: build_target(name, spec) for name, spec in hub.targets.items()}
        if cipher is not None:
            use_applications(hub, targets, (sessions, cipher))
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            redis=redis,
            http=http,
            targets=targets,
            buckets={
                name: bucket
                for name, spec in hub.targets.items()
                if (bucket := target_bucket(redis, hub, name, spec)) is not None
            },
            # A read happens inside a delivery's lease: a few quick retries, then the attempt fails.
            portals=Portals(
                hub,
                redis,
                http,
                installs=(sessions, cipher) if cipher else None,
                timeout=hub.retry.timeout.total_seconds(),
                attempts=3,
                backoff_max=5,
            ),
            slots={name: asyncio.Semaphore(spec.concurrency) for name, spec in hub.targets.items()},
        )

    async def close(self) -> None:
        await self.http.close()
        await self.redis.aclose()
        await self.engine.dispose()


class LoopRunner:
    """Owns the worker's event loop and its Runtime; `run()` executes one job's coroutine."""

    def __init__(self, settings: Settings) -> None:
        # uvloop (already installed with uvicorn[standard]): less CPU per request and per query.
        self.loop = uvloop.new_event_loop()
        self.runtime = self.loop.run_until_complete(Runtime.open(settings))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.loop.run_until_complete(self.runtime.close())
        self.loop.close()


_runner: LoopRunner | None = None


def install(settings: Settings) -> LoopRunner:
    """Create this process's runner (the worker calls it once, before taking jobs)."""
    global _runner
    _runner = LoopRunner(settings)
    return _runner


def runner() -> LoopRunner:
    if _runner is None:
        raise RuntimeError("the dispatch runtime is not installed in this process")
    return _runner


def use_applications(hub: HubConfig, targets: dict[str, Target], installs: Installs) -> None:
    """`bitrix24` targets with `portal:` call as that portal's installed application, with its source key."""
    for name, spec in hub.targets.items():
        target = targets[name]
        if isinstance(spec, Bitrix24Spec) and spec.portal and isinstance(target, Bitrix24Target):
            portal = hub.portal(spec.portal)
            assert portal is not None  # checked with the configuration
            connector = portal.offline.auth_connector if portal.offline else None
            target.use_application(OAuthCredentials(installs[0], installs[1], portal), connector)
