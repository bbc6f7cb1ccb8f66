"""`make bench-ingest`: durable ingest against a bare route, same server, same run.

    uv run python -m benchmarks.ingest [--duration 10] [--connections 64] [--json]

One run starts a durable (fsync on) embedded PostgreSQL 16 and Valkey in a throwaway folder, migrates
it, and serves `benchmarks.common:bench_app` (the real app with the fixture portals, plus
`POST /bench/bare`) under uvicorn in a separate process: one worker, uvloop, httptools, log level
warning, no access log. Seven phases, each after a short warm-up:

1. the minimal FastAPI app (`benchmarks.common:minimal_app`, same uvicorn settings) at the maximum
   rate (closed loop: `--connections` keep-alive connections), then
2. at a fixed arrival rate of half of that (open loop);
3. the hub's bare route at the maximum rate;
4. Bitrix24 ingest at the maximum rate (same load generator, same connections);
5. ingest at a fixed arrival rate of half the rate measured in (4) (open loop);
6. the minimal app again at the rate of (5): the platform's CPU per request at that rate;
7. the plainest durable receiver (`benchmarks.common:durable_app`: parse, one jsonb row, group
   commit; no hub) at the maximum rate, for information: what durability alone costs here.

Every request posts one of the Bitrix24 fixture bodies with its record id and `ts` replaced, so each
is a new event with a valid token. After each ingest phase the rows in `events` (in phase 7, its own
table's) must equal the 200 replies counted, and non-200 replies and socket errors are counted and reported.

Load generators: the max-rate phases (1, 3, 4, 7) use `wrk` (Debian package; installed with apt-get
when missing and running as root) with a generated Lua script; `--client python` or a missing wrk
uses the built-in asyncio client instead. The fixed-rate phases (2, 5, 6) always use the built-in
open-loop client: wrk has no fixed-rate mode
(wrk2 is not in Debian), and a per-connection delay would hide queueing (coordinated omission). Its
latency is measured from each request's *scheduled* send time, so waiting for a free connection or a
late client counts against the server, never in its favour.

Exit status: 2 when the counts do not reconcile (stored events differ from 200 replies, or a request
failed); with `--check`, 1 when a target is missed; else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import psutil

from app.durations import format_duration
from benchmarks.common import (
    BARE_PATH,
    DURABLE_PATH,
    FORM,
    INGEST_PATH,
    ROOT,
    ApiServer,
    BodyTemplate,
    body_templates,
    count_durable,
    count_events,
    due_times,
    embedded_database,
    expected_deliveries,
    query,
)
from benchmarks.sink import Sink

TARGET_RATIO = 0.4  # durable ingest / the minimal FastAPI app
TARGET_P99_MS = 25.0
TARGET_CPU_RATIO = 1.2  # API CPU per request at half the max rate / at the max rate
HALF = 0.5
NOISE_CORES = 0.15  # CPU used by other processes beyond which a run is flagged as noisy
# Each phase (warm-ups included) draws record ids from its own range: no two requests collide.
SEQ_STRIDE = 1_000_000_000
THREAD_STRIDE = 100_000_000


# --- results --------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    path: str
    tool: str
    mode: str  # "closed" (as fast as replies come back) or "open" (fixed arrival rate)
    connections: int
    duration_s: float
    target_rate: float | None = None
    ok: int = 0  # 200 replies
    non_200: dict[str, int] = field(default_factory=dict)  # status -> count
    errors: dict[str, int] = field(default_factory=dict)  # socket errors and timeouts
    rate: float = 0.0  # 200 replies per second of the phase
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    max_ms: float = math.nan
    stored: int | None = None  # new rows in events during the phase
    send_lag_p99_ms: float | None = None  # open loop: how late the client queued a request
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core, per process group

    @property
    def api_us_per_request(self) -> float:
        """CPU time of the API process per 200 reply: robust to other load on the machine."""
        return self.cpu.get("api", 0.0) * self.duration_s / self.ok * 1e6 if self.ok else math.nan

    @property
    def failed(self) -> int:
        return sum(self.non_200.values()) + sum(self.errors.values())

    @property
    def reconciled(self) -> bool:
        return self.failed == 0 and (self.stored is None or self.stored == self.ok)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


# --- CPU accounting: where the two cores went during a phase ---------------------------------------


class CpuMeter:
    """CPU seconds of the API server (with its children: the span export process), PostgreSQL and
    the load generator over one phase."""

    def __init__(self, api_pid: int, pg_pid: int) -> None:
        self._api = psutil.Process(api_pid)
        self._pg = psutil.Process(pg_pid)
        self._start: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        def cpu(proc: psutil.Process) -> float:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                return 0.0
            return float(times.user + times.system)

        pg = cpu(self._pg)
        for child in self._pg.children():
            pg += cpu(child)
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has been waited for
        machine = psutil.cpu_times()
        api = cpu(self._api)
        with contextlib.suppress(psutil.Error):
            for child in self._api.children(recursive=True):  # the span export process
                api += cpu(child)
        sample = {
            "api": api,
            "postgres": pg,
            "load": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime,
            "busy": machine.user + machine.nice + machine.system + machine.irq + machine.softirq,
        }
        sample["busy"] += getattr(machine, "steal", 0.0)
        return sample

    def start(self) -> None:
        self._start = self._sample()

    def stop(self, duration: float) -> dict[str, float]:
        """Cores used on average over the phase's `duration` (its drain adds little work)."""
        end, elapsed = self._sample(), duration
        used = {k: (end[k] - self._start[k]) / elapsed for k in end}
        # Whatever else ran on the machine meanwhile (other engineers' tests, ...): noise.
        used["other"] = max(0.0, used.pop("busy") - used["api"] - used["postgres"] - used["load"])
        return {k: round(v, 2) for k, v in used.items()}


