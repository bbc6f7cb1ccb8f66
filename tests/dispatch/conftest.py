"""Fixtures for the delivery tests: a scriptable fake target server and an HTTP client session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from dispatch.targets.base import Outbound
from tests.fake_target import FakeTarget

EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "0193e6a4-6a1b-7c3d-8e9f-0a1b2c3d4e5f",
    "source": "urn:mastermobile:1c",
    "type": "1c.Документ.ЗаказКлиента.updated",
    "subject": "Документ.ЗаказКлиента/5f1c0a52-3b7e-11ef-a1b2-00155d000001",
    "time": "2025-12-18T08:38:44Z",
    "datacontenttype": "application/json",
    "data": {"number": "ЗК-000123", "deal_id": 7405, "sum": 1500.5},
}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def fake_target() -> AsyncIterator[FakeTarget]:
    """A real HTTP server on 127.0.0.1; script replies with `.reply(...)`, read `.requests`."""
    async with FakeTarget() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def make_outbound() -> Callable[..., Outbound]:
    """An Outbound for the sample 1C event; keyword arguments override its fields."""

    def make(**overrides: Any) -> Outbound:
        fields: dict[str, Any] = {
            "delivery_id": uuid.uuid4(),
            "event": EVENT,
            "request_id": "req-42",
            "traceparent": TRACEPARENT,
        }
        fields.update(overrides)
        return Outbound(**fields)

    return make
