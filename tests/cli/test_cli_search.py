"""`mmhub deliveries list/show` and `mmhub events list/show`: filters, pages, attempts, bad input."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.cli.helpers import Mmhub, seed

ORDER = "Документ.ЗаказКлиента.updated"


async def three(engine: AsyncEngine) -> dict[str, str]:
    """A: erp dead, 3 hours old; B: ww delivered from 1C; C: erp retrying with a needle."""
    [a] = await seed(engine, status="dead", subject="deal/1", age=timedelta(hours=3), attempts=2)
    [b] = await seed(
        engine,
        target="ww",
        status="delivered",
        source="onec",
        event_type=ORDER,
        subject="Документ.ЗаказКлиента/x",
    )
    [c] = await seed(
        engine,
        status="retrying",
        event_type="ONCRMDEALUPDATE",
        subject="deal/2",
        payload={"FIELDS": {"ID": "2", "TITLE": "a needle in it"}},
    )
    return {"A": a, "B": b, "C": c}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--status", "dead"], "A"),
        (["--status", "dead,retrying"], "AC"),
        (["--target", "ww"], "B"),
        (["--source", "onec"], "B"),
        (["--event-type", "ONCRMDEAL*"], "AC"),
        (["--event-type", "ONCRMDEALUPDATE"], "C"),
        (["--subject", "deal/1"], "A"),
        (["--since", "1h"], "BC"),
        (["--until", "1h"], "A"),
        (["--text", "needle"], "C"),
        (["--target", "erp", "--since", "1h"], "C"),
        ([], "ABC"),
    ],
)
async def test_deliveries_list_filters(
    mmhub: Mmhub, engine: AsyncEngine, args: list[str], expected: str
) -> None:
    ids = await three(engine)
    result = await mmhub("deliveries", "list", *args, "--json")
    assert result.exit_code == 0, result.output
    page = json.loads(result.stdout)
    assert {item["id"] for item in page["items"]} == {ids[k] for k in expected}
    assert page["next_cursor"] is None


async def test_list_json_is_stable_and_people_get_a_table(
    mmhub: Mmhub, engine: AsyncEngine
) -> None:
    ids = await three(engine)
    result = await mmhub("deliveries", "list", "--status", "dead", "--json")
    [item] = json.loads(result.stdout)["items"]
    assert item["id"] == ids["A"]
    assert item["event"]["subject"] == "deal/1"
    assert item["created_at"].endswith("Z")
    assert (item["status"], item["target"], item["attempt_count"]) == ("dead", "erp", 2)

    table = await mmhub("deliveries", "list", "--target", "erp", env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert ids["A"] in table.stdout and ids["C"] in table.stdout
    assert "3h ago" in table.stdout
    assert "2 shown" in table.stdout


async def test_pages_through_with_the_cursor(mmhub: Mmhub, engine: AsyncEngine) -> None:
    created = await seed(engine, count=5)
    first = json.loads((await mmhub("deliveries", "list", "--limit", "3", "--json")).stdout)
    assert len(first["items"]) == 3 and first["next_cursor"]
    rest = await mmhub(
        "deliveries", "list", "--limit", "3", "--cursor", first["next_cursor"], "--json"
    )
    second = json.loads(rest.stdout)
    assert second["next_cursor"] is None
    seen = [i["id"] for i in first["items"] + second["items"]]
    assert sorted(seen) == sorted(created)
    assert seen == sorted(created, reverse=True)  # newest first

    people = await mmhub("deliveries", "list", "--limit", "3", env={"COLUMNS": "200"})
    assert f"--cursor {first['next_cursor']}" in people.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["--target", "ww"], "B"), (["--status", "dead"], "A"), (["--source", "bitrix24"], "AC")],
)
async def test_events_list_filters(
    mmhub: Mmhub, engine: AsyncEngine, args: list[str], expected: str
) -> None:
    ids = await three(engine)
    deliveries = json.loads((await mmhub("deliveries", "list", "--json")).stdout)["items"]
    event_of = {d["id"]: d["event"]["id"] for d in deliveries}
    result = await mmhub("events", "list", *args, "--json")
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)["items"]
    assert {e["id"] for e in items} == {event_of[ids[k]] for k in expected}
    assert all(len(e["deliveries"]) == 1 for e in items)


async def test_delivery_show_lists_its_attempts(mmhub: Mmhub, engine: AsyncEngine) -> None:
    [delivery_id] = await seed(engine, status="dead", attempts=3)
    result = await mmhub("deliveries", "show", delivery_id, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["id"] == delivery_id
    assert [a["number"] for a in record["attempts"]] == [1, 2, 3]
    assert [a["outcome"] for a in record["attempts"]] == ["retry", "retry", "dead"]
    assert record["attempts"][0]["http_status"] == 503
    assert record["event"]["payload"] == {"FIELDS": {"ID": "1"}}

    people = await mmhub("deliveries", "show", delivery_id, env={"COLUMNS": "200"})
    assert people.exit_code == 0, people.output
    assert delivery_id in people.stdout
    assert "attempts" in people.stdout and "503" in people.stdout
    assert "Сервис недоступен" in people.stdout  # the last response


async def test_event_show_lists_deliveries_and_attempts(mmhub: Mmhub, engine: AsyncEngine) -> None:
    [delivery_id] = await seed(engine, status="dead", attempts=2)
    listed = json.loads((await mmhub("deliveries", "list", "--json")).stdout)
    event_id = listed["items"][0]["event"]["id"]
    result = await mmhub("events", "show", event_id, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    [delivery] = record["deliveries"]
    assert delivery["id"] == delivery_id
    assert [a["number"] for a in delivery["attempts"]] == [1, 2]

    people = await mmhub("events", "show", event_id, "--payload", env={"COLUMNS": "200"})
    assert people.exit_code == 0, people.output
    assert delivery_id in people.stdout and "FIELDS" in people.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deliveries", "list", "--status", "nope"], "--status: unknown status 'nope'"),
        (["deliveries", "list", "--since", "yesterday-ish"], "--since: not a time"),
        (["events", "list", "--until", "soon"], "--until: not a time"),
        (["replay", "--status", "dead", "--since", "yesterday-ish"], "--since: not a time"),
        (["audit", "--since", "last week"], "--since: not a time"),
        (["deliveries", "list", "--cursor", "garbage!"], "cursor"),
        (["deliveries", "list", "--cursor", "eHl6"], "cursor"),  # base64 of "xyz"
        (["events", "list", "--cursor", "eHl6fHh5eg=="], "cursor"),  # "xyz|xyz"
        (["deliveries", "show", "not-an-id"], "not a delivery id"),
        (["deliveries", "show", "0193e6a4-6a1b-7c3d-8e9f-0a1b2c3d4e5f"], "no delivery"),
        (["events", "show", "0193e6a4-6a1b-7c3d-8e9f-0a1b2c3d4e5f"], "no event"),
    ],
)
async def test_user_errors_are_one_line_and_exit_1(
    mmhub: Mmhub, args: list[str], message: str
) -> None:
    result = await mmhub(*args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert result.stdout == ""


async def test_an_unreachable_database_is_one_clear_line(mmhub: Mmhub) -> None:
    url = "postgresql+asyncpg://mmhub:x@127.0.0.1:9/mmhub"
    result = await mmhub("deliveries", "list", env={"MMHUB_DATABASE_URL": url})
    assert result.exit_code == 1
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.output