# --- request bodies ----------------------------------------------------------------------------------


class RequestMaker:
    """Raw HTTP/1.1 requests cycling through the fixture bodies, each with a new id and ts."""

    def __init__(self, templates: list[BodyTemplate], port: int, path: str, seq_base: int):
        self._templates = templates
        self._seq_base = seq_base
        self._ts_base = int(time.time())
        self._counter = 0
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: {FORM}\r\nContent-Length: "
        ).encode()

    def __call__(self) -> bytes:
        self._counter += 1
        n = self._counter
        body = self._templates[n % len(self._templates)].render(
            self._seq_base + n, self._ts_base + n // 100
        )
        return self._head + b"%d\r\n\r\n" % len(body) + body


# --- the built-in client: asyncio + httptools, one request in flight per connection -----------------

# uvloop's loop.time() is libuv's cached loop time in whole milliseconds: too coarse for latencies.
clock = time.perf_counter


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        import httptools

        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, float]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except Exception as exc:
            self._fail(exc)
            self.close()

    def on_message_complete(self) -> None:
        # The time is taken as the reply's last byte is parsed, not when a coroutine resumes.
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._parser.get_status_code(), clock()))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    async def send(self, raw: bytes) -> tuple[int, float]:
        """Send one request; its status and the time its reply was complete."""
        if self._transport is None:
            raise ConnectionResetError("not connected")
        self._waiter = self._loop.create_future()
        self._transport.write(raw)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _connect(port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: _Connection(loop), "127.0.0.1", port)
    return protocol


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    warm_ok: int = 0  # 200 replies to warm-up requests, left out of the figures above


async def _exchange(
    conn: _Connection, raw: bytes, port: int, tally: _Tally, since: float
) -> _Connection:
    """Send one request; count its status, and its latency from `since` when it is a 200, or count
    its error and reconnect."""
    try:
        async with asyncio.timeout(10):
            status, done = await conn.send(raw)
    except Exception as exc:
        tally.errors[type(exc).__name__] += 1
        conn.close()
        return await _connect(port)
    tally.statuses[status] += 1
    if status == 200:
        tally.latencies.append(done - since)
    return conn


async def closed_loop(
    port: int, make: Callable[[], bytes], duration: float, connections: int
) -> _Tally:
    """`connections` clients, each sending its next request as soon as the reply is in."""
    tally = _Tally()
    conns = [await _connect(port) for _ in range(connections)]
    end = clock() + duration

    async def client(conn: _Connection) -> None:
        while clock() < end:
            raw = make()
            conn = await _exchange(conn, raw, port, tally, since=clock())
        conn.close()

    await asyncio.gather(*(client(c) for c in conns))
    return tally


