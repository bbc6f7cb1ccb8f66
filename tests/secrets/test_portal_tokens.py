"""Bitrix24 authentication: one portal's token never opens another's door; rotation accepts [new, old]."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Event
from app.settings import Settings, load_hub_config
from tests.http_app import running_app
from tests.hub_config import HUB_CONFIG, ONEC_PASSWORD, ONEC_USER

FORM = {"content-type": "application/x-www-form-urlencoded"}
DEAL_PORTAL = ("d897063e1ce7c5eb9f04b9751eef5915", "jvh9y1ulvt2m6k5or90v9mg8nn32ozas")
CONTACT_PORTAL = ("010b6886ebc205e43ae65000ee00addb", "3c6c9248ec54af6bea1159b43ee0ab32")
DOMAIN_ONLY = ("some-domain.bitrix24.com", "51856fefc120afa4b628cc82d3935cce")


def deal_event(
    member_id: str | None, token: str, *, domain: str | None = None, deal: int = 7405
) -> bytes:
    fields = {"event": "ONCRMDEALUPDATE", "data[FIELDS][ID]": str(deal), "ts": "1766047124"}
    fields["auth[application_token]"] = token
    if member_id is not None:
        fields["auth[member_id]"] = member_id
    if domain is not None:
        fields["auth[domain]"] = domain
    return urlencode(fields).encode()


async def count_events(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(Event))).scalar_one())


@pytest.mark.parametrize(
    ("member_id", "token", "domain"),
    [
        (DEAL_PORTAL[0], CONTACT_PORTAL[1], None),  # another portal's (valid) token
        (CONTACT_PORTAL[0], DEAL_PORTAL[1], None),  # the other way round
        (DEAL_PORTAL[0], DEAL_PORTAL[1][:16], None),  # the first characters only
        (DEAL_PORTAL[0], DEAL_PORTAL[1] + "x", None),  # the token as a prefix
        (DEAL_PORTAL[0], DEAL_PORTAL[1][:-1] + "Z", None),  # the last character differs
        (DEAL_PORTAL[0], DEAL_PORTAL[1].upper(), None),  # case matters
        (DEAL_PORTAL[0], "", None),
        # A portal found by its domain whose configured member_id is not the one sent.
        ("0000000000000000000000000000dead", DEAL_PORTAL[1], "some-domain.bitrix24.ru"),
        # A known member_id with the domain of a domain-only portal and that portal's token.
        (DEAL_PORTAL[0], DOMAIN_ONLY[1], DOMAIN_ONLY[0]),
    ],
)
async def test_a_wrong_token_is_refused_and_stores_nothing(
    hub: Any, engine: AsyncEngine, member_id: str, token: str, domain: str | None
) -> None:
    reply = await hub.post(
        "/webhooks/bitrix24", content=deal_event(member_id, token, domain=domain), headers=FORM
    )

    assert reply.status_code == 401, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert token not in reply.text or not token
    assert await count_events(engine) == 0


async def test_each_portal_is_accepted_with_its_own_token(hub: Any, engine: AsyncEngine) -> None:
    for member_id, token in (DEAL_PORTAL, CONTACT_PORTAL):
        reply = await hub.post(
            "/webhooks/bitrix24", content=deal_event(member_id, token), headers=FORM
        )
        assert reply.status_code == 200, reply.text
    reply = await hub.post(
        "/webhooks/bitrix24",
        content=deal_event(None, DOMAIN_ONLY[1], domain=DOMAIN_ONLY[0]),
        headers=FORM,
    )
    assert reply.status_code == 200, reply.text
    assert await count_events(engine) == 3


def rotating(new: str, old: str) -> dict[str, Any]:
    """The test hub with the deal portal in the middle of a token rotation."""
    config = copy.deepcopy(HUB_CONFIG)
    portal = next(
        p for p in config["sources"]["bitrix24"]["portals"] if p.get("member_id") == DEAL_PORTAL[0]
    )
    del portal["application_token"]
    portal["application_tokens"] = [new, old]
    return config


async def test_rotation_accepts_the_new_and_the_old_token_and_nothing_else(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> None:
    new, old = "n3w-t0ken-after-reinstall-000001", DEAL_PORTAL[1]
    async with running_app(settings_for(rotating(new, old))) as hub:
        first = await hub.post(
            "/webhooks/bitrix24", content=deal_event(DEAL_PORTAL[0], old, deal=1), headers=FORM
        )
        second = await hub.post(
            "/webhooks/bitrix24", content=deal_event(DEAL_PORTAL[0], new, deal=2), headers=FORM
        )
        wrong = await hub.post(
            "/webhooks/bitrix24", content=deal_event(DEAL_PORTAL[0], new[:-1], deal=3), headers=FORM
        )
        foreign = await hub.post(
            "/webhooks/bitrix24", content=deal_event(CONTACT_PORTAL[0], new, deal=4), headers=FORM
        )

    assert (first.status_code, second.status_code, wrong.status_code, foreign.status_code) == (
        200,
        200,
        401,
        401,
    )
    async with engine.connect() as conn:
        subjects = sorted((await conn.execute(select(Event.subject))).scalars())
    assert subjects == ["deal/1", "deal/2"]


def test_a_portal_without_any_token_is_a_configuration_error(
    settings_for: Callable[..., Settings],
) -> None:
    config = copy.deepcopy(HUB_CONFIG)
    config["sources"]["bitrix24"]["portals"] = [{"member_id": "abc", "application_tokens": []}]
    with pytest.raises(ValueError, match="application_token"):
        settings_for(config)


async def test_credentials_never_stored_from_any_source(hub: Any, engine: AsyncEngine) -> None:
    """Headers, Russian secret names and credential-shaped values: none reaches the stored event."""
    basic = "Basic " + base64.b64encode(f"{ONEC_USER}:{ONEC_PASSWORD}".encode()).decode()
    leaked = "Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXZhbHVl"
    body = (
        '{"type": "Документ.ЗаказКлиента", "event": "updated", "ref": "b1c89da7-cb6a-11e6-aede-5404a6b4b8ed",'
        ' "data_version": "AAAAAgAAAAA=", "data": {"number": "7", "Пароль": "пароль-из-1С-42",'
        f' "ТокенДоступа": "tok-1c-4242", "note": "{leaked}", "apikey": "k-99999999"}}}}'
    )
    headers = {
        "authorization": basic,
        "content-type": "application/json",
        "cookie": "session=c00kie-value-1",
        "x-api-key": "x-api-key-value-1",
        "x-auth-token": "x-auth-token-value-1",
        "proxy-authorization": "Basic cHJveHk6cHJveHlwYXNz",
        "webhook-signature": "v1,c2lnbmF0dXJlLXZhbHVl",
    }
    reply = await hub.post("/webhooks/1c", content=body.encode(), headers=headers)
    assert reply.status_code == 200, reply.text

    async with engine.connect() as conn:
        [event] = (await conn.execute(select(Event))).all()
    blob = repr(event.payload) + repr(event.headers) + bytes(event.raw_body).decode()
    for secret in [
        "пароль-из-1С-42",
        "tok-1c-4242",
        "c2VjcmV0LXZhbHVl",
        "k-99999999",
        "c00kie-value-1",
        "x-api-key-value-1",
        "x-auth-token-value-1",
        "cHJveHk6cHJveHlwYXNz",
        "c2lnbmF0dXJlLXZhbHVl",
        ONEC_PASSWORD,
    ]:
        assert secret not in blob, secret
    assert event.payload["data"]["number"] == "7"
    assert event.payload["data"]["note"] == "Bearer [REDACTED]"


def test_the_runbook_rotation_yaml_loads_both_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The snippet of runbooks/rotating-secrets.md, as written there."""
    path = tmp_path / "mmhub.yaml"
    path.write_text(
        "sources:\n  bitrix24:\n    portals:\n"
        "      - member_id: d897063e1ce7c5eb9f04b9751eef5915\n"
        '        application_tokens: ["${B24_APP_TOKEN}", "${B24_APP_TOKEN_OLD}"]   # any of them matches\n'
    )
    monkeypatch.setenv("B24_APP_TOKEN", "new-token-value")
    monkeypatch.setenv("B24_APP_TOKEN_OLD", "current-token-value")
    config = load_hub_config(path)
    assert config.sources.bitrix24 is not None
    assert config.sources.bitrix24.portals[0].tokens() == ["new-token-value", "current-token-value"]
    assert "literal secret" not in caplog.text
    path.write_text(path.read_text().replace('"${B24_APP_TOKEN_OLD}"', "literal-old-token"))
    load_hub_config(path)
    assert "literal secret" in caplog.text and "literal-old-token" not in caplog.text
