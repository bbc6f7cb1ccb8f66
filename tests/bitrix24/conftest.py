"""Fixtures for the Bitrix24 portal tests: the fake portal (and the delivery tests' fixtures)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cli.fake_portal import FakePortal
from tests.dispatch.conftest import fake_target, session

__all__ = ["fake_target", "portal", "session"]


@pytest.fixture
async def portal() -> AsyncIterator[FakePortal]:
    """A fake portal at Bitrix24's real limits (2 requests/s, burst 50)."""
    async with FakePortal() as server:
        yield server
