"""1C dedup keys (contract v2): `(type, ref, data_version)` when a version is sent, else the SHA-256
of the canonical payload, so two different 1C events never share a key."""

from __future__ import annotations

import hashlib

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Event
from tests.http_app import HubClient
from tests.ingest.test_errors import BASIC, count

JSON = {"content-type": "application/json", "authorization": BASIC}
REF_A = "b1c89da7-cb6a-11e6-aede-5404a6b4b8ed"
REF_B = "8bbfc2c7-cdb9-11e6-aede-5404a6b4b8ed"


async def post(hub: HubClient, body: object, path: str = "/webhooks/1c") -> dict[str, object]:
    reply = await hub.post(path, content=orjson.dumps(body), headers=JSON)
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


async def keys(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(Event.dedup_key))).scalars())


async def test_versionless_events_of_one_type_are_not_merged(
    hub: HubClient, engine: AsyncEngine
) -> None:
    # Two records of one type, then a second change of one record: three events.
    bodies = [
        {"type": "Справочник.Контрагенты", "ref": REF_A, "data": {"name": "ООО Ромашка"}},
        {"type": "Справочник.Контрагенты", "ref": REF_B, "data": {"name": "ООО Лютик"}},
        {"type": "Справочник.Контрагенты", "ref": REF_A, "data": {"name": "ООО Ромашка+"}},
    ]
    replies = [await post(hub, body) for body in bodies]
    assert [r["duplicate"] for r in replies] == [False, False, False]
    assert len({r["event_id"] for r in replies}) == 3
    assert await count(engine) == (3, 3)
    assert all(key.startswith("sha256:") for key in await keys(engine))


async def test_versionless_key_is_the_canonical_payloads_hash(
    hub: HubClient, engine: AsyncEngine
) -> None:
    body = {"type": "Справочник.Контрагенты", "ref": REF_A.upper(), "data": {"b": 1, "a": [2]}}
    await post(hub, body)
    stored = {
        "data": {"a": [2], "b": 1},
        "data_version": None,
        "event": "updated",
        "ref": REF_A,
        "type": "Справочник.Контрагенты",
    }
    canonical = orjson.dumps(stored, option=orjson.OPT_SORT_KEYS)
    assert await keys(engine) == ["sha256:" + hashlib.sha256(canonical).hexdigest()]


async def test_versionless_resend_is_a_duplicate_however_encoded(
    hub: HubClient, engine: AsyncEngine
) -> None:
    body = {"type": "Справочник.Контрагенты", "ref": REF_A, "data": {"name": "ООО Ромашка"}}
    first = await post(hub, body)
    text = orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
    again = await hub.post(
        "/webhooks/1c", content=b"\xef\xbb\xbf" + text.encode("cp1251"), headers=JSON
    )
    assert again.json() == {**first, "duplicate": True, "deliveries": 0}
    assert await count(engine) == (1, 1)


async def test_same_odata_row_under_two_types_is_two_events(
    hub: HubClient, engine: AsyncEngine
) -> None:
    row = {"Ref_Key": REF_A, "Description": "Мойка"}
    await post(hub, row, "/webhooks/1c/Справочник.Номенклатура")
    await post(hub, row, "/webhooks/1c/Справочник.Услуги")
    assert await count(engine) == (2, 2)


async def test_a_version_names_one_write(hub: HubClient, engine: AsyncEngine) -> None:
    body = {"type": "Документ.ЗаказКлиента", "ref": REF_A, "data_version": "AAAABAAAAAA="}
    first = await post(hub, {**body, "data": {"number": "1"}})
    again = await post(hub, {**body, "data": {"number": "1", "comment": "re-exported"}})
    newer = await post(hub, {**body, "data_version": "AAAABQAAAAA=", "data": {"number": "1"}})
    assert again == {**first, "duplicate": True, "deliveries": 0}
    assert newer["duplicate"] is False
    assert sorted(await keys(engine)) == [
        f"Документ.ЗаказКлиента:{REF_A}:AAAABAAAAAA=",
        f"Документ.ЗаказКлиента:{REF_A}:AAAABQAAAAA=",
    ]
