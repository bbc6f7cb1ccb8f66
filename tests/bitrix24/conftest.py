"""Fixtures for the Bitrix24 portal tests: the fake portal and an HTTP client session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from cli.fake_portal import FakePortal


@pytest.fixture
async def portal() -> AsyncIterator[FakePortal]:
    """A fake portal at Bitrix24's real limits (2 requests/s, burst 50)."""
    async with FakePortal() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
