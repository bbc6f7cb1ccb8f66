"""build_cloudevent: the envelope targets receive, from the columns of app.models.Event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from app.outbox.envelope import build_cloudevent

EVENT_ID = uuid.UUID("0193e6a4-6a1b-7c3d-8e9f-0a1b2c3d4e5f")
RECEIVED = datetime(2025, 12, 18, 8, 40, 1, 250000, tzinfo=UTC)


def row(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": EVENT_ID,
        "source": "bitrix24",
        "type": "ONCRMDEALADD",
        "subject": "deal/7405",
        "origin": "some-domain.bitrix24.ru",
        "occurred_at": datetime(2025, 12, 18, 8, 38, 44, tzinfo=UTC),
        "received_at": RECEIVED,
        "payload": {"FIELDS": {"ID": "7405"}},
    }
    return {**base, **overrides}


def test_bitrix24_event() -> None:
    assert build_cloudevent(row()) == {
        "specversion": "1.0",
        "id": "0193e6a4-6a1b-7c3d-8e9f-0a1b2c3d4e5f",
        "source": "urn:mastermobile:bitrix24:some-domain.bitrix24.ru",
        "type": "bitrix24.ONCRMDEALADD",
        "subject": "deal/7405",
        "time": "2025-12-18T08:38:44Z",
        "datacontenttype": "application/json",
        "data": {"FIELDS": {"ID": "7405"}},
    }


def test_bitrix24_without_origin() -> None:
    assert build_cloudevent(row(origin=None))["source"] == "urn:mastermobile:bitrix24"
    assert build_cloudevent(row(origin=""))["source"] == "urn:mastermobile:bitrix24"


def test_onec_event() -> None:
    event = build_cloudevent(
        row(
            source="onec",
            type="Документ.ЗаказКлиента.updated",
            subject="Документ.ЗаказКлиента/5f1c0a52",
            origin=None,
            payload={"number": "ЗК-000123"},
        )
    )
    assert event["source"] == "urn:mastermobile:1c"
    assert event["type"] == "1c.Документ.ЗаказКлиента.updated"
    assert event["subject"] == "Документ.ЗаказКлиента/5f1c0a52"
    assert event["data"] == {"number": "ЗК-000123"}


def test_time_falls_back_to_received_at_in_utc() -> None:
    assert build_cloudevent(row(occurred_at=None))["time"] == "2025-12-18T08:40:01.250000Z"
    moscow = timezone(timedelta(hours=3))
    local = datetime(2025, 12, 18, 11, 38, 44, tzinfo=moscow)
    assert build_cloudevent(row(occurred_at=local))["time"] == "2025-12-18T08:38:44Z"


def test_onec_data_version_is_the_dataversion_extension() -> None:
    envelope = {"type": "Документ.X", "ref": "r", "data_version": "AAAABAAAAAA=", "data": {"n": 1}}
    event = build_cloudevent(row(source="onec", origin=None, payload=envelope))
    assert event["dataversion"] == "AAAABAAAAAA="
    assert event["data"] == {"n": 1}
    without = build_cloudevent(row(source="onec", payload={**envelope, "data_version": None}))
    assert "dataversion" not in without
    assert "dataversion" not in build_cloudevent(row())
