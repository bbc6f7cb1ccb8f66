"""Bad input gets a clear problem+json reply and changes nothing."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Delivery, Event
from app.settings import Settings
from tests.fixture_files import fixture_bytes
from tests.http_app import HubClient, running_app
from tests.hub_config import HUB_CONFIG, ONEC_PASSWORD, ONEC_USER

FORM = {"content-type": "application/x-www-form-urlencoded"}
BASIC = "Basic " + base64.b64encode(f"{ONEC_USER}:{ONEC_PASSWORD}".encode()).decode()
DEAL = fixture_bytes("bitrix24/webhook-deal-add.form")


async def count(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        events = (await conn.execute(select(func.count()).select_from(Event))).scalar_one()
        deliveries = (await conn.execute(select(func.count()).select_from(Delivery))).scalar_one()
    return events, deliveries


def assert_problem(reply: httpx.Response, status: int) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    body = reply.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert body["request_id"] == reply.headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (
            DEAL.replace(b"jvh9y1ulvt2m6k5or90v9mg8nn32ozas", b"wrong-token-wrong-token-wrong-00"),
            FORM,
            401,
        ),
        (
            DEAL.replace(b"d897063e1ce7c5eb9f04b9751eef5915", b"0" * 32).replace(
                b"some-domain.bitrix24.ru", b"elsewhere.bitrix24.ru"
            ),
            FORM,
            401,
        ),
        (b"event=ONCRMDEALADD&data%5BFIELDS%5D%5BID%5D=1", FORM, 401),
        (DEAL, {"content-type": "text/xml"}, 415),
        (b"{not json", {"content-type": "application/json"}, 400),
        (b"[1, 2]", {"content-type": "application/json"}, 400),
        (DEAL.replace(b"event=ONCRMDEALADD&", b""), FORM, 422),
    ],
    ids=["wrong-token", "unknown-portal", "no-auth", "xml", "bad-json", "json-array", "no-event"],
)
async def test_bitrix24_refusals_store_nothing(
    hub: HubClient, engine: AsyncEngine, body: bytes, headers: dict[str, str], status: int
) -> None:
    reply = await hub.post("/webhooks/bitrix24", content=body, headers=headers)
    assert_problem(reply, status)
    assert await count(engine) == (0, 0)


def test_wrong_token_is_never_echoed() -> None:
    # The detail of a 401 names no token: checked on the text of the reply class.
    from app.sources.bitrix24.verify import authenticate

    with pytest.raises(Exception, match="does not match") as caught:
        authenticate(
            Settings(hub=HUB_CONFIG).hub.sources.bitrix24,  # type: ignore[arg-type]
            {
                "auth": {
                    "member_id": "d897063e1ce7c5eb9f04b9751eef5915",
                    "application_token": "x" * 32,
                }
            },
        )
    assert "x" * 32 not in str(caught.value)


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        (
            "/webhooks/1c",
            fixture_bytes("onec/xdto-shipment.json"),
            {"content-type": "application/json"},
            401,
        ),
        (
            "/webhooks/1c",
            fixture_bytes("onec/xdto-shipment.json"),
            {
                "content-type": "application/json",
                "authorization": "Basic " + base64.b64encode(b"exchange:wrong").decode(),
            },
            401,
        ),
        (
            "/webhooks/1c",
            fixture_bytes("onec/xdto-shipment.json"),
            {"content-type": "application/json", "authorization": "Bearer " + ONEC_PASSWORD},
            401,
        ),
        (
            "/webhooks/1c",
            b'\xef\xbb\xbf{"type": ',
            {"content-type": "application/json", "authorization": BASIC},
            400,
        ),
        (
            "/webhooks/1c",
            b'{"event": "updated", "ref": "b1c89da7-cb6a-11e6-aede-5404a6b4b8ed"}',
            {"content-type": "application/json", "authorization": BASIC},
            422,
        ),
        (
            "/webhooks/1c",
            b'{"type": "X", "ref": "not-a-guid"}',
            {"content-type": "application/json", "authorization": BASIC},
            422,
        ),
        (
            "/webhooks/1c/Catalog.X",
            b'{"Description": "no ref"}',
            {"content-type": "application/json", "authorization": BASIC},
            422,
        ),
        (
            "/webhooks/1c",
            b"<xml/>",
            {"content-type": "application/xml", "authorization": BASIC},
            415,
        ),
    ],
    ids=[
        "no-auth",
        "wrong-password",
        "wrong-scheme",
        "truncated",
        "no-type",
        "bad-ref",
        "odata-no-ref",
        "xml",
    ],
)
async def test_onec_refusals_store_nothing(
    hub: HubClient,
    engine: AsyncEngine,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    reply = await hub.post(path, content=body, headers=headers)
    assert_problem(reply, status)
    if status == 401:
        assert reply.headers["www-authenticate"] == 'Basic realm="mmhub"'
        assert reply.json()["detail"] == "missing or wrong credentials"  # not which of them
    assert await count(engine) == (0, 0)


async def test_body_over_the_limit_is_refused_with_413(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> None:
    async with running_app(settings_for(HUB_CONFIG, max_body_bytes=1024)) as client:
        reply = await client.post(
            "/webhooks/bitrix24", content=DEAL + b"&pad=" + b"x" * 2000, headers=FORM
        )
        assert_problem(reply, 413)

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(64):  # no Content-Length: the limit applies while streaming
                yield b"x" * 100

        reply = await client.post("/webhooks/bitrix24", content=chunks(), headers=FORM)
        assert_problem(reply, 413)
    assert await count(engine) == (0, 0)


async def test_client_request_id_is_kept_and_echoed(hub: HubClient, engine: AsyncEngine) -> None:
    reply = await hub.post(
        "/webhooks/bitrix24", content=DEAL, headers={**FORM, "x-request-id": "b24-trace-42"}
    )
    assert reply.status_code == 200
    assert reply.headers["x-request-id"] == "b24-trace-42"
    async with engine.connect() as conn:
        assert (await conn.execute(select(Event.request_id))).scalar_one() == "b24-trace-42"


async def test_unknown_path_is_problem_json(hub: HubClient) -> None:
    assert_problem(await hub.post("/webhooks/nowhere", content=b"{}"), 404)


async def test_duplicate_reply_names_the_original(hub: HubClient, engine: AsyncEngine) -> None:
    first = (await hub.post("/webhooks/bitrix24", content=DEAL, headers=FORM)).json()
    second = (await hub.post("/webhooks/bitrix24", content=DEAL, headers=FORM)).json()
    assert first["duplicate"] is False and first["deliveries"] == 2
    assert second == {**first, "duplicate": True, "deliveries": 0}
    assert await count(engine) == (1, 2)


async def test_idempotency_key_header_wins_over_body_identity(
    hub: HubClient, engine: AsyncEngine
) -> None:
    # The same body under two keys is two events: the key alone identifies a keyed request.
    for key in ("first", "second"):
        reply = await hub.post(
            "/webhooks/bitrix24", content=DEAL, headers={**FORM, "idempotency-key": key}
        )
        assert reply.status_code == 200
        assert reply.json()["duplicate"] is False
    assert await count(engine) == (2, 4)


async def test_concurrent_identical_requests_store_one_event(
    hub: HubClient, engine: AsyncEngine
) -> None:
    replies = await asyncio.gather(
        *(hub.post("/webhooks/bitrix24", content=DEAL, headers=FORM) for _ in range(50))
    )
    bodies = [r.json() for r in replies]
    assert all(r.status_code == 200 for r in replies)
    assert sum(1 for b in bodies if not b["duplicate"]) == 1
    assert len({b["event_id"] for b in bodies}) == 1
    assert await count(engine) == (1, 2)


async def test_concurrent_identical_requests_across_two_apps(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> None:
    # Two API processes (two committers, two pools) racing on the same dedup key.
    async with (
        running_app(settings_for(HUB_CONFIG)) as one,
        running_app(settings_for(HUB_CONFIG)) as two,
    ):
        replies = await asyncio.gather(
            *(c.post("/webhooks/bitrix24", content=DEAL, headers=FORM) for c in [one, two] * 20)
        )
    assert sorted(r.json()["duplicate"] for r in replies) == [False] + [True] * 39
    assert await count(engine) == (1, 2)


async def test_metrics_count_accepted_and_refused(hub: HubClient) -> None:
    await hub.post("/webhooks/bitrix24", content=DEAL, headers=FORM)
    await hub.post("/webhooks/bitrix24", content=b"event=X", headers=FORM)
    reply = await hub.get("/metrics")
    assert reply.status_code == 200
    text = reply.text
    assert 'mmhub_ingested_events_total{source="bitrix24",type="ONCRMDEALADD"}' in text
    assert 'mmhub_ingest_rejected_total{source="bitrix24",status="401"}' in text


async def test_nul_in_payload_is_refused_and_does_not_fail_others(
    hub: HubClient, engine: AsyncEngine
) -> None:
    bad = b'{"type": "X", "ref": "b1c89da7-cb6a-11e6-aede-5404a6b4b8ed", "data": {"a": "\\u0000"}}'
    headers = {"content-type": "application/json", "authorization": BASIC}
    replies = await asyncio.gather(
        hub.post("/webhooks/1c", content=bad, headers=headers),
        hub.post("/webhooks/bitrix24", content=DEAL, headers=FORM),
    )
    assert_problem(replies[0], 422)
    assert "NUL" in replies[0].json()["detail"]
    assert replies[1].status_code == 200
    assert await count(engine) == (1, 2)


async def test_nul_in_event_name_is_refused(hub: HubClient, engine: AsyncEngine) -> None:
    reply = await hub.post(
        "/webhooks/bitrix24",
        content=DEAL.replace(b"event=ONCRMDEALADD", b"event=ONCRM%00DEAL"),
        headers=FORM,
    )
    assert_problem(reply, 422)
    assert await count(engine) == (0, 0)
