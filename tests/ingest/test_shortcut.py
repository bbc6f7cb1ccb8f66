"""The Bitrix24 webhook's shortcut past the routing layers (app.shortcut) answers exactly as the
whole stack does, and is taken."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.main import create_app
from app.settings import Settings
from tests.fixture_files import fixture_bytes
from tests.hub_config import HUB_CONFIG
from tests.ingest.test_errors import FORM, count

DEAL = fixture_bytes("bitrix24/webhook-deal-add.form")
PATH = "/webhooks/bitrix24"
PREFIX = "/behind-proxy"  # a root_path: the shortcut leaves such requests to the router


@asynccontextmanager
async def two_ways(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """One app; a client whose requests take the shortcut and (`root_path`) one whose don't."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield _client(app), app


def _client(app: ASGIApp, root_path: str = "") -> httpx.AsyncClient:
    # An unexpected error is answered by the app's handler, then re-raised for the server's log.
    transport = httpx.ASGITransport(app=app, root_path=root_path, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://hub")


def _requests_total(status: str) -> float:
    labels = {"method": "POST", "route": PATH, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def _refuse_routing(app: Any) -> None:
    async def routed(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError(f"{scope['method']} {scope['path']} went through the router")

    app.router.middleware_stack = routed


BROKEN = DEAL.replace(b"event=ONCRMDEALADD&", b"")


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (DEAL.replace(b"jvh9y1ulvt2m6k5or90v9mg8nn32ozas", b"w" * 32), FORM, 401),
        (DEAL, {"content-type": "text/xml"}, 415),
        (b"{not json", {"content-type": "application/json"}, 400),
        (BROKEN, FORM, 422),
        (b"x" * (2 * 1024 * 1024 + 1), FORM, 413),
    ],
    ids=["401", "415", "400", "422", "413"],
)
async def test_refusals_are_the_whole_stacks(
    settings_for: Callable[..., Settings],
    engine: AsyncEngine,
    body: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    async with two_ways(settings_for(HUB_CONFIG)) as (short, app):
        whole = _client(app, PREFIX)
        long_reply = await whole.post(PREFIX + PATH, content=body, headers=headers)
        _refuse_routing(app)
        before = _requests_total(str(status))
        reply = await short.post(PATH, content=body, headers=headers)
    assert reply.status_code == long_reply.status_code == status
    assert reply.headers["content-type"] == long_reply.headers["content-type"]
    assert _drop_request_id(reply.json()) == _drop_request_id(long_reply.json())
    assert reply.json()["request_id"] == reply.headers["x-request-id"]
    assert _requests_total(str(status)) == before + 1
    assert await count(engine) == (0, 0)


async def test_an_accepted_event_is_the_same_either_way(
    settings_for: Callable[..., Settings], engine: AsyncEngine
) -> None:
    async with two_ways(settings_for(HUB_CONFIG)) as (short, app):
        whole = _client(app, PREFIX)
        first = await whole.post(PREFIX + PATH, content=DEAL, headers=FORM)
        _refuse_routing(app)
        again = await short.post(PATH, content=DEAL, headers=FORM)
    assert first.status_code == again.status_code == 200
    assert again.json()["event_id"] == first.json()["event_id"]
    assert again.json()["duplicate"] is True
    assert await count(engine) == (1, 2)


async def test_an_unexpected_error_gets_the_apps_500(
    settings_for: Callable[..., Settings], engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("app.sources.bitrix24.router.parse_b24", broken)
    async with two_ways(settings_for(HUB_CONFIG)) as (short, app):
        _refuse_routing(app)
        before = _requests_total("500")
        reply = await short.post(PATH, content=DEAL, headers=FORM)
    assert reply.status_code == 500
    assert reply.headers["content-type"] == "application/problem+json"
    assert "a bug" not in reply.text
    assert _requests_total("500") == before + 1
    assert await count(engine) == (0, 0)


async def test_other_methods_and_paths_take_the_whole_stack(
    settings_for: Callable[..., Settings],
) -> None:
    async with two_ways(settings_for(HUB_CONFIG)) as (short, app):
        assert (await short.get(PATH)).status_code == 405
        assert (await short.get("/health")).status_code == 200
        _refuse_routing(app)  # from here the router answers 500: the spy raised
        assert (await short.get("/health")).status_code == 500
        assert (await short.get(PATH)).status_code == 500


async def test_middleware_added_later_wraps_the_shortcut_too(
    settings_for: Callable[..., Settings],
) -> None:
    class Stamp:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            async def stamped(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (b"x-stamp", b"1")]
                await send(message)

            await self.app(scope, receive, stamped)

    app = create_app(settings_for(HUB_CONFIG))
    app.add_middleware(Stamp)
    async with app.router.lifespan_context(app):
        _refuse_routing(app)
        reply = await _client(app).post(PATH, content=BROKEN, headers=FORM)
    assert reply.headers.get("x-stamp") == "1"
    assert reply.status_code == 422


def _drop_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "request_id"}
