"""Every target kind sends the attempt's traceparent and the webhook's request id."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from app.hubconfig import HubConfig
from dispatch.targets import build_target
from dispatch.targets.base import Outbound
from tests.fake_target import FakeTarget

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
EVENT = {"specversion": "1.0", "id": "e1", "type": "1c.X.updated", "data": {"number": "1"}}


def spec(kind: str, url: str) -> dict[str, object]:
    if kind == "bitrix24":
        return {"kind": kind, "webhook_url": f"{url}/rest/1/code/", "allow_private": True}
    return {"kind": kind, "url": url, "allow_private": True}


@pytest.mark.parametrize("kind", ["onec", "walking_warehouse", "http", "bitrix24"])
async def test_traceparent_request_and_correlation_ids_reach_the_target(
    kind: str, fake_target: FakeTarget
) -> None:
    hub = HubConfig.model_validate({"targets": {"t": spec(kind, fake_target.url)}})
    target = build_target("t", hub.targets["t"])
    out = Outbound(
        delivery_id=uuid.uuid4(),
        event=EVENT,
        request_id="req-42",
        traceparent=TRACEPARENT,
        method="crm.timeline.comment.add",
        params={"fields": {"COMMENT": "{{ data.number }}"}},
    )
    async with aiohttp.ClientSession() as session:
        result = await target.send(session, out, 5)

    assert result.outcome == "delivered", result
    [request] = fake_target.requests
    assert request.headers["traceparent"] == TRACEPARENT
    assert request.headers["x-request-id"] == "req-42"
    assert request.headers["x-correlation-id"] == "req-42"
