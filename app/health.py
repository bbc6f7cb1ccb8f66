"""Liveness and readiness probes, and the Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """PostgreSQL and Redis both answer within a second; the outage spool's depth."""
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
    spool = request.app.state.spool  # events the outage spool holds until PostgreSQL takes them
    return JSONResponse(
        {
            "status": "ready" if ready else "unavailable",
            "checks": checks,
            "spool": {"events": spool.events, "bytes": spool.size, "active": spool.active},
        },
        status_code=200 if ready else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus text format, from the OpenTelemetry SDK's Prometheus reader."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
