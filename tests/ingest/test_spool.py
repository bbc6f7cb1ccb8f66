"""The outage spool: with PostgreSQL stopped, valid events get 202, wait in an fsync'd file, and
reach PostgreSQL in acceptance order, with their event ids, once it is back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from app.db import make_engine
from app.embedded import EmbeddedServers
from app.models import Delivery, Event
from app.settings import Settings
from tests.dispatch.harness import BASIC_1C, FORM, deal, eventually
from tests.fixture_files import fixture_bytes
from tests.http_app import HubClient, running_app
from tests.hub_config import HUB_CONFIG
from tests.ingest.conftest import recorded_runtime

ROOT = Path(__file__).resolve().parents[2]
ORDER = fixture_bytes("onec/order-updated-with-bom.json")
JSON_1C = {"content-type": "application/json", "authorization": BASIC_1C}


def _settings(
    servers: EmbeddedServers, settings_for: Callable[..., Settings], **overrides: Any
) -> Settings:
    runtime = recorded_runtime(servers)
    return settings_for(HUB_CONFIG, **overrides).model_copy(
        update={"database_url": runtime.database_url, "redis_url": runtime.redis_url}
    )


async def _stored(servers: EmbeddedServers) -> tuple[list[Any], list[Any]]:
    """Events by id, and the event ids of the deliveries in commit order (seq)."""
    engine = make_engine(recorded_runtime(servers).database_url, pool_size=1)
    async with engine.connect() as conn:
        events = list((await conn.execute(select(Event.id, Event.subject))).all())
        order = (await conn.execute(select(Delivery.event_id).order_by(Delivery.seq))).scalars()
        in_order = list(dict.fromkeys(str(event_id) for event_id in order))
    await engine.dispose()
    return events, in_order


async def _spool_depth(client: HubClient) -> int:
    return int((await client.get("/readyz")).json()["spool"]["events"])


def _spooled_ids(directory: Path) -> list[str]:
    return [
        orjson.loads(line)["id"]
        for path in sorted(directory.glob("spool-*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


async def test_outage_spools_then_drains_in_order_with_the_given_ids(
    own_servers: EmbeddedServers, settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    async with running_app(_settings(own_servers, settings_for, spool_dir=spool_dir)) as client:
        first = await client.post("/webhooks/bitrix24", content=deal(7405), headers=FORM)
        assert first.status_code == 200

        own_servers.stop_postgres()
        bodies = [
            ("/webhooks/bitrix24", deal(7406), FORM),
            ("/webhooks/1c", ORDER, JSON_1C),
            ("/webhooks/bitrix24", deal(7406, ts=1766047200), FORM),  # a later change, same deal
            ("/webhooks/bitrix24", deal(7406), FORM),  # the first one again: a duplicate
            ("/webhooks/bitrix24", deal(7405), FORM),  # a duplicate of a committed event
        ]
        replies = [await client.post(path, content=b, headers=h) for path, b, h in bodies]
        assert [r.status_code for r in replies] == [202] * 5, replies[-1].text
        assert all(r.json()["status"] == "spooled" for r in replies)
        ids = [r.json()["event_id"] for r in replies]
        assert _spooled_ids(spool_dir) == ids  # appended in acceptance order, before the reply
        assert await _spool_depth(client) == 5
        metrics = (await client.get("/metrics")).text
        assert re.search(r"^mmhub_spool_events(\{[^}]*\})? 5\.0$", metrics, re.MULTILINE)

        status = _spool_status(spool_dir)
        assert [row["event_id"] for row in status] == ids
        assert status[1]["subject"].startswith("Документ.ЗаказКлиента/")

        own_servers.start_postgres(recorded_runtime(own_servers).pg_port)
        await eventually(
            lambda: _drained(client), seconds=90
        )  # a bound, generous for a loaded machine
        after = await client.post("/webhooks/bitrix24", content=deal(7407), headers=FORM)
        assert after.status_code == 200  # straight to PostgreSQL again

    events, in_order = await _stored(own_servers)
    assert in_order == [first.json()["event_id"], *ids[:3], after.json()["event_id"]]
    assert {str(event_id) for event_id, _ in events} == set(in_order)  # duplicates stored nothing
    assert spool_dir.joinpath("spool-0.jsonl").read_bytes() == b""  # drained, then started over
    assert _spool_status(spool_dir) == []


async def _drained(client: HubClient) -> bool:
    spool = (await client.get("/readyz")).json()["spool"]
    return spool["events"] == 0 and not spool["active"]


def _spool_status(directory: Path) -> list[dict[str, Any]]:
    """`mmhub spool status --json`, as an operator runs it."""
    env = {**os.environ, "MMHUB_SPOOL_DIR": str(directory), "MMHUB_CONFIG": "/dev/null"}
    result = subprocess.run(
        [sys.executable, "-m", "cli", "spool", "status", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    )
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


async def test_a_restarted_api_drains_what_its_predecessor_spooled(
    own_servers: EmbeddedServers, settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = _settings(own_servers, settings_for, spool_dir=tmp_path / "spool")
    own_servers.stop_postgres()
    async with running_app(settings) as client:
        replies = [
            await client.post("/webhooks/bitrix24", content=deal(n), headers=FORM)
            for n in (1, 2, 3)
        ]
        assert [r.status_code for r in replies] == [202] * 3
        async with running_app(settings) as neighbour:
            # A second API process on the same directory takes its own file, not this one.
            assert await _spool_depth(neighbour) == 0
            assert (
                await neighbour.post("/webhooks/bitrix24", content=deal(4), headers=FORM)
            ).status_code == 202
            assert await _spool_depth(client) == 3
        assert len(list((tmp_path / "spool").glob("spool-*.jsonl"))) == 2
    ids = [r.json()["event_id"] for r in replies]

    own_servers.start_postgres(recorded_runtime(own_servers).pg_port)
    async with running_app(settings) as restarted:
        # It takes slot 0 back and adopts slot 1, whose process is gone.
        await eventually(
            lambda: _drained(restarted), seconds=90
        )  # a bound, generous for a loaded machine
    _, in_order = await _stored(own_servers)
    assert in_order[:3] == ids
    assert len(in_order) == 4


async def test_one_subject_keeps_its_order_across_api_processes(
    own_servers: EmbeddedServers, settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = _settings(own_servers, settings_for, spool_dir=tmp_path / "spool")
    own_servers.stop_postgres()
    async with running_app(settings) as survivor:
        async with running_app(settings) as gone:
            older = await gone.post("/webhooks/bitrix24", content=deal(5, ts=1), headers=FORM)
        assert older.status_code == 202  # and its process ends with it spooled
        own_servers.start_postgres(recorded_runtime(own_servers).pg_port)
        # PostgreSQL is back and this process's spool is empty, but another file holds an older
        # event: the newer one must not overtake it.
        newer = await survivor.post("/webhooks/bitrix24", content=deal(5, ts=2), headers=FORM)
        assert newer.status_code == 202
        await eventually(
            lambda: _drained(survivor), seconds=90
        )  # a bound, generous for a loaded machine
    _, in_order = await _stored(own_servers)
    assert in_order == [older.json()["event_id"], newer.json()["event_id"]]


async def test_a_full_or_unwritable_or_disabled_spool_gives_503(
    own_servers: EmbeddedServers, settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cases = {
        "full": {"spool_dir": tmp_path / "small", "spool_max_bytes": 600},
        "unwritable": {"spool_dir": blocker / "spool"},
        "off": {"spool_dir": tmp_path / "off", "spool_max_bytes": 0},
    }
    own_servers.stop_postgres()
    for name, overrides in cases.items():
        async with running_app(_settings(own_servers, settings_for, **overrides)) as client:
            reply = await client.post("/webhooks/bitrix24", content=deal(9), headers=FORM)
            assert reply.status_code == 503, (name, reply.text)
            assert reply.headers["content-type"] == "application/problem+json"
            assert int(reply.headers["retry-after"]) > 0
            assert "spool" in reply.json()["detail"]
            assert await _spool_depth(client) == 0
    assert not any((tmp_path / "off").glob("*"))
    assert (tmp_path / "small" / "spool-0.jsonl").read_bytes() == b""  # nothing half-written


async def test_a_damaged_record_is_set_aside_and_the_rest_drains(
    own_servers: EmbeddedServers, settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    settings = _settings(own_servers, settings_for, spool_dir=spool_dir)
    own_servers.stop_postgres()
    async with running_app(settings) as client:
        first = await client.post("/webhooks/bitrix24", content=deal(1), headers=FORM)
    path = spool_dir / "spool-0.jsonl"
    _append(path, b'{"not": "an event"}\n')
    async with running_app(settings) as client:
        second = await client.post("/webhooks/bitrix24", content=deal(2), headers=FORM)
        _append(path, b'{"torn": ')  # a crash in the middle of a write nobody was told about
    assert (first.status_code, second.status_code) == (202, 202)

    own_servers.start_postgres(recorded_runtime(own_servers).pg_port)
    async with running_app(settings) as client:
        await eventually(
            lambda: _drained(client), seconds=90
        )  # a bound, generous for a loaded machine
    _, in_order = await _stored(own_servers)
    assert in_order == [first.json()["event_id"], second.json()["event_id"]]
    assert (spool_dir / "spool-0.rejected").read_bytes() == b'{"not": "an event"}\n'


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)
