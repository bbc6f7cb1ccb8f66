"""A real HTTP server on 127.0.0.1 standing in for a target system (1C, Walking Warehouse, ...).

It records every request it receives and answers from a script the test sets: a queue of replies,
then a default reply. Use it through the `fake_target` fixture or `async with FakeTarget() as fake:`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy


@dataclass(frozen=True)
class Received:
    """One request as the fake target saw it."""

    method: str
    path: str  # with the query string
    headers: CIMultiDictProxy[str]
    body: bytes
    received_at: datetime

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """A scripted answer; `body` may be bytes, text, or anything JSON (sent as application/json)."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering

    def response(self) -> web.Response:
        headers = CIMultiDict(self.headers)
        if isinstance(self.body, bytes):
            raw = self.body
        elif isinstance(self.body, str):
            raw = self.body.encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            raw = orjson.dumps(self.body)
            headers.setdefault("Content-Type", "application/json")
        return web.Response(status=self.status, body=raw, headers=headers)


class FakeTarget:
    """The server: `url` to post to, `requests` received, `reply(...)` to script answers."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.default = Reply()
        self._script: list[Reply] = []
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(
        self,
        status: int = 200,
        body: Any = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Queue the answer to the next unanswered request (the default body when `body` is None)."""
        self._script.append(
            Reply(status, {"ok": True} if body is None else body, headers or {}, delay)
        )

    def set_default(self, status: int = 200, body: Any = None, **kwargs: Any) -> None:
        """The answer once the queue is empty."""
        self.default = Reply(status, {"ok": True} if body is None else body, **kwargs)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown: a test that timed out leaves a handler waiting; it must not hold teardown.
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._closing.set()  # wake handlers still sleeping on a delay
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTarget:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Received(request.method, request.path_qs, request.headers, body, datetime.now(UTC))
        )
        answer = self._script.pop(0) if self._script else self.default
        if answer.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), answer.delay)
        return answer.response()
