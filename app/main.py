"""create_app(): the HTTP process. Its lifespan owns the engine, the group committer, Redis and
the bulk replay jobs the admin API runs.
"""

from __future__ import annotations

import gc
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uuid_utils
from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from redis.asyncio import Redis

from app.admin.deps import ReplayRunner
from app.admin.router import router as admin_router
from app.bitrix24.installs import InstalledTokens
from app.console.login import install as install_console
from app.db import make_engine, make_sessionmaker
from app.errors import install_error_handlers
from app.health import router as health_router
from app.http_telemetry import HttpTelemetry
from app.ingest.committer import GroupCommitter
from app.ingest.service import Ingest
from app.ingest.spool import Spool
from app.settings import Settings
from app.shortcut import ShortcutApp
from app.sources.bitrix24.router import BITRIX24_PATH, bitrix24_webhook
from app.sources.bitrix24.router import router as bitrix24_router
from app.sources.onec.router import router as onec_router
from app.tracing import setup_tracing

_REQUEST_ID = re.compile(r"^[\w.:@/+=-]{1,128}$")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = make_engine(settings.require_database_url, pool_size=settings.db_pool_size)
    redis = Redis.from_url(settings.require_redis_url, socket_timeout=2, socket_connect_timeout=2)
    committer = GroupCommitter(
        engine,
        max_batch=settings.ingest_batch_max,
        commit_delay=settings.ingest_commit_delay.total_seconds(),
    )
    await committer.start()
    spool = Spool(committer, engine, settings.spool_path, settings.spool_max_bytes)
    await spool.start()
    # Everything built at startup lives as long as the process: keep it out of the collector's
    # generations so that full collections stay short (they pause every request in flight).
    gc.collect()
    gc.freeze()
    sessions = make_sessionmaker(engine)
    replays = ReplayRunner(sessions)
    replays.resume()  # bulk replays a previous API process left running
    app.state.engine, app.state.redis, app.state.committer = engine, redis, committer
    app.state.spool = spool
    app.state.ingest = Ingest(settings.hub, spool, committer)
    app.state.sessions, app.state.replays = sessions, replays
    # Bitrix24 application portals: their tokens at rest, and the tokens their installs brought.
    app.state.cipher = cipher = settings.token_cipher()
    app.state.installed_tokens = InstalledTokens(sessions, cipher) if cipher else None
    try:
        yield
    finally:
        await replays.close()
        await spool.stop()
        await committer.stop()
        await redis.aclose()
        await engine.dispose()


def create_app(settings: Settings) -> FastAPI:
    """The hub's HTTP app for these settings."""
    setup_tracing("mmhub-api")
    app = ShortcutApp(
        title="mmhub",
        summary="MasterMobile webhook hub",
        version="1",
        lifespan=lifespan,
        # The request's span and metrics are app.http_telemetry's (cheaper; see there).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name="X-Request-Id",
        validator=lambda value: bool(_REQUEST_ID.match(value)),
        # uuid_utils (Rust): the stdlib's uuid4 was a visible share of a bare request's CPU.
        generator=lambda: uuid_utils.uuid4().hex,
    )
    app.add_middleware(HttpTelemetry)  # outermost: its span and timing cover every other layer
    install_error_handlers(app)
    # Bitrix24's webhook, the hub's busiest path, skips the routing layers (app.shortcut); FastAPI's
    # route stays for the OpenAPI document. The endpoint reads its own body and builds its own
    # reply, so FastAPI's per-request route matching and dependency solving were pure cost (8-20 %
    # of ingest's CPU in alternating in-process runs, benchmarks/README.md).
    app.add_shortcut(BITRIX24_PATH, bitrix24_webhook, "POST")
    app.include_router(bitrix24_router)
    app.include_router(onec_router)
    app.include_router(admin_router)
    app.include_router(health_router)
    install_console(app)
    return app
