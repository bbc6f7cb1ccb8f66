"""Offline events: the hub as an installed application loses no change, doubles none, and its writes raise none."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bitrix24.bind import bind
from app.bitrix24.errors import RestError
from app.bitrix24.offline import OFFLINE_CHANNEL
from app.db import make_sessionmaker
from app.models import AuditEntry, Bitrix24OfflineState, Delivery, Event
from app.settings import Settings
from cli.fake_portal import FakePortal
from cli.fake_portal.events import Application
from dispatch.deliver import drain
from dispatch.runtime import Runtime
from tests.bitrix24.appmode import CONNECTOR, FORM, HANDLER, KEY, app_hub, install, puller
from tests.fake_target import FakeTarget
from tests.http_app import HubClient, running_app
from tests.hub_config import ONEC_PASSWORD, ONEC_USER

DEALS, SAVES = 100, 10
BASIC = "Basic " + base64.b64encode(f"{ONEC_USER}:{ONEC_PASSWORD}".encode()).decode()


@pytest.fixture
async def app_portal() -> AsyncIterator[FakePortal]:
    async with FakePortal(app=Application("local.app.0123456789", "secret-0123456789")) as server:
        yield server


@pytest.fixture
async def hub_rt(
    settings_for: Callable[..., Settings], app_portal: FakePortal, fake_target: FakeTarget
) -> AsyncIterator[tuple[Settings, HubClient, Runtime]]:
    settings = settings_for(app_hub(app_portal, fake_target.url, enrich=True), token_keys=KEY)
    async with running_app(settings) as hub:
        await install(hub, app_portal)
        rt = await Runtime.open(settings)
        try:
            yield settings, hub, rt
        finally:
            await rt.close()


async def count(engine: AsyncEngine, model: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(model))).scalar_one())


async def test_bind_registers_offline_handlers_once(
    hub_rt: tuple[Settings, HubClient, Runtime], app_portal: FakePortal
) -> None:
    settings, _, rt = hub_rt
    [portal] = settings.hub.sources.bitrix24.portals  # type: ignore[union-attr]
    client = rt.portals.get(portal.member_id, portal.domain)
    assert client is not None

    dry = await bind(client, settings.hub, portal, dry_run=True)
    assert app_portal.bus.bindings == []
    first = await bind(client, settings.hub, portal, dry_run=False)
    second = await bind(client, settings.hub, portal, dry_run=False)

    wanted = {("ONCRMDEALADD", True), ("ONCRMDEALUPDATE", True), ("ONOFFLINEEVENT", False)}
    assert (
        {(h.event, h.offline) for h in dry.bind}
        == wanted
        == {(h.event, h.offline) for h in first.bind}
    )
    assert {(b.event, b.offline, b.auth_connector) for b in app_portal.bus.bindings} == {
        ("ONCRMDEALADD", True, CONNECTOR),
        ("ONCRMDEALUPDATE", True, CONNECTOR),
        ("ONOFFLINEEVENT", False, None),
    }
    notify = next(b for b in app_portal.bus.bindings if b.event == "ONOFFLINEEVENT")
    assert (notify.handler, notify.min_timeout) == (HANDLER, 1)
    assert second.bind == [] and second.unbind == [] and len(second.keep) == 3
    assert app_portal.stats.by_method["event.bind"] == 3


async def bound(settings: Settings, rt: Runtime) -> None:
    [portal] = settings.hub.sources.bitrix24.portals  # type: ignore[union-attr]
    client = rt.portals.get(portal.member_id, portal.domain)
    assert client is not None
    await bind(client, settings.hub, portal, dry_run=False)


def change_deals(portal: FakePortal) -> None:
    """A thousand saves over a hundred deals while the hub is not listening."""
    for deal in range(1, DEALS + 1):
        portal.put("deal", {"ID": deal, "TITLE": f"deal {deal} v0"}, by=3)
    for save in range(1, SAVES):
        for deal in range(1, DEALS + 1):
            portal.update("deal", deal, {"TITLE": f"deal {deal} v{save}"}, by=3)


async def test_a_thousand_changes_while_away_reach_the_target_once_each_with_the_latest_state(
    hub_rt: tuple[Settings, HubClient, Runtime],
    app_portal: FakePortal,
    fake_target: FakeTarget,
    engine: AsyncEngine,
) -> None:
    settings, _, rt = hub_rt
    await bound(settings, rt)
    change_deals(app_portal)
    assert len(app_portal.bus.queues[CONNECTOR]) == DEALS  # one entry per changed object

    async with puller(settings, engine, rt) as pull:
        report = await pull.pull()
        again = await pull.pull()
    await drain(rt, "erp", budget=60)

    assert (report.read, report.created, report.duplicates, report.refused) == (DEALS, DEALS, 0, 0)
    assert report.calls == 5  # two pages of 50 (get + clear each), one empty get
    assert (again.read, again.created) == (0, 0)
    assert app_portal.bus.queues[CONNECTOR] == []
    received = [request.json() for request in fake_target.requests]
    assert sorted(r["subject"] for r in received) == sorted(
        f"deal/{d}" for d in range(1, DEALS + 1)
    )
    for event in received:  # the record as it stands after the last save
        deal = event["subject"].split("/")[1]
        assert event["data"]["record"]["TITLE"] == f"deal {deal} v{SAVES - 1}"
    assert await count(engine, Event) == DEALS
    async with engine.connect() as conn:
        statuses = (await conn.execute(select(Delivery.status))).scalars().all()
    assert set(statuses) == {"delivered"}


async def test_a_crash_between_commit_and_clear_reads_the_batch_again_and_creates_nothing_twice(
    hub_rt: tuple[Settings, HubClient, Runtime],
    app_portal: FakePortal,
    engine: AsyncEngine,
) -> None:
    settings, _, rt = hub_rt
    await bound(settings, rt)
    for deal in range(1, 31):
        app_portal.put("deal", {"ID": deal, "TITLE": "x"}, by=3)
    app_portal.fail("event.offline.clear", "ACCESS_DENIED", "the relay dies here", status=403)

    async with puller(settings, engine, rt) as pull:
        with pytest.raises(RestError):
            await pull.pull()  # committed, not cleared: the relay "dies" here
        async with make_sessionmaker(engine)() as session:
            state = await session.get(Bitrix24OfflineState, pull._member_id)
        assert state is not None and state.process_id  # kept for the next pull
        assert await count(engine, Event) == 30
        assert app_portal.bus.offline_get({"auth_connector": CONNECTOR})["events"] == []  # hidden

        report = await pull.pull()

    assert (report.read, report.created, report.duplicates) == (30, 0, 30)
    assert await count(engine, Event) == 30
    assert app_portal.bus.queues[CONNECTOR] == []


async def test_an_access_token_that_expires_mid_pull_is_renewed_once(
    hub_rt: tuple[Settings, HubClient, Runtime],
    app_portal: FakePortal,
    engine: AsyncEngine,
) -> None:
    settings, _, rt = hub_rt
    await bound(settings, rt)
    for deal in range(1, 61):
        app_portal.put("deal", {"ID": deal, "TITLE": "x"}, by=3)
    assert app_portal.app_info is not None
    renewals = app_portal.app_info.renewals
    original = app_portal._call

    expired: list[str] = []

    def expire_after_first_page(method: str, params: Any, user: int) -> Any:
        result = original(method, params, user)
        if method == "event.offline.clear" and not expired:  # the token lapses between two pages
            expired.extend(app_portal.tokens)
            for token in expired:
                app_portal.tokens[token] = (user, 0.0)
        return result

    app_portal._call = expire_after_first_page  # type: ignore[method-assign]
    async with puller(settings, engine, rt) as pull:
        report = await pull.pull()

    assert (report.read, report.created) == (60, 60)
    assert app_portal.app_info.renewals == renewals + 1
    assert app_portal.bus.queues[CONNECTOR] == []


async def test_the_hubs_own_write_raises_no_offline_event_but_a_persons_does(
    hub_rt: tuple[Settings, HubClient, Runtime],
    app_portal: FakePortal,
    engine: AsyncEngine,
) -> None:
    settings, hub, rt = hub_rt
    await bound(settings, rt)
    app_portal.put("deal", {"ID": 7405, "TITLE": "deal"}, by=3)
    app_portal.bus.queues[CONNECTOR].clear()
    order = {
        "type": "Документ.ЗаказКлиента",
        "event": "updated",
        "ref": "b1c89da7-cb6a-11e6-aede-5404a6b4b8ed",
    }
    body = orjson.dumps(
        {**order, "data_version": "AAA=", "data": {"deal_id": 7405, "number": "42"}}
    )
    reply = await hub.post(
        "/webhooks/1c",
        content=body,
        headers={"authorization": BASIC, "content-type": "application/json"},
    )
    assert reply.status_code == 200, reply.text

    await drain(rt, "crm", budget=20)

    assert app_portal.records.get("deal", 7405)["COMMENTS"] == "1C 42"  # type: ignore[index]
    async with engine.connect() as conn:
        assert (
            await conn.execute(select(Delivery.status).where(Delivery.target == "crm"))
        ).scalar_one() == "delivered"
    assert app_portal.bus.queues[CONNECTOR] == []  # the hub's write: no echo
    app_portal.update("deal", 7405, {"TITLE": "changed by a person"}, by=3)
    assert [e.object for e in app_portal.bus.queues[CONNECTOR]] == [("deal", 7405)]


async def test_an_entry_that_cannot_be_taken_is_reported_and_audited(
    hub_rt: tuple[Settings, HubClient, Runtime],
    app_portal: FakePortal,
    engine: AsyncEngine,
) -> None:
    settings, _, rt = hub_rt
    await bound(settings, rt)
    app_portal.put("deal", {"ID": 1, "TITLE": "x"}, by=3)
    app_portal.put("deal", {"ID": 2, "TITLE": "y"}, by=3)
    broken = app_portal.bus.queues[CONNECTOR][0]
    broken.event = ""  # an entry without an event name

    async with puller(settings, engine, rt) as pull:
        report = await pull.pull()

    assert (report.read, report.created, report.refused) == (2, 1, 1)
    assert broken.error and broken in app_portal.bus.queues[CONNECTOR]
    async with engine.connect() as conn:
        [entry] = (await conn.execute(select(AuditEntry))).all()
    assert (
        entry.action == "offline_error"
        and entry.details["entry"]["MESSAGE_ID"] == broken.message_id
    )


async def test_onofflineevent_wakes_the_puller_and_needs_the_installed_token(
    hub_rt: tuple[Settings, HubClient, Runtime], app_portal: FakePortal, urls: tuple[str, str]
) -> None:
    _, hub, _ = hub_rt
    dsn = make_url(urls[0]).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await conn.add_listener(OFFLINE_CHANNEL, lambda *args: heard.put_nowait(args[-1]))
    try:
        form = {
            "event": "ONOFFLINEEVENT",
            "ts": "1466439714",
            **{f"auth[{k}]": v for k, v in app_portal.app_auth().items()},
        }
        reply = await hub.post("/webhooks/bitrix24", data=form, headers=FORM)
        forged = await hub.post(
            "/webhooks/bitrix24", data={**form, "auth[application_token]": "0" * 32}, headers=FORM
        )
        payload = await asyncio.wait_for(heard.get(), 10)
    finally:
        await conn.close()
    assert reply.status_code == 200, reply.text
    assert payload == app_portal.app_info.member_id  # type: ignore[union-attr]
    assert forged.status_code == 401
    assert heard.empty()
