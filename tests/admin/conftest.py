"""Fixtures for the admin API tests: the app with a viewer and an operator token, fake targets,
and a dispatch runtime to deliver with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

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
def admin_settings(settings_for: Callable[..., Settings], fake_target: FakeTarget) -> Settings:
    return settings_for(admin_hub(fake_target.url))


@pytest.fixture
async def admin(
    admin_settings: Settings, engine: AsyncEngine, fake_target: FakeTarget
) -> AsyncIterator[AdminHub]:
    """The running app and a runtime; each test starts from empty tables."""
    async with running_app(admin_settings) as client:
        rt = await Runtime.open(admin_settings)
        try:
            yield AdminHub(client, rt, fake_target, engine)
        finally:
            await rt.close()


@pytest.fixture
async def seeded(admin: AdminHub) -> Seeded:
    """The five deliveries of tests/admin/support.py, in their states."""
    return await seed(admin)
