"""The hub as a Bitrix24 local application: install, events with the installed token, renewal, uninstall, keys."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bitrix24.cipher import CipherError, TokenCipher
from app.bitrix24.installs import access, rotate_keys
from app.db import make_sessionmaker
from app.models import Bitrix24Install, Event
from app.settings import ConfigError, Settings, load_settings
from tests.bitrix24.fake_oauth import CLIENT_ID, CLIENT_SECRET, FakeOAuth, Grant
from tests.http_app import HubClient, running_app
from tests.hub_config import HUB_CONFIG

FORM = {"content-type": "application/x-www-form-urlencoded"}
MEMBER, DOMAIN = "a223c6b3710f85df22e9377d6c4f7553", "app-portal.bitrix24.com"
APP_TOKEN = "51856fefc120afa4b628cc82d3935cce"  # the install event's, as in Bitrix24's docs example
KEY = Fernet.generate_key().decode()


def app_hub(oauth_url: str) -> dict[str, Any]:
    config = copy.deepcopy(HUB_CONFIG)
    config["sources"]["bitrix24"]["portals"] = [
        {
            "member_id": MEMBER,
            "domain": DOMAIN,
            "app": {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "oauth_url": oauth_url,
                "allow_private": True,
            },
        }
    ]
    return config


def install_event(grant: Grant, *, member_id: str = MEMBER, app_token: str = APP_TOKEN) -> bytes:
    """ONAPPINSTALL as api-reference/common/events/on-app-install.md shows it, form-encoded."""
    return urlencode(
        {
            "event": "ONAPPINSTALL",
            "data[VERSION]": "1",
            "data[ACTIVE]": "Y",
            "data[INSTALLED]": "Y",
            "data[LANGUAGE_ID]": "ru",
            "ts": "1696527000",
            "auth[domain]": DOMAIN,
            "auth[scope]": "crm,task",
            "auth[access_token]": grant.access_token,
            "auth[refresh_token]": grant.refresh_token,
            "auth[expires_in]": "3600",
            "auth[server_endpoint]": "https://oauth.bitrix.info/rest/",
            "auth[status]": "L",
            "auth[client_endpoint]": f"https://{DOMAIN}/rest/",
            "auth[member_id]": member_id,
            "auth[application_token]": app_token,
        }
    ).encode()


def uninstall_event(app_token: str) -> bytes:
    return urlencode(
        {
            "event": "ONAPPUNINSTALL",
            "data[LANGUAGE_ID]": "ru",
            "data[CLEAN]": "0",
            "ts": "1696527100",
            "auth[domain]": DOMAIN,
            "auth[member_id]": MEMBER,
            "auth[application_token]": app_token,
        }
    ).encode()


def deal_event(token: str, deal: int = 1) -> bytes:
    return urlencode(
        {
            "event": "ONCRMDEALUPDATE",
            "data[FIELDS][ID]": str(deal),
            "ts": str(1766047124 + deal),
            "auth[domain]": DOMAIN,
            "auth[member_id]": MEMBER,
            "auth[application_token]": token,
        }
    ).encode()


@pytest.fixture
async def oauth() -> AsyncIterator[FakeOAuth]:
    async with FakeOAuth() as server:
        yield server


@pytest.fixture
def app_settings(settings_for: Callable[..., Settings], oauth: FakeOAuth) -> Settings:
    return settings_for(app_hub(oauth.url), token_keys=KEY)


async def installs(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(Bitrix24Install))).all())


async def test_install_is_confirmed_by_the_authorization_server_and_stored_encrypted(
    app_settings: Settings, engine: AsyncEngine, oauth: FakeOAuth, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    grant = oauth.issue(MEMBER, DOMAIN)
    async with running_app(app_settings) as hub:
        reply = await hub.post("/webhooks/bitrix24", content=install_event(grant), headers=FORM)

    assert reply.status_code == 200, reply.text
    assert reply.json() == {"status": "installed", "member_id": MEMBER}
    assert oauth.renewals == 1
    [row] = await installs(engine)
    live = oauth.current(MEMBER)  # the renewed pair, not the one the event carried
    stored = b"".join(
        bytes(v) for v in (row.application_token, row.access_token, row.refresh_token)
    )
    for secret in (APP_TOKEN, live.access_token, live.refresh_token, grant.access_token):
        assert secret.encode() not in stored
        assert secret not in caplog.text
    cipher = TokenCipher(KEY)
    assert cipher.decrypt(row.access_token) == live.access_token
    assert cipher.decrypt(row.refresh_token) == live.refresh_token
    assert cipher.decrypt(row.application_token) == APP_TOKEN
    assert (row.client_endpoint, row.revoked_at) == (f"https://{DOMAIN}/rest/", None)
    async with engine.connect() as conn:  # an install is not an event to route
        assert (await conn.execute(select(func.count()).select_from(Event))).scalar_one() == 0


@pytest.mark.parametrize("case", ["unknown portal", "forged tokens", "another portal's tokens"])
async def test_an_install_that_cannot_be_confirmed_is_refused(
    app_settings: Settings, engine: AsyncEngine, oauth: FakeOAuth, case: str
) -> None:
    if case == "unknown portal":
        body = install_event(
            oauth.issue("0000000000000000000000000000beef"),
            member_id="0000000000000000000000000000beef",
        )
    elif case == "forged tokens":
        body = install_event(Grant(MEMBER, DOMAIN))  # never issued by the authorization server
    else:
        body = install_event(
            oauth.issue("ffff0000000000000000000000000000")
        )  # valid, for another portal
    async with running_app(app_settings) as hub:
        reply = await hub.post("/webhooks/bitrix24", content=body, headers=FORM)

    assert reply.status_code == 401, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert await installs(engine) == []


async def test_an_unreachable_authorization_server_gets_503_and_stores_nothing(
    app_settings: Settings, engine: AsyncEngine, oauth: FakeOAuth
) -> None:
    oauth.down = True
    async with running_app(app_settings) as hub:
        reply = await hub.post(
            "/webhooks/bitrix24", content=install_event(oauth.issue(MEMBER)), headers=FORM
        )
    assert reply.status_code == 503 and reply.headers["retry-after"] == "30"
    assert await installs(engine) == []


async def install(hub: HubClient, oauth: FakeOAuth) -> None:
    reply = await hub.post(
        "/webhooks/bitrix24", content=install_event(oauth.issue(MEMBER, DOMAIN)), headers=FORM
    )
    assert reply.status_code == 200, reply.text


async def test_events_are_accepted_with_the_installed_token_until_uninstall(
    app_settings: Settings, engine: AsyncEngine, oauth: FakeOAuth
) -> None:
    async with running_app(app_settings) as hub:
        before = await hub.post(
            "/webhooks/bitrix24", content=deal_event(APP_TOKEN, 1), headers=FORM
        )
        await install(hub, oauth)
        accepted = await hub.post(
            "/webhooks/bitrix24", content=deal_event(APP_TOKEN, 2), headers=FORM
        )
        wrong = await hub.post(
            "/webhooks/bitrix24", content=deal_event(APP_TOKEN[:-1] + "0", 3), headers=FORM
        )
        bad_uninstall = await hub.post(
            "/webhooks/bitrix24", content=uninstall_event("nope" * 8), headers=FORM
        )
        still = await hub.post("/webhooks/bitrix24", content=deal_event(APP_TOKEN, 4), headers=FORM)
        uninstall = await hub.post(
            "/webhooks/bitrix24", content=uninstall_event(APP_TOKEN), headers=FORM
        )
        after = await hub.post("/webhooks/bitrix24", content=deal_event(APP_TOKEN, 5), headers=FORM)

    codes = [
        r.status_code for r in (before, accepted, wrong, bad_uninstall, still, uninstall, after)
    ]
    assert codes == [401, 200, 401, 401, 200, 200, 401]
    assert uninstall.json() == {"status": "uninstalled", "member_id": MEMBER}
    async with engine.connect() as conn:
        subjects = sorted((await conn.execute(select(Event.subject))).scalars())
    assert subjects == ["deal/2", "deal/4"]
    [row] = await installs(engine)
    assert row.revoked_at is not None
    assert (row.access_token, row.refresh_token, row.application_token) == (None, None, None)


async def test_a_second_api_process_accepts_the_new_install_at_once(
    app_settings: Settings, oauth: FakeOAuth
) -> None:
    """Process B cached "no install" a moment before process A took it: B reads again before refusing."""
    async with running_app(app_settings) as a, running_app(app_settings) as b:
        assert (
            await b.post("/webhooks/bitrix24", content=deal_event(APP_TOKEN, 1), headers=FORM)
        ).status_code == 401
        await install(a, oauth)
        reply = await b.post("/webhooks/bitrix24", content=deal_event(APP_TOKEN, 2), headers=FORM)
    assert reply.status_code == 200, reply.text


async def expire(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(Bitrix24Install).values(expires_at=datetime.now(UTC) + timedelta(seconds=30))
        )


async def test_an_expiring_token_is_renewed_once_across_concurrent_callers(
    app_settings: Settings, engine: AsyncEngine, oauth: FakeOAuth
) -> None:
    async with running_app(app_settings) as hub:
        await install(hub, oauth)
    [portal] = app_settings.hub.sources.bitrix24.portals  # type: ignore[union-attr]
    cipher, sessions = TokenCipher(KEY), make_sessionmaker(engine)
    fresh = await access(sessions, cipher, portal)
    assert oauth.renewals == 1  # still valid: no renewal

    await expire(engine)
    results = await asyncio.gather(*(access(sessions, cipher, portal) for _ in range(5)))

    assert oauth.renewals == 2
    assert (
        {r.access_token for r in results}
        == {oauth.current(MEMBER).access_token}
        != {fresh.access_token}
    )
    # A token a REST call rejected as expired is renewed even if the clock says it is fresh, once.
    rejected = results[0].access_token
    again = await asyncio.gather(
        *(access(sessions, cipher, portal, rejected=rejected) for _ in range(3))
    )
    assert oauth.renewals == 3 and len({r.access_token for r in again}) == 1


async def test_rotating_the_key_reencrypts_every_token(
    app_settings: Settings, engine: AsyncEngine, oauth: FakeOAuth
) -> None:
    async with running_app(app_settings) as hub:
        await install(hub, oauth)
    new = Fernet.generate_key().decode()
    sessions = make_sessionmaker(engine)
    async with sessions.begin() as session:
        assert await rotate_keys(session, TokenCipher(f"{new},{KEY}")) == 1
    [row] = await installs(engine)
    only_new = TokenCipher(new)
    assert only_new.decrypt(row.application_token) == APP_TOKEN
    assert only_new.decrypt(row.access_token) == oauth.current(MEMBER).access_token
    with pytest.raises(CipherError):
        TokenCipher(KEY).decrypt(row.access_token)


def test_an_application_portal_needs_token_keys(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mmhub.yaml"
    path.write_text(
        "sources:\n  bitrix24:\n    portals:\n      - member_id: abc\n"
        "        app: {client_id: x, client_secret: '${B24_CLIENT_SECRET}'}\n"
    )
    monkeypatch.setenv("MMHUB_CONFIG", str(path))
    monkeypatch.setenv("B24_CLIENT_SECRET", "s")
    monkeypatch.delenv("MMHUB_TOKEN_KEYS", raising=False)
    with pytest.raises(ConfigError, match="MMHUB_TOKEN_KEYS"):
        load_settings()
    monkeypatch.setenv("MMHUB_TOKEN_KEYS", "not-a-key")
    with pytest.raises(ConfigError, match="Fernet"):
        load_settings()
    monkeypatch.setenv("MMHUB_TOKEN_KEYS", KEY)
    assert load_settings().token_cipher() is not None
