"""The console tests' hub: the admin tests' configuration (tokens `vera` viewer, `oscar` operator)
served by uvicorn on a free port of 127.0.0.1, with a dispatcher loop delivering to a fake target.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import uvicorn

from app.main import create_app
from app.settings import Settings
from dispatch.deliver import drain
from dispatch.runtime import Runtime
from tests.admin.support import OPERATOR_TOKEN, VIEWER_TOKEN  # noqa: F401 - re-exported
from tests.fixture_files import fixture_bytes

PHONE = "+7 (999) 123-45-67"
EMAIL = "ivan.petrov@example.ru"


def contact_with_pii(contact_id: int = 134806) -> bytes:
    """The Bitrix24 contact fixture with a phone number and an e-mail address in its fields."""
    extra = urllib.parse.urlencode(
        {
            "data[FIELDS][PHONE][0][VALUE]": PHONE,
            "data[FIELDS][EMAIL][0][VALUE]": EMAIL,
            "data[FIELDS][COMMENTS]": f"call {PHONE} or write to {EMAIL}",
        }
    )
    body = fixture_bytes("bitrix24/app-event-contact-add.form")
    return body.replace(b"=134806&", f"={contact_id}&".encode()) + b"&" + extra.encode()


@dataclass
class LiveHub:
    """The hub's HTTP address and its app (for its settings)."""

    url: str
    settings: Settings


async def _dispatch(rt: Runtime, targets: list[str], stop: asyncio.Event) -> None:
    """What relay and worker do, in-process: drain every target a few times a second."""
    while not stop.is_set():
        for target in targets:
            await drain(rt, target, budget=1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


@contextlib.asynccontextmanager
async def live_hub(settings: Settings) -> AsyncIterator[LiveHub]:
    """uvicorn serving the app on a free port, and a dispatcher loop, until the block ends."""
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    rt = await Runtime.open(settings)
    stop = asyncio.Event()
    dispatching = asyncio.create_task(_dispatch(rt, sorted(settings.hub.targets), stop))
    try:
        yield LiveHub(f"http://127.0.0.1:{port}", settings)
    finally:
        stop.set()
        await dispatching
        await rt.close()
        server.should_exit = True
        await serving


async def post_webhook(hub: LiveHub, body: bytes) -> str:
    """Send a Bitrix24 form webhook to the live hub; returns the event id."""
    async with httpx.AsyncClient(base_url=hub.url) as client:
        reply = await client.post(
            "/webhooks/bitrix24",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert reply.status_code == 200, reply.text
    event_id: str = reply.json()["event_id"]
    return event_id
