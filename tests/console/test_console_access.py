"""Console access: token → session cookie, CSRF, viewers refused, logout, throttling, headers."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.console.session import THROTTLE_MAX
from tests.admin.support import OPERATOR_TOKEN, VIEWER_TOKEN, audit_rows, delivery_rows
from tests.console.conftest import log_in


async def test_pages_need_a_session_and_the_login_sends_back_to_the_page(
    console: httpx.AsyncClient,
) -> None:
    reply = await console.get("/console/deliveries?status=dead&target=erp&since=2h")
    assert reply.status_code == 303
    assert reply.headers["location"].startswith("/console/login?next=")
    assert "status%3Ddead" in reply.headers["location"]
    login = await console.post(
        "/console/login",
        data={
            "token": OPERATOR_TOKEN,
            "next": "/console/deliveries?status=dead&target=erp&since=2h",
        },
    )
    assert login.status_code == 303
    assert login.headers["location"] == "/console/deliveries?status=dead&target=erp&since=2h"
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Max-Age=" in cookie and "Secure" not in cookie  # plain HTTP here
    assert OPERATOR_TOKEN not in cookie
    page = await console.get("/console/deliveries?status=dead&target=erp&since=2h")
    assert page.status_code == 200
    assert "oscar (operator)" in page.text


async def test_the_cookie_is_secure_behind_https(console: httpx.AsyncClient) -> None:
    login = await console.post(
        "/console/login", data={"token": VIEWER_TOKEN}, headers={"x-forwarded-proto": "https"}
    )
    assert login.status_code == 303
    assert "Secure" in login.headers["set-cookie"]


async def test_a_login_never_goes_to_another_site(console: httpx.AsyncClient) -> None:
    login = await console.post(
        "/console/login", data={"token": VIEWER_TOKEN, "next": "//evil.example/x"}
    )
    assert login.headers["location"] == "/console"
    cross = await console.post(
        "/console/login", data={"token": VIEWER_TOKEN}, headers={"origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    assert "set-cookie" not in cross.headers


async def test_every_page_has_a_strict_content_security_policy(console: httpx.AsyncClient) -> None:
    await log_in(console, VIEWER_TOKEN)
    for path in ("/console/login", "/console", "/console/deliveries", "/console/audit"):
        reply = await console.get(path)
        assert reply.status_code == 200, path
        csp = reply.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert "<script>" not in reply.text and " style=" not in reply.text, path


async def test_actions_need_the_csrf_token(
    console: httpx.AsyncClient, fake_target: object, engine: AsyncEngine
) -> None:
    csrf = await log_in(console, OPERATOR_TOKEN)
    for data in ({"reason": "maintenance"}, {"reason": "maintenance", "csrf": "forged"}):
        reply = await console.post("/console/targets/erp/pause", data=data)
        assert reply.status_code == 403
    assert await audit_rows(engine) == []
    reply = await console.post(
        "/console/targets/erp/pause", data={"reason": "maintenance", "csrf": csrf}
    )
    assert reply.status_code == 303
    [entry] = await audit_rows(engine)
    assert (entry.actor, entry.action, entry.target, entry.reason) == (
        "oscar",
        "pause",
        "erp",
        "maintenance",
    )


async def test_viewers_get_no_buttons_and_their_actions_are_refused(
    console: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    csrf = await log_in(console, VIEWER_TOKEN)
    overview = await console.get("/console")
    assert ">Pause<" not in overview.text
    for path in ("/console/targets/erp/pause", "/console/replays"):
        reply = await console.post(path, data={"reason": "x", "csrf": csrf, "status": "dead"})
        assert reply.status_code == 403, path
    assert await audit_rows(engine) == []


async def test_logout_ends_the_session_on_the_server(console: httpx.AsyncClient) -> None:
    csrf = await log_in(console, OPERATOR_TOKEN)
    cookie = console.cookies.get("mmhub_console")
    reply = await console.post("/console/logout", data={"csrf": csrf})
    assert reply.status_code == 303
    console.cookies.set("mmhub_console", cookie or "", domain="hub", path="/console")
    again = await console.get("/console")
    assert again.status_code == 303  # the old cookie no longer opens a session


async def test_failed_logins_are_refused_after_a_while(
    console: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("app.console.session.asyncio.sleep", sleep)
    for _ in range(THROTTLE_MAX):
        reply = await console.post("/console/login", data={"token": "wrong"})
        assert reply.status_code == 401
    assert slept and slept == sorted(slept)  # ever longer waits
    refused = await console.post("/console/login", data={"token": OPERATOR_TOKEN})
    assert refused.status_code == 429
    assert "set-cookie" not in refused.headers


async def test_tokens_never_reach_the_logs(
    console: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await console.post("/console/login", data={"token": "not-" + OPERATOR_TOKEN})
    await log_in(console, OPERATOR_TOKEN)
    assert OPERATOR_TOKEN not in caplog.text


async def test_viewers_see_phones_and_emails_masked(
    console: httpx.AsyncClient, console_settings: object, engine: AsyncEngine
) -> None:
    from tests.console.support import EMAIL, PHONE, contact_with_pii

    reply = await console.post(
        "/webhooks/bitrix24",
        content=contact_with_pii(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    event_id = reply.json()["event_id"]
    [row] = await delivery_rows(engine)
    await log_in(console, VIEWER_TOKEN)
    for path in (f"/console/events/{event_id}", f"/console/deliveries/{row.id}"):
        page = await console.get(path)
        assert page.status_code == 200
        assert "-45-67" not in page.text and "ivan.petrov" not in page.text
        assert "67" in page.text and "@example.ru" in page.text
    console.cookies.clear()
    await log_in(console, OPERATOR_TOKEN)
    page = await console.get(f"/console/events/{event_id}")
    assert PHONE in page.text and EMAIL in page.text


async def test_payload_text_is_escaped_not_run(console: httpx.AsyncClient) -> None:
    from tests.dispatch.harness import deal

    body = deal(77) + b"&data%5BFIELDS%5D%5BTITLE%5D=%3Cscript%3Ealert(1)%3C%2Fscript%3E"
    reply = await console.post(
        "/webhooks/bitrix24",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    await log_in(console, OPERATOR_TOKEN)
    page = await console.get(f"/console/events/{reply.json()['event_id']}")
    assert "<script>alert(1)" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
