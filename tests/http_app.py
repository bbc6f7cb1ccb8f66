"""The real ASGI app, with its lifespan, behind an httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from app.main import create_app
from app.settings import Settings

HubClient = httpx.AsyncClient


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[HubClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client
