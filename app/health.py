"""Liveness and readiness probes, and the Prometheus metrics."""

from __future__ import annotations

import asyncio
import functools
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.settings import Settings

router = APIRouter(tags=["health"])
_CHECKOUT = Path(__file__).resolve().parent.parent


@functools.cache
def checkout_revision() -> str | None:
    """HEAD's commit when the code runs from a git checkout (None in an installed package)."""
    if not (_CHECKOUT / ".git").exists():
        return None
    try:
        found = subprocess.run(
            ["git", "-C", str(_CHECKOUT), "rev-parse", "HEAD"],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None


def build_info(settings: Settings) -> dict[str, str | None]:
    """The running code: package version, git revision and build time (None when unknown)."""
    return {
        "version": version("mmhub"),
        "git_revision": settings.git_revision or checkout_revision(),
        "build_time": settings.build_time,
    }


@router.get("/health")
async def health(request: Request) -> dict[str, str | None]:
    """Alive, and which build: what the operators' probes read."""
    return {"status": "ok", **build_info(request.app.state.settings)}


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
