"""Phones and e-mails: masked for viewers in the admin API and the console, never in storage or
in what targets get; operators see them; `pii.mask_for_viewers: false` turns masking off."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.admin.pii import mask_pii, mask_text
from app.settings import Settings
from dispatch.deliver import drain
from dispatch.runtime import Runtime
from tests.admin.support import OPERATOR, VIEWER, admin_hub, event_rows
from tests.console.support import EMAIL, PHONE, contact_with_pii
from tests.fake_target import FakeTarget
from tests.http_app import running_app

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+7 (999) 123-45-67", "+• (•••) •••-••-67"),
        ("89991234567", "•••••••••67"),
        ("call +79991234567 now", "call +•••••••••67 now"),
        ("ivan.petrov@example.ru", "i•••@example.ru"),
        ("write to a.b@mail.example.com.", "write to a•••@mail.example.com."),
    ],
)
def test_phones_and_emails_in_text_are_masked(text: str, masked: str) -> None:
    assert mask_text(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "2025-12-18T08:38:44+03:00",
        "2025-12-18 10:00",
        "1734500000",  # a Unix time
        "1234567890.50",  # an amount
        "0195f0a2-1234-7abc-8def-123456789012",
        "deal/7405",
        "УТ-00000123",
        "https://portal.bitrix24.ru/rest/1/8473629105/",
    ],
)
def test_ids_times_and_amounts_are_left_alone(text: str) -> None:
    assert mask_text(text) == text


def test_values_under_personal_keys_are_masked_whatever_their_shape() -> None:
    payload = {
        "FIELDS": {
            "PHONE": [{"VALUE": "101", "VALUE_TYPE": "WORK"}],
            "UF_MOBILE": 79991234567,
            "Телефон": "12-34",
            "ID": "134806",
        }
    }
    masked = mask_pii(payload)
    assert masked["FIELDS"]["PHONE"] == [{"VALUE": "•01", "VALUE_TYPE": "WORK"}]
    assert masked["FIELDS"]["UF_MOBILE"] == "•••••••••67"
    assert masked["FIELDS"]["Телефон"] == "•••34"
    assert masked["FIELDS"]["ID"] == "134806"
    assert payload["FIELDS"]["UF_MOBILE"] == 79991234567  # the original is untouched


def _phone(event: dict[str, Any]) -> str:
    """The contact's phone as an admin API reply shows it (PHP-style keys: `PHONE[0]`)."""
    value: str = event["payload"]["data"]["FIELDS"]["PHONE"]["0"]["VALUE"]
    return value


async def _contact(settings: Settings, engine: AsyncEngine) -> tuple[str, str]:
    """Ingest the contact, deliver it; returns its event id and delivery id."""
    async with running_app(settings) as client:
        reply = await client.post("/webhooks/bitrix24", content=contact_with_pii(), headers=FORM)
        event_id = reply.json()["event_id"]
        rt = await Runtime.open(settings)
        try:
            await drain(rt, "ww", budget=5)
        finally:
            await rt.close()
        detail = await client.get(f"/admin/v1/events/{event_id}", headers=OPERATOR)
        return event_id, detail.json()["deliveries"][0]["id"]


async def test_the_admin_api_masks_for_viewers_only(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> None:
    async with FakeTarget() as fake:
        settings = settings_for(admin_hub(fake.url))
        event_id, delivery_id = await _contact(settings, engine)
        [sent] = fake.requests
    assert PHONE in sent.body.decode() and EMAIL in sent.body.decode()  # targets get it as sent
    [stored] = await event_rows(engine)
    assert PHONE in str(stored.payload)  # stored as received
    async with running_app(settings) as client:
        paths = [
            f"/admin/v1/events/{event_id}?include_raw=true",
            f"/admin/v1/deliveries/{delivery_id}",
            "/admin/v1/events?target=ww",
            "/admin/v1/deliveries?target=ww",
        ]
        for path in paths:
            viewer = await client.get(path, headers=VIEWER)
            operator = await client.get(path, headers=OPERATOR)
            assert viewer.status_code == operator.status_code == 200
            assert "123-45-67" not in viewer.text and "ivan.petrov" not in viewer.text, path
        event = (
            await client.get(f"/admin/v1/events/{event_id}?include_raw=true", headers=VIEWER)
        ).json()
        assert _phone(event) == "••••••••••••••••67"
        assert "i•••@example.ru" in event["raw_body"]
        full = (await client.get(f"/admin/v1/events/{event_id}", headers=OPERATOR)).json()
        assert _phone(full) == PHONE


async def test_masking_can_be_turned_off(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> None:
    async with FakeTarget() as fake:
        config = copy.deepcopy(admin_hub(fake.url))
        config["pii"] = {"mask_for_viewers": False}
        settings = settings_for(config)
        event_id, _ = await _contact(settings, engine)
    async with running_app(settings) as client:
        viewer = (await client.get(f"/admin/v1/events/{event_id}", headers=VIEWER)).json()
    assert _phone(viewer) == PHONE
