"""A 1C number beyond 64 bits (a barcode, a sum in kopecks) arrives at the target as it was sent:
stored exactly in jsonb, delivered exactly (orjson alone would make it a float, or refuse it)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from dispatch.deliver import drain
from dispatch.runtime import Runtime
from tests.dispatch.harness import BASIC_1C
from tests.dispatch.test_correlation import REF, onec_to_erp
from tests.fake_target import FakeTarget
from tests.http_app import running_app

BIG = "123456789012345678901234567890"
NEGATIVE = "-9300000000000000001"  # below int64's minimum
JSON_1C = {"content-type": "application/json", "authorization": BASIC_1C}


def _body(ref: str, n: int) -> bytes:
    data = f'{{"barcode": {BIG}, "debt": {NEGATIVE}, "n": {n}}}'
    return f'{{"type": "Документ.Заказ", "ref": "{ref}", "data": {data}}}'.encode()


async def test_big_integers_are_stored_and_delivered_exactly(
    settings_for: Callable[..., Settings], engine: AsyncEngine, fake_target: FakeTarget
) -> None:
    settings = settings_for(onec_to_erp(fake_target.url))
    other = REF.replace("b1", "c2", 1)
    third = REF.replace("b1", "d3", 1)
    async with running_app(settings) as client:
        single = await client.post("/webhooks/1c", content=_body(REF, 1), headers=JSON_1C)
        # With a client key the canonical payload is hashed too; a batch stores each row's bytes.
        keyed = await client.post(
            "/webhooks/1c", content=_body(other, 2), headers={**JSON_1C, "idempotency-key": "k1"}
        )
        batch = await client.post(
            "/webhooks/1c", content=b"[" + _body(third, 3) + b"]", headers=JSON_1C
        )
        assert [single.status_code, keyed.status_code, batch.status_code] == [200] * 3, [
            single.text,
            keyed.text,
            batch.text,
        ]
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT payload::text FROM events"))).scalars()
            stored_texts = list(stored)
        rt = await Runtime.open(settings)
        try:
            assert await drain(rt, "erp", budget=10) == 3
        finally:
            await rt.close()
    assert len(stored_texts) == 3
    for payload in stored_texts:
        assert f'"barcode": {BIG}' in payload and f'"debt": {NEGATIVE}' in payload
    received = sorted(fake_target.requests, key=lambda r: r.json()["data"]["n"])
    assert [r.json()["data"]["n"] for r in received] == [1, 2, 3]
    for request in received:
        assert f'"barcode":{BIG}'.encode() in request.body
        assert f'"debt":{NEGATIVE}'.encode() in request.body
