"""Event identity on real Bitrix24 bodies: every family's subject, and dedup keys that never merge two events."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Event
from app.settings import Settings
from app.sources.bitrix24.identity import RULES, rule_for, subject_of
from app.sources.bitrix24.identity import text as id_text
from app.sources.bitrix24.lifecycle import LIFECYCLE_EVENTS
from app.sources.bitrix24.parse import parse_b24
from app.sources.bitrix24.phpform import parse_php_form
from app.sources.errors import ShapeError
from tests.fixture_files import FIXTURES
from tests.http_app import HubClient, running_app
from tests.hub_config import HUB_CONFIG

EVENTS = FIXTURES / "bitrix24" / "events"
MANIFEST: list[dict[str, str]] = json.loads((EVENTS / "manifest.json").read_text())
FORM = {"content-type": "application/x-www-form-urlencoded"}
DOCS_PORTAL = "a223c6b3710f85df22e9377d6c4f7553"


def form(entry: dict[str, str]) -> dict[str, Any]:
    return parse_php_form((EVENTS / entry["file"]).read_bytes())


def as_json(entry: dict[str, str]) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((EVENTS / entry["json"]).read_bytes())
    return loaded


def test_the_collection_covers_every_family_with_real_bodies() -> None:
    assert len(MANIFEST) >= 40
    covered = {entry["family"] for entry in MANIFEST}
    for family in (
        "deals",
        "leads",
        "contacts",
        "companies",
        "quotes",
        "invoices (old)",
        "smart-process items",
        "activities",
        "timeline comments",
        "requisites",
        "bank details",
        "addresses",
        "tasks",
        "task comments",
        "telephony calls",
        "external calls",
        "users",
        "bot messages",
        "open line messages",
        "orders",
        "catalog products",
        "calendar entries",
    ):
        assert family in covered
    assert "unknown" not in covered  # every documented event has its rule
    assert all(
        entry["source"].startswith("bitrix24/b24restdocs api-reference/") for entry in MANIFEST
    )


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["event"] for e in MANIFEST])
def test_each_real_body_gets_its_subject_from_form_and_json_alike(entry: dict[str, str]) -> None:
    from_form, from_json = parse_b24(form(entry)), parse_b24(as_json(entry))

    assert from_form.event == entry["event"]
    assert from_form.subject == from_json.subject == entry["subject"]
    assert (
        from_form.dedup_key() == from_json.dedup_key()
    )  # one event, whichever encoding it came in
    member_id = as_json(entry)["auth"]["member_id"]
    assert from_form.dedup_key().startswith(f"b24v2:{member_id}:{entry['event']}:")


def test_every_rule_is_reachable() -> None:
    """No row is shadowed by an earlier one: each family answers for at least one of its own names."""
    samples = {e["family"]: e["event"] for e in MANIFEST}
    for rule in RULES:
        if rule.family in samples:
            assert rule_for(samples[rule.family]) is rule


def docs_portals() -> list[dict[str, Any]]:
    """The documentation's sample portals, each with every token its pages use."""
    tokens: dict[str, set[str]] = {}
    for entry in MANIFEST:
        auth = as_json(entry)["auth"]
        if auth.get("application_token"):
            tokens.setdefault(auth["member_id"], set()).add(auth["application_token"])
    return [{"member_id": m, "application_tokens": sorted(t)} for m, t in sorted(tokens.items())]


@pytest.fixture
async def docs_hub(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> AsyncIterator[HubClient]:
    """The test hub with the documentation's sample portals."""
    config = copy.deepcopy(HUB_CONFIG)
    config["sources"]["bitrix24"]["portals"] = docs_portals()
    async with running_app(settings_for(config)) as hub:
        yield hub


def call_end(call_id: str) -> bytes:
    body = parse_php_form((EVENTS / "onvoximplantcallend.form").read_bytes())
    return urlencode(_flat({**body, "data": {**body["data"], "CALL_ID": call_id}})).encode()


def comment_add(task_id: int) -> bytes:
    body = parse_php_form((EVENTS / "ontaskcommentadd.form").read_bytes())
    data = {**body["data"], "FIELDS_AFTER": {"ID": "0", "TASK_ID": str(task_id)}}
    return urlencode(_flat({**body, "data": data})).encode()


def _flat(node: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}[{key}]" if prefix else str(key)))
        return out
    if isinstance(node, list):
        return _flat(dict(enumerate(node)), prefix)
    return {prefix: "" if node is None else str(node)}


async def stored(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(Event).order_by(Event.received_at))).all())


