"""A fast local sink for the dispatch benchmark: aiohttp.web on 127.0.0.1, in its own process.

    python -m benchmarks.sink --port 8765

Every request to any path but `/_sink/*` is answered `200 {"ok":true}` and recorded: the time it was
received (`time.time()`, taken when the handler starts, before the body is read), the CloudEvent `id`
from the body and the `Idempotency-Key` header. The recording is three list appends, so the hub and
the plain client are measured against the same cheap server.

Control endpoints (never recorded):

* `GET  /_sink/stats`  -> `{"count": n, "first": t, "last": t}` (receive times of the first and the
  last recorded request, `null` when none);
* `POST /_sink/dump`   -> the records as JSON: `{"received": [...], "id": [...], "key": [...]}`;
* `POST /_sink/reset`  -> forget every record.

With `--dump FILE` the same JSON is also written to FILE when the sink stops (SIGTERM or Ctrl-C).

`Sink` starts and stops the process from the benchmark and wraps the control endpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONTROL = "/_sink"
OK = b'{"ok":true}'
_ID_FIELD = b'"id":"'


# --- the server (runs in the sink process) -------------------------------------------------------


def _event_id(body: bytes) -> str | None:
    """The CloudEvent `id`; a substring search first (the hub writes it near the start)."""
    start = body.find(_ID_FIELD)
    if start >= 0:
        start += len(_ID_FIELD)
        end = body.find(b'"', start)
        if end > start:
            return body[start:end].decode("ascii", "replace")
    try:
        import orjson

        value = orjson.loads(body)
    except ValueError:
        return None
    return str(value.get("id")) if isinstance(value, dict) and "id" in value else None


def make_app() -> Any:
    from aiohttp import web

    received: list[float] = []
    ids: list[str | None] = []
    keys: list[str | None] = []
    clock = time.time

    async def record(request: web.Request) -> web.Response:
        now = clock()
        body = await request.read()
        received.append(now)
        ids.append(_event_id(body))
        keys.append(request.headers.get("Idempotency-Key"))
        return web.Response(body=OK, content_type="application/json")

    async def stats(_request: web.Request) -> web.Response:
        payload = {
            "count": len(received),
            "first": received[0] if received else None,
            "last": received[-1] if received else None,
        }
        return web.json_response(payload)

    async def dump(_request: web.Request) -> web.Response:
        return web.json_response(app["records"])

    async def reset(_request: web.Request) -> web.Response:
        received.clear()
        ids.clear()
        keys.clear()
        return web.json_response({"count": 0})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app["records"] = {"received": received, "id": ids, "key": keys}
    app.router.add_get(f"{CONTROL}/stats", stats)
    app.router.add_post(f"{CONTROL}/dump", dump)
    app.router.add_post(f"{CONTROL}/reset", reset)
    app.router.add_route("*", "/{tail:.*}", record)
    return app


def serve(host: str, port: int, dump: Path | None = None) -> None:
    import asyncio

    from aiohttp import web

    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # SIGTERM stops the server the way Ctrl-C does (aiohttp turns both into GracefulExit).
    app = make_app()
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        print=None,
        backlog=1024,
        handle_signals=True,
        shutdown_timeout=2,
    )
    if dump is not None:
        dump.write_text(json.dumps(app["records"]), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dump", type=Path, help="write the records here when stopping")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.dump)


# --- the client side (runs in the benchmark) ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """The sink process: `start()`, `url`, `stats()`, `records()`, `reset()`, `stop()`."""

    def __init__(self, port: int | None = None, log: Path | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Where the target posts."""
        return f"{self.base_url}/events"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> Sink:
        cmd = [sys.executable, "-m", "benchmarks.sink", "--port", str(self.port)]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the benchmark, which stops us in order
            )
        finally:
            if self.log:
                out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the sink exited with {self.process.returncode}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                self.stats()
                return self
            time.sleep(0.05)
        raise RuntimeError(f"the sink did not answer within {timeout:.0f}s")

    def _call(self, method: str, path: str, timeout: float = 30.0) -> Any:
        url = f"{self.base_url}{CONTROL}{path}"
        request = urllib.request.Request(url, method=method)  # noqa: S310 - our loopback sink
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 - loopback
            return json.loads(reply.read())

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/stats", timeout=2))

    def count(self) -> int:
        return int(self.stats()["count"])

    def records(self) -> dict[str, list[Any]]:
        return dict(self._call("POST", "/dump", timeout=60))

    def reset(self) -> None:
        self._call("POST", "/reset")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


if __name__ == "__main__":
    main()