async def open_loop(
    port: int,
    make: Callable[[], bytes],
    rate: float,
    duration: float,
    connections: int,
    *,
    warmup: float = 0.0,
    on_measure: Callable[[], object] | None = None,
) -> _Tally:
    """Requests due at a fixed rate, whatever the replies do; latency from the due time.

    A request waits in the client's queue while all connections are busy: that wait is part of its
    latency, as it would be for a sender whose events arrive at this rate. The first `warmup`
    seconds run on the same connections and event loop and are left out of the tally: a fresh
    client's connections and cold code made most of a phase's replies over 25 ms arrive in its first
    half second. `on_measure` runs (in a thread) when the first measured request is due.
    """
    tally, warm = _Tally(), _Tally()
    conns = [await _connect(port) for _ in range(connections)]
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    start = clock() + 0.01
    measure_from = start + warmup

    async def client(conn: _Connection) -> None:
        while (due := await queue.get()) is not None:
            counted = tally if due >= measure_from else warm
            conn = await _exchange(conn, make(), port, counted, since=due)
        conn.close()

    tasks = [asyncio.create_task(client(c)) for c in conns]
    measuring = None
    async for due in due_times(start, rate, int(rate * (warmup + duration))):
        if due >= measure_from and measuring is None and on_measure is not None:
            measuring = asyncio.get_running_loop().run_in_executor(None, on_measure)
        queue.put_nowait(due)
        # The client's own lateness, not the server's.
        (tally if due >= measure_from else warm).lags.append(clock() - due)
    for _ in tasks:
        queue.put_nowait(None)
    await asyncio.gather(*tasks)
    if measuring is not None:
        await measuring
    tally.warm_ok = warm.statuses.pop(200, 0)
    tally.statuses.update(warm.statuses)  # a failure in the warm-up is still reported
    tally.errors.update(warm.errors)
    return tally


def run_python_client(coro_factory: Callable[[], Any]) -> _Tally:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        tally: _Tally = runner.run(coro_factory())
    return tally


def tally_into(result: PhaseResult, tally: _Tally) -> None:
    result.ok = tally.statuses.get(200, 0)
    result.non_200 = {str(s): n for s, n in sorted(tally.statuses.items()) if s != 200}
    result.errors = dict(tally.errors)
    result.rate = result.ok / result.duration_s
    lat = sorted(tally.latencies)
    result.p50_ms, result.p90_ms = percentile(lat, 50) * 1e3, percentile(lat, 90) * 1e3
    result.p99_ms, result.p999_ms = percentile(lat, 99) * 1e3, percentile(lat, 99.9) * 1e3
    result.max_ms = lat[-1] * 1e3 if lat else math.nan
    if tally.lags:
        result.send_lag_p99_ms = percentile(sorted(tally.lags), 99) * 1e3


# --- wrk -----------------------------------------------------------------------------------------------

_LUA = r"""
-- Generated by benchmarks/ingest.py: each request a fixture body with a new record id and ts.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } mmhub_timespec;
int clock_gettime(int clk_id, mmhub_timespec *tp);
]]
local clock_buf = ffi.new("mmhub_timespec")
local function now()
  ffi.C.clock_gettime(1, clock_buf)  -- CLOCK_MONOTONIC
  return tonumber(clock_buf.tv_sec) + tonumber(clock_buf.tv_nsec) / 1e9
end

local PATH = "%(path)s"
local DURATION = %(duration)r
local SEQ_BASE = %(seq_base)d
local THREAD_STRIDE = %(thread_stride)d
local TS_BASE = %(ts_base)d
local TEMPLATES = {
%(templates)s
}
local HEADERS = {["Content-Type"] = "%(form)s"}

local threads = 0
function setup(thread)
  thread:set("mmhub_thread", threads)
  threads = threads + 1
end

local counter, offset, stop_at = 0, SEQ_BASE, math.huge
function init(args)
  offset = SEQ_BASE + (mmhub_thread or 0) * THREAD_STRIDE
  stop_at = now() + DURATION
end

function request()
  counter = counter + 1
  local template, out = TEMPLATES[counter %% #TEMPLATES + 1], {}
  for i = 1, #template do
    local part = template[i]
    if part == 1 then
      out[i] = string.format("%%d", offset + counter)
    elseif part == 2 then
      out[i] = string.format("%%d", TS_BASE + math.floor(counter / 100))
    else
      out[i] = part
    end
  end
  return wrk.format("POST", PATH, HEADERS, table.concat(out))
end

-- After the phase, connections go quiet instead of being cut: requests in flight still get their
-- reply and are counted, so the 200s counted equal the events stored.
function delay()
  if now() >= stop_at then
    return 3600000
  end
  return 0
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'MMHUB_RESULT {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, ' ..
    '"p999_us": %%d, "max_us": %%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""


def _lua_string(data: bytes) -> str:
    text = data.decode("ascii")
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def lua_script(templates: list[BodyTemplate], path: str, duration: float, seq_base: int) -> str:
    rows = []
    for template in templates:
        parts = [str(p) if isinstance(p, int) else _lua_string(p) for p in template.parts]
        rows.append("  {" + ", ".join(parts) + "},  -- " + template.name)
    return _LUA % {
        "path": path,
        "duration": float(duration),
        "seq_base": seq_base,
        "thread_stride": THREAD_STRIDE,
        "ts_base": int(time.time()),
        "templates": "\n".join(rows),
        "form": FORM,
    }


def ensure_wrk() -> str | None:
    """The wrk binary, installing Debian's package when running as root; None if unavailable."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    say("wrk is missing: apt-get install -y wrk ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    for cmd in (install, ["apt-get", "update", "-q"], install):
        subprocess.run(cmd, env=env, capture_output=True, check=False)
        if shutil.which("wrk"):
            break
    return shutil.which("wrk")


