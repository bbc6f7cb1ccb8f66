"""Echo suppression: the hub's own write to a deal does not come back to 1C; a person's next change does."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Bitrix24Write, Delivery
from app.settings import Settings
from cli.fake_portal import FakePortal
from dispatch.deliver import drain
from dispatch.runtime import Runtime
from tests.dispatch.harness import BASIC_1C, FORM, deal
from tests.fake_target import FakeTarget
from tests.http_app import running_app
from tests.hub_config import HUB_CONFIG

DEAL_PORTAL = "d897063e1ce7c5eb9f04b9751eef5915"


def echo_hub(portal: FakePortal, target_url: str, *, echo: bool) -> dict[str, Any]:
    config = copy.deepcopy(HUB_CONFIG)
    for configured in config["sources"]["bitrix24"]["portals"]:
        if configured.get("member_id") == DEAL_PORTAL:
            configured["rest"] = {"webhook_url": portal.webhook_url(1), "allow_private": True}
            if echo:
                configured["echo_user_id"] = (
                    1  # the webhook's user: the hub's calls are made as user 1
                )
    config["targets"] = {
        "erp": {"kind": "onec", "url": target_url, "allow_private": True},
        "crm": {"kind": "bitrix24", "webhook_url": portal.webhook_url(1), "allow_private": True},
    }
    config["routes"] = [
        {
            "name": "deals",
            "from": {"source": "bitrix24", "events": ["ONCRMDEALUPDATE"]},
            "to": ["erp"],
            "enrich": True,
        },
        {
            "name": "orders-to-deal",
            "from": {"source": "onec"},
            "to": [
                {
                    "target": "crm",
                    "method": "crm.deal.update",
                    "params": {
                        "id": "{{ data.deal_id }}",
                        "fields": {"COMMENTS": "1C {{ data.number }}"},
                    },
                }
            ],
        },
    ]
    config["retry"] = {"schedule": ["1h"], "timeout": "5s"}
    return config


def deal_update(number: int, ts: int) -> bytes:
    return deal(number, ts).replace(b"event=ONCRMDEALADD", b"event=ONCRMDEALUPDATE")


def order(deal_id: int, number: str) -> bytes:
    body = {
        "type": "Документ.ЗаказКлиента",
        "event": "updated",
        "ref": "b1c89da7-cb6a-11e6-aede-5404a6b4b8ed",
    }
    return orjson.dumps(
        {**body, "data_version": number, "data": {"deal_id": deal_id, "number": number}}
    )


async def statuses(engine: AsyncEngine, target: str) -> list[tuple[str, str | None]]:
    async with engine.connect() as conn:
        query = (
            select(Delivery.status, Delivery.last_error)
            .where(Delivery.target == target)
            .order_by(Delivery.seq)
        )
        return [tuple(row) for row in (await conn.execute(query)).all()]  # type: ignore[misc]


@pytest.mark.parametrize("echo", [True, False])
async def test_the_hubs_write_back_does_not_echo_but_a_persons_change_arrives(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    portal: FakePortal,
    fake_target: FakeTarget,
    echo: bool,
) -> None:
    portal.put("deal", {"ID": 7, "TITLE": "deal 7"}, by=3)
    settings = settings_for(echo_hub(portal, fake_target.url, echo=echo))
    before = REGISTRY.get_sample_value("mmhub_suppressed_total", {"target": "erp"}) or 0.0
    async with running_app(settings) as hub:
        rt = await Runtime.open(settings)
        try:
            headers = {"authorization": BASIC_1C, "content-type": "application/json"}
            assert (
                await hub.post("/webhooks/1c", content=order(7, "42"), headers=headers)
            ).status_code == 200
            await drain(rt, "crm", budget=20)  # the hub writes to deal 7 (as user 1)
            assert portal.records.get("deal", 7)["MODIFY_BY_ID"] == "1"  # type: ignore[index]
            # Bitrix24 fires ONCRMDEALUPDATE for that write: the echo.
            assert (
                await hub.post(
                    "/webhooks/bitrix24", content=deal_update(7, 1766047200), headers=FORM
                )
            ).status_code == 200
            await drain(rt, "erp", budget=20)
            echoed = list(fake_target.requests)
            portal.update("deal", 7, {"TITLE": "renamed by a person"}, by=3)
            assert (
                await hub.post(
                    "/webhooks/bitrix24", content=deal_update(7, 1766047300), headers=FORM
                )
            ).status_code == 200
            await drain(rt, "erp", budget=20)
        finally:
            await rt.close()

    erp = await statuses(engine, "erp")
    received = [r.json()["data"]["record"]["TITLE"] for r in fake_target.requests]
    if echo:
        assert echoed == []
        assert erp[0][0] == "suppressed" and "echo of the hub's write" in (erp[0][1] or "")
        assert "crm.deal.update" in (erp[0][1] or "")
        assert erp[1] == ("delivered", None) and received == ["renamed by a person"]
        after = REGISTRY.get_sample_value("mmhub_suppressed_total", {"target": "erp"})
        assert after == before + 1
        async with engine.connect() as conn:
            [write] = (await conn.execute(select(Bitrix24Write))).all()
        assert (write.portal, write.subject, write.method) == (
            DEAL_PORTAL,
            "deal/7",
            "crm.deal.update",
        )
    else:  # without echo_user_id every change goes through, the hub's own too
        assert [status for status, _ in erp] == ["delivered", "delivered"]
        assert received == ["deal 7", "renamed by a person"]
