"""What a target gets from a 1C event end to end: `dataversion`, and `X-Correlation-Id` = the id of
the webhook request that brought the event (also for every row of a batch)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from dispatch.deliver import drain
from dispatch.runtime import Runtime
from tests.dispatch.harness import BASIC_1C, onec_to_bitrix24
from tests.fake_target import FakeTarget
from tests.http_app import running_app
from tests.hub_config import HUB_CONFIG

REF = "b1c89da7-cb6a-11e6-aede-5404a6b4b8ed"


def onec_to_erp(url: str) -> dict[str, object]:
    config = copy.deepcopy(HUB_CONFIG)
    config["targets"] = {"erp": {"kind": "onec", "url": url, "allow_private": True}}
    config["routes"] = [{"name": "all-1c", "from": {"source": "onec"}, "to": ["erp"]}]
    return config


async def test_cloudevent_carries_dataversion_and_correlation_id(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    settings = settings_for(onec_to_erp(fake_target.url))
    rows = [
        {"type": "Документ.X", "ref": REF, "data_version": "AAAABAAAAAA=", "data": {"n": 1}},
        {"type": "Документ.X", "ref": REF.replace("b1", "c2", 1), "data": {"n": 2}},
    ]
    headers = {"content-type": "application/json", "authorization": BASIC_1C}
    async with running_app(settings) as client:
        reply = await client.post(
            "/webhooks/1c", content=orjson.dumps(rows), headers={**headers, "x-request-id": "1c-7"}
        )
        assert reply.status_code == 200, reply.text
        rt = await Runtime.open(settings)
        try:
            assert await drain(rt, "erp", budget=10) == 2
        finally:
            await rt.close()

    by_n = {r.json()["data"]["n"]: r for r in fake_target.requests}
    assert by_n[1].json()["dataversion"] == "AAAABAAAAAA="
    assert "dataversion" not in by_n[2].json()
    for request in by_n.values():
        assert request.headers["X-Correlation-Id"] == "1c-7"
        assert request.headers["X-Request-Id"] == "1c-7"


async def test_bitrix24_target_gets_the_correlation_id(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    settings = settings_for(onec_to_bitrix24(fake_target.url))
    body = {"type": "Документ.X", "ref": REF, "data": {"number": "1"}}
    headers = {"content-type": "application/json", "authorization": BASIC_1C}
    async with running_app(settings) as client:
        reply = await client.post(
            "/webhooks/1c", content=orjson.dumps(body), headers={**headers, "x-request-id": "r-9"}
        )
        assert reply.status_code == 200, reply.text
        rt = await Runtime.open(settings)
        try:
            assert await drain(rt, "crm", budget=10) == 1
        finally:
            await rt.close()
    [request] = fake_target.requests
    assert request.headers["X-Correlation-Id"] == "r-9"