def run_wrk(
    wrk: str, url: str, script: str, duration: float, connections: int, grace: float = 3.0
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="mmhub-bench-") as handle:
        handle.write(script)
        handle.flush()
        cmd = [wrk, "-t1", f"-c{connections}", f"-d{math.ceil(duration + grace)}s"]
        cmd += ["--timeout", "10s", "--latency", "-s", handle.name, url]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    match = re.search(r"^MMHUB_RESULT (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(match.group(1)))


def wrk_into(result: PhaseResult, raw: dict[str, Any]) -> None:
    result.ok = raw["requests"] - raw["status"]
    result.non_200 = {"non-2xx/3xx": raw["status"]} if raw["status"] else {}
    result.errors = {k: raw[k] for k in ("connect", "read", "write", "timeout") if raw[k]}
    # Requests sent during the phase, over its length (replies to the last ones came in the grace).
    result.rate = result.ok / result.duration_s
    result.p50_ms, result.p90_ms = raw["p50_us"] / 1e3, raw["p90_us"] / 1e3
    result.p99_ms, result.p999_ms = raw["p99_us"] / 1e3, raw["p999_us"] / 1e3
    result.max_ms = raw["max_us"] / 1e3


# --- the benchmark ----------------------------------------------------------------------------------


class Bench:
    def __init__(
        self, args: argparse.Namespace, server: ApiServer, database_url: str, wrk: str | None
    ):
        self.args = args
        self.server = server
        self.database_url = database_url
        self.wrk = wrk
        self.templates = body_templates()
        self._phase_index = 0
        # The postmaster is the parent of every PostgreSQL process, the checkpointer included.
        sql = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
        checkpointer = int(query(database_url, sql)[0][0])
        self.cpu = CpuMeter(server.pid, psutil.Process(checkpointer).ppid())

    def _seq_base(self) -> int:
        self._phase_index += 1
        return self._phase_index * SEQ_STRIDE

    def closed(
        self,
        name: str,
        path: str,
        duration: float,
        *,
        count: Callable[[str], int] | None = None,
        profile: str = "",
    ) -> PhaseResult:
        """`duration` seconds at the max rate; `count` (rows stored) reconciles the 200s."""
        tool = "wrk" if self.wrk else "python"
        result = PhaseResult(name, path, tool, "closed", self.args.connections, duration)
        before = count(self.database_url) if count else None
        profiler = self._profiler(profile, duration) if (profile and self.args.profile) else None
        self.cpu.start()
        if self.wrk:
            script = lua_script(self.templates, path, duration, self._seq_base())
            raw = run_wrk(
                self.wrk, self.server.base_url + path, script, duration, result.connections
            )
            wrk_into(result, raw)
        else:
            make = RequestMaker(self.templates, self.server.port, path, self._seq_base())
            tally = run_python_client(
                lambda: closed_loop(self.server.port, make, duration, result.connections)
            )
            tally_into(result, tally)
        result.cpu = self.cpu.stop(duration)
        if profiler is not None:
            profiler.wait()
        if count is not None and before is not None:
            result.stored = count(self.database_url) - before
        return result

    def fixed_rate(
        self,
        name: str,
        rate: float,
        duration: float,
        *,
        warmup: float = 0.0,
        path: str = INGEST_PATH,
        profile: str = "",
    ) -> PhaseResult:
        """`duration` seconds at `rate`, after `warmup` seconds at that rate on the same connections."""
        result = PhaseResult(name, path, "python", "open", self.args.connections, duration)
        result.target_rate = rate
        before = count_events(self.database_url) if path == INGEST_PATH else None
        make = RequestMaker(self.templates, self.server.port, path, self._seq_base())
        profilers: list[subprocess.Popen[bytes]] = []

        def measure() -> None:
            self.cpu.start()
            if profile and self.args.profile:
                profilers.append(self._profiler(profile, duration))

        tally = run_python_client(
            lambda: open_loop(
                self.server.port,
                make,
                rate,
                duration,
                result.connections,
                warmup=warmup,
                on_measure=measure,
            )
        )
        result.cpu = self.cpu.stop(duration)
        for profiler in profilers:
            profiler.wait()
        tally_into(result, tally)
        if before is not None:  # every 200, warm-up included, must have stored its event
            result.stored = count_events(self.database_url) - before - tally.warm_ok
        return result

    def _profiler(self, stem: str, duration: float) -> subprocess.Popen[bytes]:
        """py-spy on the API server for one phase: DIR/STEM.txt, collapsed stacks (speedscope and
        flamegraph.pl read them)."""
        spy = shutil.which("py-spy")
        if spy is None:
            raise SystemExit(
                "--profile needs py-spy: uv run --with py-spy python -m benchmarks.ingest"
            )
        out = Path(self.args.profile) / f"{stem}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [spy, "record", "--pid", str(self.server.pid), "--duration", str(int(duration))]
        cmd += ["--rate", "100", "--nonblocking", "--format", "raw", "--output", str(out)]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def run(self) -> list[PhaseResult]:
        args = self.args
        runs = f"warm-up {args.warmup:g}s, run {args.duration:g}s"
        say(f"[2/6] bare route {BARE_PATH} of the hub's app, max rate: {runs}")
        wait_for_quiet(args.quiet_wait)
        self.closed("warm-up", BARE_PATH, args.warmup)
        bare = self.closed("bare route, max rate", BARE_PATH, args.duration, profile="bare")

        say(f"[3/6] ingest {INGEST_PATH}, max rate: {runs}")
        wait_for_quiet(args.quiet_wait)
        self.closed("warm-up", INGEST_PATH, args.warmup)
        ingest = self.closed(
            "ingest, max rate", INGEST_PATH, args.duration, count=count_events, profile="ingest"
        )

        rate = max(1.0, ingest.rate * args.rate_fraction)
        say(f"[4/6] ingest at a fixed {rate:,.0f}/s: {runs}")
        wait_for_quiet(args.quiet_wait)
        fixed = self.fixed_rate(
            f"ingest at {args.rate_fraction:g} x max",
            rate,
            args.duration,
            warmup=args.warmup,
            profile="ingest-half",
        )
        return [bare, ingest, fixed]


def minimal_phase(
    args: argparse.Namespace, database_url: str, redis_url: str, wrk: str | None
) -> tuple[PhaseResult, PhaseResult]:
    """The minimal FastAPI app (no middleware, the same uvicorn settings) at the max rate, then at
    the same fraction of it as the hub's fixed-rate phase: what the platform alone (uvicorn, the
    event loop, the kernel's wake-ups on this machine) does to CPU per request at a lower rate."""
    with _minimal_server(database_url, redis_url) as server:
        bench = Bench(args, server, database_url, wrk)
        say(
            f"[1/6] minimal FastAPI app {BARE_PATH}, max rate, then {args.rate_fraction:g} x that: "
            f"warm-up {args.warmup:g}s, run {args.duration:g}s each"
        )
        wait_for_quiet(args.quiet_wait)
        bench.closed("warm-up", BARE_PATH, args.warmup)
        fastest = bench.closed("minimal app, max rate", BARE_PATH, args.duration)
        rate = max(1.0, fastest.rate * args.rate_fraction)
        wait_for_quiet(args.quiet_wait)
        name = f"minimal at {args.rate_fraction:g} x max"
        return fastest, bench.fixed_rate(
            name, rate, args.duration, warmup=args.warmup, path=BARE_PATH
        )


def minimal_at(
    args: argparse.Namespace, database_url: str, redis_url: str, wrk: str | None, rate: float
) -> PhaseResult:
    """The minimal app at the hub's own fixed rate (the same requests per second, not the same
    fraction): the platform's CPU per request at the rate where the hub's third target is judged."""
    with _minimal_server(database_url, redis_url) as server:
        bench = Bench(args, server, database_url, wrk)
        say(f"[5/6] minimal FastAPI app {BARE_PATH} at the hub's fixed {rate:,.0f}/s")
        wait_for_quiet(args.quiet_wait)
        name = f"minimal at {rate:,.0f}/s"
        return bench.fixed_rate(name, rate, args.duration, warmup=args.warmup, path=BARE_PATH)


def durable_phase(
    args: argparse.Namespace, database_url: str, redis_url: str, wrk: str | None
) -> PhaseResult:
    """The plainest durable receiver (`durable_app`) at the max rate: what making a webhook durable
    costs on this machine, before anything the hub does."""
    factory = "benchmarks.common:durable_app"
    with _minimal_server(database_url, redis_url, factory) as server:
        bench = Bench(args, server, database_url, wrk)
        say(f"[6/6] durable minimal app {DURABLE_PATH} (one jsonb row, group commit), max rate")
        wait_for_quiet(args.quiet_wait)
        bench.closed("warm-up", DURABLE_PATH, args.warmup)
        return bench.closed(
            "durable app, max rate", DURABLE_PATH, args.duration, count=count_durable
        )


@contextlib.contextmanager
def _minimal_server(
    database_url: str, redis_url: str, factory: str = "benchmarks.common:minimal_app"
) -> Iterator[ApiServer]:
    server = ApiServer(database_url, redis_url, factory=factory, ready_path="/openapi.json")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.log.unlink(missing_ok=True)


def wait_for_quiet(budget: float) -> None:
    """Wait (up to `budget` seconds) for a second in which the machine is nearly idle."""
    deadline = time.monotonic() + budget
    while True:
        busy = psutil.cpu_percent(interval=1.0) / 100 * (os.cpu_count() or 1)
        if busy < NOISE_CORES or time.monotonic() >= deadline:
            break
        say(f"  the machine is busy ({busy:.2f} cores used by others): waiting ...")
    if busy >= NOISE_CORES:
        say(f"  still busy ({busy:.2f} cores) after {budget:g}s: measuring anyway")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _fmt_ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(phases: list[PhaseResult], info: dict[str, Any]) -> dict[str, Any]:
    minimal, minimal_half, bare, ingest, half, minimal_same, durable = phases
    ratio = ingest.rate / minimal.rate if minimal.rate else 0.0
    ratio_ok = ratio >= TARGET_RATIO
    p99_ok = half.p99_ms <= TARGET_P99_MS
    cpu_ratio = half.api_us_per_request / ingest.api_us_per_request
    cpu_ok = cpu_ratio <= TARGET_CPU_RATIO
    reconciled = all(p.reconciled for p in phases)

    print()
    print(f"mmhub ingest benchmark  {info['when']}")
    print(
        f"  server: 1 uvicorn worker (uvloop, httptools, no access log), JSON logs as `mmhub api`, "
        f"ingest_batch_max={info['ingest_batch_max']}, db_pool_size={info['db_pool_size']}, "
        f"ingest_commit_delay={info['ingest_commit_delay']}"
    )
    pg = info["postgres"]
    print(
        f"  PostgreSQL {pg['server_version']}: fsync={pg['fsync']}, "
        f"synchronous_commit={pg['synchronous_commit']}, wal_sync_method={pg['wal_sync_method']}"
    )
    print(f"  load: {info['load_generator']}, {bare.connections} connections; {info['cpus']} CPUs")
    print(f"  tracing: {info['tracing']}; metrics: prometheus_client, always on")
    print()
    head = f"  {'phase':<24}{'rate/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    head += f"{'200s':>9}{'stored':>9}{'failed':>7}{'api CPU':>9}   cores api/pg/load/other"
    print(head)
    for p in phases:
        stored = "-" if p.stored is None else f"{p.stored:,}"
        cpu = "/".join(f"{p.cpu.get(k, 0):.2f}" for k in ("api", "postgres", "load", "other"))
        print(
            f"  {p.name:<24}{p.rate:>10,.0f}{_fmt_ms(p.p50_ms):>9}{_fmt_ms(p.p90_ms):>9}"
            f"{_fmt_ms(p.p99_ms):>9}{_fmt_ms(p.max_ms):>9}{p.ok:>9,}{stored:>9}{p.failed:>7}"
            f"{p.api_us_per_request:>7,.0f}us   {cpu}"
        )
    print()
    for p in phases:
        if p.failed:
            print(f"  {p.name}: non-200 replies {p.non_200 or 0}, errors {p.errors or 0}")
        if p.stored is not None and p.stored != p.ok:
            print(f"  {p.name}: MISMATCH: {p.stored:,} events stored for {p.ok:,} 200 replies")
    if half.send_lag_p99_ms is not None:
        print(
            f"  fixed-rate phase: target {half.target_rate:,.0f}/s, achieved {half.rate:,.0f}/s, "
            f"client scheduling lag p99 {half.send_lag_p99_ms:.1f} ms (part of the latency)"
        )
    print(
        f"  events stored {ingest.stored:,} / 200 replies {ingest.ok:,} (max rate); "
        f"{half.stored:,} / {half.ok:,} (fixed rate): "
        + ("reconciled" if reconciled else "NOT RECONCILED")
    )
    print(
        f"  deliveries: {info['deliveries']['stored']:,} stored, "
        f"{info['deliveries']['expected']:,} expected from the routes"
    )
    noise = max(p.cpu.get("other", 0.0) for p in phases)
    if noise > NOISE_CORES:
        print(
            f"  WARNING: other processes used up to {noise:.2f} cores during a phase: "
            "the figures are unreliable; repeat on a quiet machine"
        )
    print()
    print(
        f"  ingest / minimal app = {ingest.rate:,.0f} / {minimal.rate:,.0f} = {ratio:.2f}"
        f"   (target >= {TARGET_RATIO})   {verdict(ratio_ok)}"
    )
    print(
        f"  ingest / the hub's bare route = {ingest.rate:,.0f} / {bare.rate:,.0f} = "
        f"{ingest.rate / bare.rate if bare.rate else 0:.2f}   (for information)"
    )
    print(
        f"  durable app / minimal app = {durable.rate:,.0f} / {minimal.rate:,.0f} = "
        f"{durable.rate / minimal.rate if minimal.rate else 0:.2f}; ingest / durable app = "
        f"{ingest.rate / durable.rate if durable.rate else 0:.2f}   (for information)"
    )
    print(
        f"  p99 at {half.target_rate:,.0f}/s = {half.p99_ms:.1f} ms"
        f"   (target <= {TARGET_P99_MS:g} ms)   {verdict(p99_ok)}"
    )
    print(
        f"  API CPU per request at half / at max rate = {half.api_us_per_request:,.0f} / "
        f"{ingest.api_us_per_request:,.0f} us = {cpu_ratio:.2f}"
        f"   (target <= {TARGET_CPU_RATIO:g})   {verdict(cpu_ok)}"
    )
    platform = minimal_half.api_us_per_request / minimal.api_us_per_request
    print(
        f"  the same for the minimal app ({minimal_half.target_rate:,.0f}/s vs its max rate) = "
        f"{minimal_half.api_us_per_request:,.0f} / {minimal.api_us_per_request:,.0f} us = "
        f"{platform:.2f}   (for information: the platform's share)"
    )
    same = minimal_same.api_us_per_request / minimal.api_us_per_request
    print(
        f"  the minimal app at the hub's {minimal_same.target_rate:,.0f}/s vs its max rate = "
        f"{minimal_same.api_us_per_request:,.0f} / {minimal.api_us_per_request:,.0f} us = "
        f"{same:.2f}   (for information: the platform at the same rate)"
    )
    print()
    return {
        **info,
        "phases": [{**asdict(p), "api_us_per_request": p.api_us_per_request} for p in phases],
        "ratio": round(ratio, 3),
        "cpu_ratio": round(cpu_ratio, 3),
        "minimal_cpu_ratio": round(platform, 3),
        "minimal_cpu_ratio_at_hub_rate": round(same, 3),
        "durable_ratio": round(durable.rate / minimal.rate if minimal.rate else 0.0, 3),
        "ingest_durable_ratio": round(ingest.rate / durable.rate if durable.rate else 0.0, 3),
        "targets": {
            "ratio_min": TARGET_RATIO,
            "p99_ms_max_at_half_rate": TARGET_P99_MS,
            "cpu_ratio_max": TARGET_CPU_RATIO,
        },
        "ratio_ok": ratio_ok,
        "p99_ok": p99_ok,
        "cpu_ok": cpu_ok,
        "reconciled": reconciled,
        "pass": ratio_ok and p99_ok and cpu_ok and reconciled,
        "noisy": noise > NOISE_CORES,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest",
        description="Durable Bitrix24 ingest vs a bare FastAPI route on the same uvicorn server.",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (10)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (64)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per phase (2)")
    parser.add_argument("--json", action="store_true", help="also write bench-results/ingest.json")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="max-rate load generator: wrk if available (auto), or the built-in asyncio client",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed (for CI gates)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="seconds to wait before each phase for other processes to leave the CPUs idle (30)",
    )
    parser.add_argument("--rate-fraction", type=float, default=HALF, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-tracing",
        dest="tracing",
        action="store_false",
        help="do not export spans (by default the API exports them over OTLP/HTTP to a local sink)",
    )
    parser.add_argument(
        "--batch-max", type=int, help="MMHUB_INGEST_BATCH_MAX for the server (app default)"
    )
    parser.add_argument("--pool-size", type=int, help="MMHUB_DB_POOL_SIZE for the server")
    parser.add_argument(
        "--commit-delay",
        help="MMHUB_INGEST_COMMIT_DELAY for the server, e.g. 0ms or 5ms (app default)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy the API server during the hub's three phases: DIR/bare.txt, DIR/ingest.txt "
        "and DIR/ingest-half.txt, collapsed stacks (needs py-spy: uv run --with py-spy ...)",
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup <= 0 or args.connections <= 0:
        parser.error("--duration, --warmup and --connections must be positive")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM stops the run like Ctrl-C: servers and the database are stopped in order.
    signal.signal(signal.SIGTERM, _interrupt)
    wrk = None if args.client == "python" else ensure_wrk()
    if args.client == "wrk" and wrk is None:
        raise SystemExit("wrk is not installed and could not be installed (apt-get install wrk)")
    if wrk is None:
        say("wrk unavailable: the built-in asyncio client generates the max-rate load")
    knobs = {}
    if args.batch_max:
        knobs["MMHUB_INGEST_BATCH_MAX"] = str(args.batch_max)
    if args.pool_size:
        knobs["MMHUB_DB_POOL_SIZE"] = str(args.pool_size)
    if args.commit_delay is not None:
        knobs["MMHUB_INGEST_COMMIT_DELAY"] = args.commit_delay
    say("starting PostgreSQL 16 (fsync on) and Valkey in a throwaway folder ...")
    collector = Sink().start() if args.tracing else None
    if collector is not None:  # spans leave the API as in production, to a cheap local receiver
        knobs["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.base_url
    try:
        with embedded_database() as (database_url, redis_url):
            minimal, minimal_half = minimal_phase(args, database_url, redis_url, wrk)
            server = ApiServer(database_url, redis_url, env=knobs)
            try:
                server.start()
                say(f"API server pid {server.pid} on {server.base_url}")
                phases = [minimal, minimal_half, *Bench(args, server, database_url, wrk).run()]
            except BaseException:
                tail = server.tail()
                if tail:
                    say("--- API server log (tail) ---\n" + tail)
                raise
            finally:
                server.stop()
                server.log.unlink(missing_ok=True)
            hub_rate = phases[-1].target_rate or 1.0
            phases.append(minimal_at(args, database_url, redis_url, wrk, hub_rate))
            phases.append(durable_phase(args, database_url, redis_url, wrk))
            info = environment(args, database_url, wrk)
    except KeyboardInterrupt:
        say("interrupted: servers stopped")
        return 130
    finally:
        if collector is not None:
            info_spans = collector.count()
            collector.stop()
    info["tracing"] = (
        f"OTLP/HTTP export to a local sink ({info_spans:,} export requests)"
        if collector is not None
        else "spans recorded, not exported (--no-tracing)"
    )
    result = report(phases, info)
    if args.json:
        out = ROOT / "bench-results" / "ingest.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        say(f"wrote {out}")
    if not result["reconciled"]:
        return 2
    return 1 if args.check and not result["pass"] else 0


def environment(args: argparse.Namespace, database_url: str, wrk: str | None) -> dict[str, Any]:
    from app.settings import Settings

    defaults = Settings()
    names = ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "shared_buffers")
    postgres = {name: str(query(database_url, f"SHOW {name}")[0][0]) for name in names}
    by_type = query(database_url, "SELECT type, count(*) FROM events GROUP BY type")
    stored = int(query(database_url, "SELECT count(*) FROM deliveries")[0][0])
    wrk_version = ""
    if wrk:
        probe = subprocess.run([wrk, "--version"], capture_output=True, text=True)
        wrk_version = (probe.stdout or probe.stderr).split("[")[0].strip()
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": postgres,
        "load_generator": (f"{wrk_version} -t1" if wrk else "built-in asyncio client")
        + " (max rate), built-in open-loop client (fixed rate)",
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "ingest_batch_max": args.batch_max or defaults.ingest_batch_max,
        "db_pool_size": args.pool_size or defaults.db_pool_size,
        "ingest_commit_delay": args.commit_delay or format_duration(defaults.ingest_commit_delay),
        "deliveries": {
            "stored": stored,
            "expected": sum(expected_deliveries(t) * int(n) for t, n in by_type),
        },
    }


if __name__ == "__main__":
    sys.exit(main())