async def test_two_calls_ending_in_the_same_second_are_two_events(
    docs_hub: HubClient, engine: AsyncEngine
) -> None:
    replies = [
        await docs_hub.post("/webhooks/bitrix24", content=call_end(call), headers=FORM)
        for call in ("externalCall.a.1773239327", "externalCall.b.1773239327")
    ]

    assert [r.json()["duplicate"] for r in replies] == [False, False]
    events = await stored(engine)
    assert sorted(e.subject for e in events) == [
        "call/externalCall.a.1773239327",
        "call/externalCall.b.1773239327",
    ]
    assert len({e.dedup_key for e in events}) == 2


async def test_two_comments_on_different_tasks_are_two_events_in_two_lanes(
    docs_hub: HubClient, engine: AsyncEngine
) -> None:
    for task in (555, 556):
        reply = await docs_hub.post("/webhooks/bitrix24", content=comment_add(task), headers=FORM)
        assert reply.json()["duplicate"] is False, reply.text

    events = await stored(engine)
    assert sorted(e.subject for e in events) == ["task/555", "task/556"]
    async with engine.connect() as conn:
        lanes = (
            (await conn.execute(text("SELECT DISTINCT ordering_key FROM deliveries")))
            .scalars()
            .all()
        )
    assert sorted(lanes) == ["task/555", "task/556"]


async def test_the_same_body_twice_is_one_event_and_names_the_first(
    docs_hub: HubClient, engine: AsyncEngine
) -> None:
    body = call_end("externalCall.same.1")
    first = await docs_hub.post("/webhooks/bitrix24", content=body, headers=FORM)
    again = await docs_hub.post("/webhooks/bitrix24", content=body, headers=FORM)

    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert again.json()["event_id"] == first.json()["event_id"]
    assert len(await stored(engine)) == 1


STORED = [
    e
    for e in MANIFEST
    if e["event"] not in LIFECYCLE_EVENTS and as_json(e)["auth"].get("application_token")
]


async def test_every_real_body_is_stored_once_with_its_subject(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> None:
    config = copy.deepcopy(HUB_CONFIG)
    config["sources"]["bitrix24"]["portals"] = docs_portals()
    async with running_app(settings_for(config)) as hub:
        for entry in STORED:
            body = (EVENTS / entry["file"]).read_bytes()
            reply = await hub.post("/webhooks/bitrix24", content=body, headers=FORM)
            assert reply.status_code == 200, (entry["file"], reply.text)
            assert reply.json()["duplicate"] is False, entry["file"]

    events = {e.type: e for e in await stored(engine)}
    assert len(STORED) >= 150 and len(events) == len(STORED)
    for entry in STORED:
        event = events[entry["event"]]
        assert event.subject == entry["subject"]
        assert event.dedup_key == parse_b24(form(entry)).dedup_key()
        token = as_json(entry)["auth"]["application_token"].encode()
        assert token not in bytes(event.raw_body) and token not in orjson.dumps(event.payload)


def test_an_event_without_an_id_gets_a_hashed_subject_per_data() -> None:
    one = subject_of("ONEXTERNALCALLBACKSTART", {"PHONE_NUMBER": "+49 1", "CRM_ENTITY_ID": "5"})
    two = subject_of("ONEXTERNALCALLBACKSTART", {"PHONE_NUMBER": "+49 2", "CRM_ENTITY_ID": "5"})
    assert one.startswith("call/~") and two.startswith("call/~") and one != two
    assert len(one.split("~")[1]) == 16
    for empty in ({"FIELDS": {"ID": "0"}}, {"FIELDS": {"ID": ""}}, {"FIELDS": {"ID": " "}}):
        assert subject_of("ONCRMDEALUPDATE", empty).startswith("deal/~")


def test_unknown_events_are_named_after_their_entity() -> None:
    assert subject_of("ONCRMWIDGETUPDATE", {"FIELDS": {"ID": "7"}}) == "widget/7"


@pytest.mark.parametrize("ts", ["99999999999999999999", "-1", "1e9", "abc", "253402300800"])
def test_a_ts_out_of_range_is_refused(ts: str) -> None:
    with pytest.raises(ShapeError, match="ts"):
        parse_b24({"event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": "1"}}, "ts": ts})


