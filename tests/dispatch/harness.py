"""Shared pieces for delivery tests: a hub whose targets are fake servers, and helpers to drive it."""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Delivery, DeliveryAttempt
from tests.fixture_files import fixture_bytes
from tests.http_app import HubClient
from tests.hub_config import HUB_CONFIG, ONEC_PASSWORD, ONEC_USER

FORM = {"content-type": "application/x-www-form-urlencoded"}
DEAL = fixture_bytes("bitrix24/webhook-deal-add.form")


def hub_with_target(url: str, **target: Any) -> dict[str, Any]:
    """The test hub with every Bitrix24 deal routed to one `onec` target `erp` at `url`."""
    config = copy.deepcopy(HUB_CONFIG)
    config["targets"] = {
        "erp": {"kind": "onec", "url": url, "allow_private": True, **target},
    }
    config["routes"] = [
        {
            "name": "deals-to-erp",
            "from": {"source": "bitrix24", "events": ["ONCRMDEAL*"]},
            "to": ["erp"],
        }
    ]
    # Long delays: a test moves time on with make_due(), so a busy machine cannot reorder attempts.
    config["retry"] = {"schedule": ["1h", "1h", "1h"], "timeout": "2s"}
    return config


def deal(deal_id: int, ts: int = 1766047124) -> bytes:
    """The deal fixture for another deal id and time (a distinct event)."""
    return DEAL.replace(b"=7405&", f"={deal_id}&".encode()).replace(
        b"ts=1766047124", f"ts={ts}".encode()
    )


async def ingest(client: HubClient, *bodies: bytes) -> list[str]:
    ids = []
    for body in bodies:
        reply = await client.post("/webhooks/bitrix24", content=body, headers=FORM)
        assert reply.status_code == 200, reply.text
        ids.append(reply.json()["event_id"])
    return ids


async def deliveries(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(Delivery).order_by(Delivery.seq))).all())


async def attempts(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        query = select(DeliveryAttempt).order_by(DeliveryAttempt.id)
        return list((await conn.execute(query)).all())


async def make_due(engine: AsyncEngine) -> None:
    """Skip the retry delays: every waiting delivery is due now."""
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE deliveries SET next_attempt_at = now()"))


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 20) -> None:
    """Wait until `check()` holds; fail after `seconds` (a bound, not a speed assertion)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


BASIC_1C = "Basic " + base64.b64encode(f"{ONEC_USER}:{ONEC_PASSWORD}".encode()).decode()


def onec_to_bitrix24(url: str) -> dict[str, Any]:
    """The test hub with 1C orders routed to a `bitrix24` target `crm` at `url` (a fake portal)."""
    config = copy.deepcopy(HUB_CONFIG)
    config["targets"] = {
        "crm": {"kind": "bitrix24", "webhook_url": f"{url}/rest/1/code/", "allow_private": True},
    }
    params = {
        "fields": {
            "ENTITY_TYPE": "deal",
            "ENTITY_ID": "{{ subject }}",
            "COMMENT": "1C order {{ data.number }}",
        }
    }
    config["routes"] = [
        {
            "name": "orders-to-crm",
            "from": {"source": "onec", "events": ["Документ.*"]},
            "to": [{"target": "crm", "method": "crm.timeline.comment.add", "params": params}],
        }
    ]
    config["retry"] = {"schedule": ["1h", "1h"], "timeout": "2s"}
    return config


async def events_traceparents(engine: AsyncEngine) -> dict[str, str | None]:
    """Each stored event's id (as text) -> the traceparent of the request span that ingested it."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT id::text, traceparent FROM events"))
        return {event_id: value for event_id, value in rows}
