"""CPU per ingest request of the real app, driven in-process: no uvicorn, no sockets, no load generator.

    uv run python -m benchmarks.ingest_inproc [--requests 10000] [--concurrency 64 | --rate 600]
                                              [--path /bench/bare] [--minimal]

`make bench-ingest` measures the served hub, whose figures move with everything else on the
machine; this calls `benchmarks.common:bench_app` (or `minimal_app`, `--minimal`) as an ASGI app
from concurrent tasks, on a durable embedded PostgreSQL 16 and Valkey, and prints the CPU time of
this process and its span export child per request (the database's is not counted). Run it with and without
`OTEL_EXPORTER_OTLP_ENDPOINT` or with `OTEL_SDK_DISABLED=true`, alternating, to see what a part of
the request costs (benchmarks/README.md, "Where the ingest CPU goes"). `--rate` starts requests on
a clock instead (open loop, as senders do), e.g. at half the max rate, where the CPU per request is
higher than at full load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import IO, Any

import psutil
import uvloop

from benchmarks.common import (
    FORM,
    INGEST_PATH,
    bench_app,
    body_templates,
    due_times,
    embedded_database,
    minimal_app,
)


def _cpu_seconds(process: psutil.Process) -> float:
    """This process's CPU time and its span export child's (not the embedded servers')."""
    total = sum(process.cpu_times()[:2])
    for child in process.children():
        with contextlib.suppress(psutil.Error):
            if "app.span_export" in " ".join(child.cmdline()):
                total += sum(child.cpu_times()[:2])
    return total


async def _run(args: argparse.Namespace, devnull: IO[str]) -> None:
    app: Any = minimal_app() if args.minimal else bench_app()
    # The hub logs a JSON line per event, as `mmhub api` does: its cost counts, its text is not
    # shown (errors still reach the terminal through Python's own stderr).
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)
    templates = body_templates()
    ids = itertools.count(int(time.time()) * 1000)

    async def one() -> None:
        record = next(ids)
        body = templates[record % len(templates)].render(record, int(time.time()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": args.path,
            "raw_path": args.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", FORM.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        statuses = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"{args.path} answered {statuses}")

    async with app.router.lifespan_context(app):
        if args.rate:
            await _open_loop(one, args.rate, 2.0)  # warm-up
            measured = _open_loop(one, args.rate, args.requests / args.rate)
        else:
            await _closed_loop(one, args.concurrency, 500)  # warm-up
            measured = _closed_loop(one, args.concurrency, args.requests)
        me = psutil.Process()
        cpu, wall = _cpu_seconds(me), time.perf_counter()
        latencies = await measured
        cpu, wall = _cpu_seconds(me) - cpu, time.perf_counter() - wall
    latencies.sort()
    count = len(latencies)
    print(
        f"{args.path}: {count / wall:,.0f} requests/s, "
        f"CPU {cpu / count * 1e6:,.0f} us per request, "
        f"latency p50 {latencies[count // 2] * 1e3:.1f} p99 {latencies[int(count * 0.99)] * 1e3:.1f} ms"
    )


async def _closed_loop(
    one: Callable[[], Awaitable[None]], concurrency: int, count: int
) -> list[float]:
    """`count` requests, `concurrency` in flight at any time; each one's latency."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def guarded() -> None:
        async with gate:
            started = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(guarded() for _ in range(count)))
    return latencies


async def _open_loop(
    one: Callable[[], Awaitable[None]], rate: float, seconds: float
) -> list[float]:
    """Requests started at `rate` per second for `seconds`, whatever the replies do (as senders
    do); each one's latency from the time it was due."""
    latencies: list[float] = []

    async def timed(due: float) -> None:
        await one()
        latencies.append(time.perf_counter() - due)

    start = time.perf_counter() + 0.01
    tasks = [
        asyncio.create_task(timed(due)) async for due in due_times(start, rate, int(rate * seconds))
    ]
    await asyncio.gather(*tasks)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--rate",
        type=float,
        help="requests started at this rate (open loop) instead of --concurrency",
    )
    parser.add_argument("--path", default=INGEST_PATH)
    parser.add_argument("--minimal", action="store_true", help="the minimal FastAPI app")
    args = parser.parse_args()
    with open(os.devnull, "w") as devnull, embedded_database() as (database_url, redis_url):
        os.environ["MMHUB_DATABASE_URL"], os.environ["MMHUB_REDIS_URL"] = database_url, redis_url
        uvloop.run(_run(args, devnull))


if __name__ == "__main__":
    main()