async def test_a_ts_out_of_range_gets_422_and_stores_nothing(
    docs_hub: HubClient, engine: AsyncEngine
) -> None:
    body = (
        (EVENTS / "oncrmdealupdate.form")
        .read_bytes()
        .replace(b"ts=", b"ts=99999999999999999999&x=")
    )
    reply = await docs_hub.post("/webhooks/bitrix24", content=body, headers=FORM)
    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert await stored(engine) == []


async def test_a_v1_key_stays_and_never_meets_a_v2_key(
    docs_hub: HubClient, engine: AsyncEngine
) -> None:
    """Rows stored before keep their `(member_id, event, subject, ts)` keys; the new keys cannot collide with them."""
    entry = next(e for e in MANIFEST if e["event"] == "ONCRMDEALUPDATE")
    parsed = parse_b24(form(entry))
    v1 = f"{DOCS_PORTAL}:{parsed.event}:{parsed.subject}:{parsed.ts}"
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO events (id, source, type, subject, dedup_key, headers, payload, raw_body) VALUES"
                " (gen_random_uuid(), 'bitrix24', :type, :subject, :key, '{}', '{}', '')"
            ),
            {"type": parsed.event, "subject": parsed.subject, "key": v1},
        )
    reply = await docs_hub.post(
        "/webhooks/bitrix24", content=(EVENTS / entry["file"]).read_bytes(), headers=FORM
    )

    assert reply.json()["duplicate"] is False
    keys = sorted(e.dedup_key for e in await stored(engine))
    assert keys == sorted([v1, parsed.dedup_key()])


# ---- properties ----

_KEYS = st.text("ABCDEFGH_", min_size=1, max_size=4)
_LEAF = st.one_of(st.text("abcxyz019 -", min_size=1, max_size=6), st.integers(1, 10**6))
_DATA = st.recursive(
    st.dictionaries(_KEYS, _LEAF, min_size=1, max_size=3),
    lambda inner: st.dictionaries(_KEYS, inner, min_size=1, max_size=3),
    max_leaves=8,
)
_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_BASE = {"event": "ONCRMDEALUPDATE", "ts": "1766047124", "auth": {"member_id": DOCS_PORTAL}}


def _leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*path, key))]
    return [path]


def _replaced(node: Any, path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    return {**node, path[0]: _replaced(node[path[0]], path[1:], value)}


@_FAST
@given(_DATA, st.data())
def test_two_bodies_whose_data_differ_never_share_a_dedup_key(
    data: dict[str, Any], draw: Any
) -> None:
    """Change any one value, add or remove a field: the key changes (the v1 key merged such events)."""
    path = draw.draw(st.sampled_from(_leaves(data)))
    old = str(_at_path(data, path))
    new = draw.draw(_LEAF.filter(lambda v: str(v) != old))
    changed = _replaced(data, path, new)
    added = {**data, "ZZ_EXTRA": "1"}
    removed = {k: v for k, v in data.items() if k != next(iter(data))}
    key = parse_b24({**_BASE, "data": data}).dedup_key()
    for other in (changed, added, removed):
        assert parse_b24({**_BASE, "data": other}).dedup_key() != key


def _at_path(node: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


@_FAST
@given(_DATA)
def test_the_form_and_the_json_of_one_event_share_their_key(data: dict[str, Any]) -> None:
    """What Bitrix24 posts as a form and its JSON twin (numbers as numbers) give one key."""
    as_form = parse_php_form(urlencode(_flat({**_BASE, "data": data})).encode())
    assert parse_b24(as_form).dedup_key() == parse_b24({**_BASE, "data": data}).dedup_key()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" 42 ", "42"),
        (42, "42"),
        ("0", None),
        (0, None),
        ("undefined", None),
        ("Undefined", None),
        (True, None),
    ],
)
def test_an_id_is_text_that_names_something(value: Any, expected: str | None) -> None:
    # Bitrix24 sends "0" and JavaScript's "undefined" where there is no id.
    assert id_text(value) == expected
