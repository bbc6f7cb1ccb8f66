"""create_app(): the HTTP process. Its lifespan owns the engine, the group committer and Redis."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import prometheus_client
from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from sqlalchemy import text

from app.db import make_engine
from app.errors import install_error_handlers
from app.ingest.committer import GroupCommitter
from app.settings import Settings
from app.sources.bitrix24.router import router as bitrix24_router
from app.sources.onec.router import router as onec_router
from app.telemetry import setup_metrics

_REQUEST_ID = re.compile(r"^[\w.:@/+=-]{1,128}$")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = make_engine(settings.require_database_url, pool_size=settings.db_pool_size)
    redis = Redis.from_url(settings.require_redis_url, socket_timeout=2, socket_connect_timeout=2)
    committer = GroupCommitter(engine, max_batch=settings.ingest_batch_max)
    await committer.start()
    app.state.engine, app.state.redis, app.state.committer = engine, redis, committer
    try:
        yield
    finally:
        await committer.stop()
        await redis.aclose()
        await engine.dispose()


def create_app(settings: Settings) -> FastAPI:
    """The hub's HTTP app for these settings."""
    setup_metrics("mmhub-api")
    app = FastAPI(
        title="mmhub",
        summary="MasterMobile webhook hub",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name="X-Request-Id",
        validator=lambda value: bool(_REQUEST_ID.match(value)),
    )
    install_error_handlers(app)
    app.include_router(bitrix24_router)
    app.include_router(onec_router)
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"])
    app.add_api_route("/readyz", readyz, methods=["GET"], tags=["health"])
    app.mount("/metrics", prometheus_client.make_asgi_app())
    return app


async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    """PostgreSQL and Redis both answer within a second."""
    checks: dict[str, Any] = {}

    async def database() -> None:
        async with request.app.state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await request.app.state.redis.ping()

    for name, check in (("postgresql", database), ("redis", redis)):
        try:
            await asyncio.wait_for(check(), timeout=1.0)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
