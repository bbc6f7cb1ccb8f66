"""Property: whatever a client sends, the hub answers 2xx or 4xx, and a refused request stores
nothing (a 2xx stores exactly the new events it names). Bounded to seconds: every example is a real
request through the app into PostgreSQL.
"""

from __future__ import annotations

import json
import os
import string
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from app.sources.bitrix24.phpform import parse_php_form
from tests.http_app import HubClient
from tests.ingest.test_errors import BASIC, DEAL, FORM, count

FUZZ = settings(
    max_examples=int(os.environ.get("MMHUB_FUZZ_EXAMPLES", "80")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PATHS = ["/webhooks/1c", "/webhooks/1c/Документ.ЗаказКлиента", "/webhooks/bitrix24"]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=windows-1251",
    "application/x-www-form-urlencoded",
    "text/plain",
    "",
]

# Text that reaches the corners: NUL and control characters, Cyrillic, surrogate-free Unicode.
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "\x00", "0", "undefined", "Документ.X", "jcfg:DocumentObject.X", "99999-01-01T00:00:00"]
)


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid three times in four, so that most examples get past validation into storage."""
    return st.integers(0, 3).flatmap(lambda n: other if n == 3 else valid)


guids = mostly(st.uuids().map(str), texts)
dates = mostly(st.datetimes().map(lambda d: d.isoformat()), texts)
type_names = mostly(st.sampled_from(["Документ.ЗаказКлиента", "Справочник.X"]), texts)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def fields(
    required: dict[str, Any], **optional: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with these fields (the optional ones or not) plus random others."""
    return st.fixed_dictionaries(required, optional=optional).flatmap(
        lambda known: st.dictionaries(texts, json_values, max_size=3).map(
            lambda extra: {**extra, **known}
        )
    )


envelopes = fields(
    {"type": type_names | st.integers(), "ref": guids},
    event=texts | st.none(),
    data_version=texts | st.integers() | st.none(),
    data=mostly(st.dictionaries(texts, json_values, max_size=4), json_values),
    Date=dates,
    date=dates,
)
xdto = fields(
    {
        "#type": mostly(st.just("jcfg:DocumentObject.X"), texts),
        "#value": fields({"Ref": guids}, DataVersion=texts, Date=dates, DeletionMark=scalars),
    }
)
odata_rows = fields({"Ref_Key": guids}, DataVersion=texts, DeletionMark=scalars, Date=dates)
# (path, body): each shape where it belongs, and anything anywhere.
onec_requests = (
    st.tuples(
        st.just(PATHS[0]), envelopes | xdto | st.lists(envelopes | xdto, min_size=1, max_size=3)
    )
    | st.tuples(
        st.just(PATHS[1]),
        odata_rows | st.fixed_dictionaries({"value": st.lists(odata_rows, max_size=3)}),
    )
    | st.tuples(st.sampled_from(PATHS[:2]), json_values)
)
# PHP-style names: brackets, empty brackets, unclosed brackets, percent escapes.
names = st.lists(
    st.sampled_from(["data", "FIELDS", "ID", "[", "]", "[]", "%00", "%5B", "auth", "event", "ts"])
    | st.text(string.ascii_letters + string.digits, max_size=4),
    min_size=1,
    max_size=8,
).map("".join)


async def _post_and_check(
    hub: HubClient, engine: AsyncEngine, path: str, body: bytes, headers: dict[str, str]
) -> None:
    before = await count(engine)
    reply = await hub.post(path, content=body, headers=headers)
    after = await count(engine)
    assert reply.status_code < 500, (reply.status_code, reply.text, body[:300])
    event(f"HTTP {reply.status_code}")  # --hypothesis-show-statistics: how many got through
    if not reply.is_success:
        assert reply.headers["content-type"] == "application/problem+json"
        assert after == before, (reply.status_code, body[:300])
        return
    answer = reply.json()
    events = answer.get("events", [answer])
    new = [e for e in events if not e["duplicate"]]
    assert after[0] - before[0] == len({e["event_id"] for e in new})
    assert after[1] - before[1] == sum(e["deliveries"] for e in new)


@FUZZ
@given(
    path=st.sampled_from(PATHS), ctype=st.sampled_from(CONTENT_TYPES), body=st.binary(max_size=300)
)
async def test_any_bytes(
    hub: HubClient, engine: AsyncEngine, path: str, ctype: str, body: bytes
) -> None:
    headers = {"content-type": ctype, "authorization": BASIC}
    await _post_and_check(hub, engine, path, body, headers)


@FUZZ
@given(request=onec_requests, key=st.none() | st.sampled_from(["k1", "k2"]))
async def test_any_1c_json(
    hub: HubClient, engine: AsyncEngine, request: tuple[str, Any], key: str | None
) -> None:
    path, body = request
    headers = {"content-type": "application/json", "authorization": BASIC}
    if key:
        headers["idempotency-key"] = key
    await _post_and_check(hub, engine, path, json.dumps(body, ensure_ascii=False).encode(), headers)


@FUZZ
@given(pairs=st.lists(st.tuples(names, st.binary(max_size=8)), max_size=6), as_json=st.booleans())
async def test_any_bitrix24_form_or_json(
    hub: HubClient, engine: AsyncEngine, pairs: list[tuple[str, bytes]], as_json: bool
) -> None:
    # The fixture keeps a valid portal and token, so the fuzzed fields reach the parser and storage.
    # As JSON, the same fields parsed (values hex-encoded: raw control bytes make forms invalid).
    fields = [(name.encode(), value.hex().encode() if as_json else value) for name, value in pairs]
    body = DEAL + b"".join(b"&" + n + b"=" + v for n, v in fields)
    headers = FORM
    if as_json:
        body, headers = orjson.dumps(parse_php_form(body)), {"content-type": "application/json"}
    await _post_and_check(hub, engine, "/webhooks/bitrix24", body, headers)
