"""Fixtures for the Bitrix24 portal tests: the fake portal and an HTTP client session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from cli.fake_portal import FakePortal
from tests.fake_target import FakeTarget


@pytest.fixture
async def portal() -> AsyncIterator[FakePortal]:
    """A fake portal at Bitrix24's real limits (2 requests/s, burst 50)."""
    async with FakePortal() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def fake_target() -> AsyncIterator[FakeTarget]:
    """A real HTTP server on 127.0.0.1 standing in for the target enriched events go to."""
    async with FakeTarget() as server:
        yield server
