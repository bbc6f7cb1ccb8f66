"""Every wire fixture, as raw bytes, through the real app into the real database."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Delivery, Event
from tests.fixture_files import fixture_bytes
from tests.http_app import HubClient
from tests.hub_config import ONEC_PASSWORD, ONEC_USER

FORM = {"content-type": "application/x-www-form-urlencoded"}
BASIC = "Basic " + base64.b64encode(f"{ONEC_USER}:{ONEC_PASSWORD}".encode()).decode()

SECRETS = [
    b"3c6c9248ec54af6bea1159b43ee0ab32",
    b"jvh9y1ulvt2m6k5or90v9mg8nn32ozas",
    b"0zhkhllfzn5z3dfuulqqerwr3wduyx42",
    b"51856fefc120afa4b628cc82d3935cce",
    b"be45f0660071849a0058f18a000000010000077261ef50fc26f1357adbd86a052c9e48",
    ONEC_PASSWORD.encode(),
]

BITRIX24_CASES = [
    (
        "webhook-deal-add.form",
        "ONCRMDEALADD",
        "deal/7405",
        "b24v2:d897063e1ce7c5eb9f04b9751eef5915:ONCRMDEALADD:1766047124:ef65116949f02ce2afc25c05aef63f436f0ea53452a4d85878fd4f0730f70663",
        {"erp", "audit"},
    ),
    (
        "app-event-contact-add.form",
        "ONCRMCONTACTADD",
        "contact/134806",
        "b24v2:010b6886ebc205e43ae65000ee00addb:ONCRMCONTACTADD:1727018926:4986842a8b695e11cfa79196224150fba9cf3e3c530cea2bcdf96c5752636fd9",
        {"audit"},
    ),
    (
        "webhook-dynamic-item-update.form",
        "ONCRMDYNAMICITEMUPDATE",
        "dynamic-1032/21",
        "b24v2:995c2cbaf3edb993c1d640820f802149:ONCRMDYNAMICITEMUPDATE:1739049397:658f4c8138d87805191297e792d34cd17942c211b4a570040da741b438e5bbe5",
        {"audit"},
    ),
    (
        "task-add-reconstructed.form",
        "ONTASKADD",
        "task/123",
        "b24v2:a223c6b3710f85df22e9377d6c4f7553:ONTASKADD:1466439714:b8e93a4c346c0b4159c59cf2e790d3b2860fda351f4e433224dc63dbef8206ae",
        {"audit"},
    ),
]

ONEC_CASES = [
    (
        "/webhooks/1c",
        "order-updated-with-bom.json",
        "Документ.ЗаказКлиента.updated",
        "Документ.ЗаказКлиента/b1c89da7-cb6a-11e6-aede-5404a6b4b8ed",
        {"ww", "crm", "audit"},
    ),
    (
        "/webhooks/1c",
        "catalog-item-cp1251.json",
        "Справочник.Номенклатура.updated",
        "Справочник.Номенклатура/f02ce7b3-e3b3-11eb-b4ad-000c29b45b09",
        {"audit"},
    ),
    (
        "/webhooks/1c",
        "xdto-shipment.json",
        "Документ.РеализацияТоваровУслуг.updated",
        "Документ.РеализацияТоваровУслуг/5d1c7a1e-0c3b-11ef-9a4c-00155d01d112",
        {"audit"},
    ),
    (
        "/webhooks/1c/Документ.ЗаказКлиента",
        "odata-style-document.json",
        "Документ.ЗаказКлиента.updated",
        "Документ.ЗаказКлиента/80066011-d7c7-11ef-bac8-00155d01d112",
        {"ww", "crm", "audit"},
    ),
    (
        "/webhooks/1c/Справочник.Номенклатура",
        "odata-style-catalog-item.json",
        "Справочник.Номенклатура.updated",
        "Справочник.Номенклатура/f02ce7b3-e3b3-11eb-b4ad-000c29b45b09",
        {"audit"},
    ),
]


async def stored(engine: AsyncEngine) -> tuple[list[Event], list[Delivery]]:
    async with engine.connect() as conn:
        events = (await conn.execute(select(Event))).all()
        deliveries = (await conn.execute(select(Delivery))).all()
    return list(events), list(deliveries)  # type: ignore[arg-type]


def assert_no_secrets(event: Any) -> None:
    blob = repr(event.payload).encode() + repr(event.headers).encode() + bytes(event.raw_body)
    for secret in SECRETS:
        assert secret not in blob


@pytest.mark.parametrize(("name", "etype", "subject", "dedup", "targets"), BITRIX24_CASES)
async def test_bitrix24_fixture_is_stored_with_its_deliveries(
    hub: HubClient,
    engine: AsyncEngine,
    name: str,
    etype: str,
    subject: str,
    dedup: str,
    targets: set[str],
) -> None:
    reply = await hub.post(
        "/webhooks/bitrix24", content=fixture_bytes(f"bitrix24/{name}"), headers=FORM
    )

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "accepted" and body["duplicate"] is False
    assert body["deliveries"] == len(targets)
    events, deliveries = await stored(engine)
    [event] = events
    assert (event.source, event.type, event.subject, event.dedup_key) == (
        "bitrix24",
        etype,
        subject,
        dedup,
    )
    assert str(event.id) == body["event_id"]
    assert event.request_id == reply.headers["x-request-id"]
    assert "auth" not in event.payload or "application_token" not in event.payload["auth"]
    assert_no_secrets(event)
    assert {d.target for d in deliveries} == targets
    assert all(d.status == "pending" and d.ordering_key == subject for d in deliveries)


async def test_bitrix24_payload_keeps_nested_fields_and_portal(
    hub: HubClient, engine: AsyncEngine
) -> None:
    reply = await hub.post(
        "/webhooks/bitrix24",
        content=fixture_bytes("bitrix24/app-event-contact-add.form"),
        headers=FORM,
    )
    assert reply.status_code == 200
    [event], _ = await stored(engine)
    assert event.payload["data"] == {"FIELDS": {"ID": "134806"}}
    assert event.payload["auth"]["domain"] == "bitrix24-php-sdk-playground.bitrix24.com"
    assert "access_token" not in event.payload["auth"]
    assert "refresh_token" not in event.payload["auth"]
    assert event.origin == "bitrix24-php-sdk-playground.bitrix24.com"
    assert event.occurred_at is not None and int(event.occurred_at.timestamp()) == 1727018926
    assert b"[REDACTED]" in event.raw_body


@pytest.mark.parametrize(("path", "name", "etype", "subject", "targets"), ONEC_CASES)
async def test_onec_fixture_is_stored_with_its_deliveries(
    hub: HubClient,
    engine: AsyncEngine,
    path: str,
    name: str,
    etype: str,
    subject: str,
    targets: set[str],
) -> None:
    reply = await hub.post(
        path,
        content=fixture_bytes(f"onec/{name}"),
        headers={"content-type": "application/json", "authorization": BASIC},
    )

    assert reply.status_code == 200, reply.text
    assert reply.json()["deliveries"] == len(targets)
    events, deliveries = await stored(engine)
    [event] = events
    assert (event.source, event.type, event.subject) == ("onec", etype, subject)
    assert event.raw_body == fixture_bytes(f"onec/{name}")
    assert "authorization" not in event.headers
    assert_no_secrets(event)
    assert {d.target for d in deliveries} == targets


async def test_windows_1251_body_is_decoded(hub: HubClient, engine: AsyncEngine) -> None:
    await hub.post(
        "/webhooks/1c",
        content=fixture_bytes("onec/catalog-item-cp1251.json"),
        headers={"content-type": "application/json", "authorization": BASIC},
    )
    [event], _ = await stored(engine)
    assert event.payload["data"]["description"] == "Мойка"
    assert (
        event.dedup_key
        == "Справочник.Номенклатура:f02ce7b3-e3b3-11eb-b4ad-000c29b45b09:AAAAAgAAAAA="
    )


async def test_every_fixture_twice_stores_each_once(hub: HubClient, engine: AsyncEngine) -> None:
    for _ in range(2):
        for name, *_rest in BITRIX24_CASES:
            reply = await hub.post(
                "/webhooks/bitrix24", content=fixture_bytes(f"bitrix24/{name}"), headers=FORM
            )
            assert reply.status_code == 200
    events, deliveries = await stored(engine)
    assert len(events) == len(BITRIX24_CASES)
    assert len(deliveries) == sum(len(case[-1]) for case in BITRIX24_CASES)
