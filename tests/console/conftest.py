"""Fixtures for the console tests: the admin tests' hub (viewer `vera`, operator `oscar`) behind an
httpx client, a fake target, and a helper to log in."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from dispatch.runtime import Runtime
from tests.admin.support import AdminHub, Seeded, admin_hub, seed
from tests.fake_target import FakeTarget
from tests.http_app import running_app


@pytest.fixture
async def fake_target() -> AsyncIterator[FakeTarget]:
    async with FakeTarget() as server:
        yield server


@pytest.fixture
def console_settings(settings_for: Callable[..., Settings], fake_target: FakeTarget) -> Settings:
    return settings_for(admin_hub(fake_target.url))


@pytest.fixture
async def console(
    console_settings: Settings, engine: AsyncEngine, redis: object
) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind an httpx client (empty tables, empty Redis: no sessions, no throttling)."""
    async with running_app(console_settings) as client:
        yield client


async def log_in(client: httpx.AsyncClient, token: str) -> str:
    """Log the client in with this token; returns the session's CSRF token (from a page's form)."""
    reply = await client.post("/console/login", data={"token": token, "next": "/console"})
    assert reply.status_code == 303, reply.text
    page = await client.get("/console")
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


@pytest.fixture
async def seeded(
    console: httpx.AsyncClient,
    console_settings: Settings,
    fake_target: FakeTarget,
    engine: AsyncEngine,
) -> AsyncIterator[Seeded]:
    """The admin tests' five deliveries (tests/admin/support.py), in their states."""
    rt = await Runtime.open(console_settings)
    try:
        yield await seed(AdminHub(console, rt, fake_target, engine))
    finally:
        await rt.close()
