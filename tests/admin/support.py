"""The admin tests' hub: three fake targets, two tokens, and a seeded set of deliveries.

Seeded (newest last):

| delivery  | event                                     | source   | target | status    |
|-----------|-------------------------------------------|----------|--------|-----------|
| delivered | ONCRMDEALADD deal/1                       | bitrix24 | erp    | delivered |
| dead      | ONCRMDEALUPDATE deal/2 (target said 400)  | bitrix24 | erp    | dead      |
| contact   | ONCRMCONTACTADD contact/134806            | bitrix24 | ww     | pending   |
| order_ww  | Документ.ЗаказКлиента.updated (УТ-00000123) | onec   | ww     | pending   |
| order_log | the same 1C event                         | onec     | log    | pending   |
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import AuditEntry, Delivery, Event, ReplayJob
from dispatch.deliver import drain
from dispatch.runtime import Runtime
from tests.dispatch.harness import BASIC_1C, deal, ingest
from tests.fake_target import FakeTarget
from tests.fixture_files import fixture_bytes
from tests.http_app import HubClient
from tests.hub_config import HUB_CONFIG

VIEWER_TOKEN = "viewer-token-0123456789abcdef"
OPERATOR_TOKEN = "operator-token-fedcba9876543210"
VIEWER = {"authorization": f"Bearer {VIEWER_TOKEN}"}
OPERATOR = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
ORDER_NUMBER = "УТ-00000123"


def admin_hub(url: str) -> dict[str, Any]:
    """The hub configuration: tokens `vera` (viewer) and `oscar` (operator), targets on `url`."""
    config = copy.deepcopy(HUB_CONFIG)
    config["admin"] = {
        "tokens": [
            {"name": "vera", "role": "viewer", "token_sha256": _sha256(VIEWER_TOKEN)},
            {"name": "oscar", "role": "operator", "token_sha256": _sha256(OPERATOR_TOKEN)},
        ]
    }
    config["targets"] = {
        "erp": {"kind": "onec", "url": f"{url}/erp", "allow_private": True},
        "ww": {"kind": "walking_warehouse", "url": f"{url}/ww", "allow_private": True},
        "log": {"kind": "http", "url": f"{url}/log", "allow_private": True},
    }
    config["routes"] = [
        {"name": "deals", "from": {"source": "bitrix24", "events": ["ONCRMDEAL*"]}, "to": ["erp"]},
        {
            "name": "contacts",
            "from": {"source": "bitrix24", "events": ["ONCRMCONTACT*"]},
            "to": ["ww"],
        },
        {
            "name": "orders",
            "from": {"source": "onec", "events": ["Документ.ЗаказКлиента.*"]},
            "to": ["ww", "log"],
        },
    ]
    # A permanent failure is dead at once; keep retries quick should a test need them.
    config["retry"] = {"schedule": ["50ms"], "timeout": "2s"}
    return config


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class AdminHub:
    """The running app, a dispatch runtime to deliver with, the fake targets and the database."""

    client: HubClient
    rt: Runtime
    fake: FakeTarget
    engine: AsyncEngine

    async def drain(self, target: str) -> None:
        await drain(self.rt, target, budget=10)


@dataclass(frozen=True)
class Seeded:
    """Ids of the seeded events and deliveries (see the module's table)."""

    events: dict[str, str]
    deliveries: dict[str, str]

    def ids(self, *names: str) -> set[str]:
        return {self.deliveries[name] for name in names}


async def seed(hub: AdminHub) -> Seeded:
    """Ingest four events and drive their five deliveries to the states in the table."""
    [deal1] = await ingest(hub.client, deal(1, ts=1))
    await hub.drain("erp")  # the fake target's default reply: 200, delivered
    hub.fake.reply(status=400, body={"error": "unknown counterparty"})
    update = deal(2, ts=2).replace(b"event=ONCRMDEALADD", b"event=ONCRMDEALUPDATE")
    [deal2] = await ingest(hub.client, update)
    await hub.drain("erp")  # 400 is permanent: dead at once
    [contact] = await ingest(hub.client, fixture_bytes("bitrix24/app-event-contact-add.form"))
    order = await hub.client.post(
        "/webhooks/1c",
        content=fixture_bytes("onec/order-updated-with-bom.json"),
        headers={"content-type": "application/json", "authorization": BASIC_1C},
    )
    assert order.status_code == 200, order.text
    events = {"deal1": deal1, "deal2": deal2, "contact": contact, "order": order.json()["event_id"]}
    rows = await delivery_rows(hub.engine)
    by_event = {(str(row.event_id), row.target): str(row.id) for row in rows}
    deliveries = {
        "delivered": by_event[(deal1, "erp")],
        "dead": by_event[(deal2, "erp")],
        "contact": by_event[(contact, "ww")],
        "order_ww": by_event[(events["order"], "ww")],
        "order_log": by_event[(events["order"], "log")],
    }
    statuses = {name: _status(rows, delivery_id) for name, delivery_id in deliveries.items()}
    assert statuses == {
        "delivered": "delivered",
        "dead": "dead",
        "contact": "pending",
        "order_ww": "pending",
        "order_log": "pending",
    }
    return Seeded(events, deliveries)


def _status(rows: list[Any], delivery_id: str) -> str:
    return next(str(row.status) for row in rows if str(row.id) == delivery_id)


async def delivery_rows(engine: AsyncEngine) -> list[Any]:
    """Every delivery row, in acceptance order (compare before/after to see nothing changed)."""
    async with engine.connect() as conn:
        return list((await conn.execute(select(Delivery).order_by(Delivery.seq))).all())


async def event_rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(Event).order_by(Event.received_at))).all())


async def audit_rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(AuditEntry).order_by(AuditEntry.id))).all())


async def job_rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(ReplayJob))).all())


async def execute(engine: AsyncEngine, sql: str, **params: Any) -> None:
    """Arrange a precondition directly in the database (e.g. an older receive time)."""
    async with engine.begin() as conn:
        await conn.execute(text(sql), params)


def assert_problem(reply: httpx.Response, status: int) -> dict[str, Any]:
    """An RFC 9457 reply with this status and the request id; returns its body."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = reply.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert body["request_id"] == reply.headers["x-request-id"]
    return body
