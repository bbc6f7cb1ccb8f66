"""`make bench-dispatch`: drain a backlog to a local sink, and end-to-end latency at a steady rate.

    uv run python -m benchmarks.dispatch [--deliveries 20000] [--rate 200] [--seconds 20]
                                         [--concurrency 32] [--rq-jobs 500] [--json]
    uv run --with py-spy python -m benchmarks.dispatch --profile worker.json  # + py-spy on the worker

One run starts a durable (fsync on) embedded PostgreSQL 16 and Valkey in a throwaway folder, migrates
it, starts `benchmarks.sink` (aiohttp.web, its own process) and writes a YAML hub configuration with
one `http` target `sink` (allow_private, `--concurrency` requests in flight) and a route taking every
Bitrix24 deal event there. Then:

0. RQ side measurement: `--rq-jobs` no-op jobs through a SimpleWorker and through the forking Worker
   (each in its own burst-mode process; rate = jobs / (last job ended - first job started)).
1. Backlog: `--deliveries` Bitrix24 deal events, each built exactly as `POST /webhooks/bitrix24`
   builds it (same parser, routing and secret scrubbing), committed through the real
   `GroupCommitter` in-process: the events and deliveries rows are those ingest writes.
2. Baseline: the fastest plain Python client (aiohttp, 32 requests in flight, asyncio and uvloop
   loops) posts the very CloudEvent bodies and headers the worker will send for those deliveries to
   the same sink: requests/s. It runs again right after the drain; the best of the four counts.
3. Drain: `python -m cli relay` and ONE `python -m cli worker` start; the drain lasts from the first
   attempt's start to the last delivery's settle (both from the database); deliveries/s = attempt
   rows written / that time. The worker's RSS is read right after the sink sees its first request.
4. Steady: `python -m cli api` (uvicorn) serves the real ingest; an open-loop client posts deal
   events at `--rate`/s for `--seconds` (sends scheduled by the clock, never waiting on replies)
   after a 2 s warm-up. End-to-end latency = the sink's receive time - the time the ingest request
   got its 200 reply ("accepted"); the same from the scheduled send time is shown beside it.
   The worker's RSS is read again at the end.

Targets: drain >= 0.3 x the plain client's rate, end-to-end p99 <= 100 ms, RSS within 10 %.

The machine is shared (2 cores): every phase also reports the CPU used by processes outside the run
and flags the run NOISY above 0.2 cores, and the CPU microseconds per delivery (worker, PostgreSQL,
sink) and per plain-client request, which move far less with noise than the rates do.
Exit status: 0 when every target is met, 1 when one is missed, 2 when the run does not reconcile
(a delivery not delivered, attempts != deliveries, an ingest request failed, a process died).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import due_times
from benchmarks.sink import Sink, free_port

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("MMHUB_FIXTURES", ROOT / "tests" / "fixtures"))
DEAL_FIXTURE = "bitrix24/webhook-deal-add.form"
FORM = "application/x-www-form-urlencoded"
INGEST_PATH = "/webhooks/bitrix24"
TARGET = "sink"

TARGET_RATIO = 0.3
TARGET_P99_MS = 100.0
TARGET_RSS_GROWTH = 0.10
NOISE_CORES = 0.2  # CPU used outside the run beyond which a phase is flagged as noisy
INFLIGHT = 32  # the plain client's requests in flight
WARMUP_SECONDS = 2.0
# Record ids per phase, far apart so no two events of the run share a dedup key or ordering key.
BACKLOG_BASE, STEADY_BASE, WARMUP_BASE = 10_000_000, 20_000_000, 30_000_000

# The portal of the deal fixture; its token reaches the YAML through ${VAR}, as a secret should.
PORTAL = {
    "member_id": "d897063e1ce7c5eb9f04b9751eef5915",
    "domain": "some-domain.bitrix24.ru",
    "application_token": "${MMHUB_BENCH_B24_TOKEN}",
}
PORTAL_TOKEN = "jvh9y1ulvt2m6k5or90v9mg8nn32ozas"  # noqa: S105 - the public fixture's token


def noop() -> None:
    """The RQ side measurement's job: nothing at all."""


# --- results ------------------------------------------------------------------------------------


@dataclass
class Latency:
    count: int = 0
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        values = sorted(s * 1000 for s in seconds)
        if not values:
            return cls()
        return cls(
            count=len(values),
            p50_ms=round(percentile(values, 50), 2),
            p90_ms=round(percentile(values, 90), 2),
            p99_ms=round(percentile(values, 99), 2),
            max_ms=round(values[-1], 2),
        )


@dataclass
class Results:
    deliveries: int
    concurrency: int
    rate: float
    seconds: float
    machine: dict[str, Any] = field(default_factory=dict)
    rq: dict[str, Any] = field(default_factory=dict)
    backlog_insert_s: float = math.nan
    baseline: dict[str, Any] = field(default_factory=dict)
    baseline_rate: float = math.nan
    drain: dict[str, Any] = field(default_factory=dict)
    drain_rate: float = math.nan
    ratio: float = math.nan
    steady: dict[str, Any] = field(default_factory=dict)
    e2e_accepted: Latency = field(default_factory=Latency)
    e2e_scheduled: Latency = field(default_factory=Latency)
    ingest_reply: Latency = field(default_factory=Latency)
    rss_first_job_mb: float = math.nan
    rss_after_drain_mb: float = math.nan
    rss_end_mb: float = math.nan
    rss_max_mb: float = math.nan
    rss_growth: float = math.nan
    # CPU (cores) used by processes outside the run, per phase: other engineers' tests, ...
    noise: dict[str, float] = field(default_factory=dict)
    noisy: bool = False
    problems: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def say(message: str) -> None:
    print(message, flush=True)


# --- servers and processes -------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_database() -> Iterator[tuple[str, str, int]]:
    """Durable (fsync on) embedded PostgreSQL 16 and Valkey in a throwaway folder, migrated."""
    from app.embedded import EmbeddedServers, remove_state
    from app.migrate import upgrade

    state = Path(tempfile.mkdtemp(prefix="mmhub-bench-dispatch-"))
    state.chmod(0o755)  # as root, PostgreSQL runs as its own system user and must reach pgdata
    servers = EmbeddedServers(state, durable=True)
    try:
        runtime, _ = servers.start()
        upgrade(runtime.database_url)
        yield runtime.database_url, runtime.redis_url, runtime.pg_pid
    finally:
        servers.stop()
        remove_state(state)


def hub_config(sink_url: str, concurrency: int) -> dict[str, Any]:
    return {
        "sources": {"bitrix24": {"portals": [PORTAL]}},
        "targets": {
            TARGET: {
                "kind": "http",
                "url": sink_url,
                "allow_private": True,
                "concurrency": concurrency,
            }
        },
        "routes": [
            {
                "name": "deals-to-sink",
                "from": {"source": "bitrix24", "events": ["ONCRMDEAL*"]},
                "to": [TARGET],
            }
        ],
    }


class Processes:
    """`python -m cli <role>` children with the benchmark's environment; all stopped on exit."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the benchmark, which stops them in order
            )
        self.running[name] = process
        return process

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = (self.logs / f"{name}.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self, name: str, timeout: float = 15) -> None:
        """SIGTERM (RQ: warm shutdown, the job finishes), again after `timeout` (RQ: cold), kill."""
        process = self.running.pop(name, None)
        if process is None or process.poll() is not None:
            return
        for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGTERM, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)

    def stop_all(self) -> None:
        # The API first (no new events), then the relay, then the worker finishes its job.
        for name in sorted(
            self.running,
            key=lambda n: (
                ("api", "relay", "worker").index(n) if n in ("api", "relay", "worker") else 9
            ),
        ):
            self.stop(name)


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API server exited with {process.returncode}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as reply,  # noqa: S310 - our own server
        ):
            if reply.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not ready within {timeout:.0f}s")


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


class CpuMeter:
    """CPU seconds per process group over a phase, as a share of one core."""

    def __init__(self, groups: dict[str, int]) -> None:
        self._groups = {name: psutil.Process(pid) for name, pid in groups.items()}
        self._start: dict[str, float] = {}
        self._t0 = 0.0
        self.elapsed = 0.0

    @staticmethod
    def _cpu(proc: psutil.Process, tree: bool) -> float:
        total = 0.0
        procs = [proc, *(proc.children(recursive=True) if tree else [])]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
        return total

    def _sample(self) -> dict[str, float]:
        # With their children: PostgreSQL's backends, each role's span export process.
        sample = {name: self._cpu(proc, tree=True) for name, proc in self._groups.items()}
        sample["bench"] = self._cpu(psutil.Process(), tree=False)
        machine = psutil.cpu_times()
        sample["busy"] = (
            machine.user
            + machine.nice
            + machine.system
            + machine.irq
            + machine.softirq
            + getattr(machine, "steal", 0.0)
        )
        return sample

    def start(self) -> None:
        self._start, self._t0 = self._sample(), time.monotonic()

    def add(self, name: str, pid: int) -> None:
        """A process started after `start()`: all its CPU time counts."""
        self._groups[name] = psutil.Process(pid)
        self._start[name] = 0.0

    def stop(self) -> dict[str, float]:
        end, elapsed = self._sample(), time.monotonic() - self._t0
        self.elapsed = elapsed
        used = {k: (end[k] - self._start.get(k, end[k])) / elapsed for k in end}
        busy = used.pop("busy")
        used["other"] = max(0.0, busy - sum(used.values()))
        return {k: round(v, 2) for k, v in used.items()}


# --- the database ---------------------------------------------------------------------------------


def _dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


class Db:
    """One asyncpg connection on its own loop, for the benchmark's polling from sync code."""

    def __init__(self, database_url: str) -> None:
        import asyncpg

        self._loop = asyncio.new_event_loop()
        self._conn = self._loop.run_until_complete(asyncpg.connect(_dsn(database_url)))

    def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(self._loop.run_until_complete(self._conn.fetch(sql, *args)))

    def value(self, sql: str, *args: Any) -> Any:
        return self._loop.run_until_complete(self._conn.fetchval(sql, *args))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(self._conn.close())
        self._loop.close()


# --- event bodies ----------------------------------------------------------------------------------


class DealBodies:
    """The Bitrix24 deal fixture with its deal id and `ts` replaced: a new event each time."""

    def __init__(self) -> None:
        self._raw = (FIXTURES / DEAL_FIXTURE).read_bytes().strip()
        if (
            b"data%5BFIELDS%5D%5BID%5D=7405&" not in self._raw
            or b"&ts=1766047124&" not in self._raw
        ):
            raise ValueError(f"{DEAL_FIXTURE}: the deal id or ts is not where expected")
        self._ts = int(time.time())

    def body(self, deal_id: int) -> bytes:
        return self._raw.replace(
            b"data%5BFIELDS%5D%5BID%5D=7405&", b"data%%5BFIELDS%%5D%%5BID%%5D=%d&" % deal_id
        ).replace(b"&ts=1766047124&", b"&ts=%d&" % self._ts)


def new_event(settings: Any, body: bytes, port: int) -> Any:
    """The NewEvent `POST /webhooks/bitrix24` builds for this body (app/sources/bitrix24/router.py)."""
    import uuid as uuidlib

    from app.ingest.model import NewEvent
    from app.ingest.routing import plan_deliveries
    from app.ingest.scrub import mask_secrets, safe_headers
    from app.secrets import redact, secret_values
    from app.sources.bitrix24.parse import parse_b24
    from app.sources.bitrix24.phpform import parse_php_form
    from app.sources.bitrix24.router import _dedup_key, _timestamp
    from app.sources.bitrix24.verify import authenticate

    payload = parse_php_form(body)
    authenticate(settings.hub.sources.bitrix24, payload)
    parsed = parse_b24(payload)
    headers = {
        "host": f"127.0.0.1:{port}",
        "user-agent": "Bitrix24 Webhook Engine",
        "content-type": FORM,
        "content-length": str(len(body)),
        "accept": "*/*",
    }

    class _Request:  # what _dedup_key reads
        def __init__(self) -> None:
            self.headers = headers

    event = NewEvent(
        source="bitrix24",
        type=parsed.event,
        subject=parsed.subject,
        dedup_key=_dedup_key(_Request(), parsed, body),  # type: ignore[arg-type]
        payload=redact(payload),
        raw_body=mask_secrets(body, secret_values(payload)),
        headers=safe_headers(headers),
        origin=parsed.domain,
        occurred_at=_timestamp(parsed.ts),
        request_id=uuidlib.uuid4().hex,  # what CorrelationIdMiddleware makes when none is sent
    )
    event.deliveries = plan_deliveries(settings.hub, event.source, event.type)
    return event


async def insert_backlog(settings: Any, bodies: DealBodies, count: int) -> float:
    """Commit `count` events with their deliveries through the real GroupCommitter; seconds taken."""
    from app.db import make_engine
    from app.ingest.committer import GroupCommitter

    events = [new_event(settings, bodies.body(BACKLOG_BASE + i), 0) for i in range(count)]
    if any(len(e.deliveries) != 1 for e in events):
        raise RuntimeError("each deal event should have exactly one delivery (to the sink)")
    engine = make_engine(settings.require_database_url, pool_size=4)
    committer = GroupCommitter(engine, max_batch=500, flushers=2)
    started = time.perf_counter()
    await committer.start()
    try:
        outcomes = await asyncio.gather(*(committer.submit(e) for e in events))
    finally:
        await committer.stop()
        await engine.dispose()
    if any(o.duplicate for o in outcomes):
        raise RuntimeError("backlog events collided (duplicates)")
    return time.perf_counter() - started


# The rows `dispatch.deliver._CLAIM` returns, for the bodies and headers the worker will send.
_OUTBOUND_ROWS = """
SELECT d.id, ev.id AS event_id, ev.source, ev.type, ev.subject, ev.origin, ev.occurred_at,
       ev.received_at, ev.payload, ev.request_id
FROM deliveries d JOIN events ev ON ev.id = d.event_id
WHERE d.target = $1 ORDER BY d.seq
"""


def outbound_requests(db: Db) -> list[tuple[bytes, dict[str, str]]]:
    """(body, headers) exactly as the `http` target builds them for every waiting delivery."""
    import random

    from app.outbox.envelope import build_cloudevent
    from dispatch.targets.base import Outbound
    from dispatch.targets.cloudevent import cloudevent_headers
    from dispatch.targets.transport import encode_json

    requests = []
    for row in db.fetch(_OUTBOUND_ROWS, TARGET):
        record = dict(row)
        record["payload"] = json.loads(record["payload"])  # asyncpg hands jsonb over as text
        event = build_cloudevent({**record, "id": record["event_id"]})
        out = Outbound(
            delivery_id=record["id"],
            event=event,
            request_id=record["request_id"],
            traceparent=f"00-{record['event_id'].hex}-{random.getrandbits(64):016x}-01",
        )
        requests.append((encode_json(event), cloudevent_headers(out)))
    return requests


# --- phase 0: RQ no-op jobs, SimpleWorker vs the forking Worker -------------------------------------


def rq_worker_main(kind: str, queue_name: str) -> None:
    """Hidden mode: one burst-mode RQ worker of `kind` on `queue_name` (MMHUB_REDIS_URL)."""
    from redis import Redis
    from rq import Queue, SimpleWorker, Worker

    # The job's module, preloaded as the hub's worker preloads its own (a fork then inherits it).
    import benchmarks.dispatch  # noqa: F401

    connection = Redis.from_url(os.environ["MMHUB_REDIS_URL"])
    worker_cls = SimpleWorker if kind == "simple" else Worker
    worker = worker_cls([Queue(queue_name, connection=connection)], connection=connection)
    worker.work(burst=True, with_scheduler=False, logging_level="WARNING")


def rq_side(redis_url: str, jobs: int, logs: Path) -> dict[str, Any]:
    from redis import Redis
    from rq import Queue
    from rq.job import Job

    connection = Redis.from_url(redis_url)
    out: dict[str, Any] = {"jobs": jobs}
    for kind in ("simple", "fork"):
        queue = Queue(f"bench-rq-{kind}", connection=connection)
        ids = [
            queue.enqueue("benchmarks.dispatch.noop", result_ttl=600, job_timeout=60).id
            for _ in range(jobs)
        ]
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.dispatch",
            "--rq-worker",
            kind,
            "--rq-queue",
            queue.name,
        ]
        started = time.perf_counter()
        with open(logs / f"rq-{kind}.log", "ab") as log:
            result = subprocess.run(
                cmd,
                cwd=ROOT,
                env={**os.environ, "MMHUB_REDIS_URL": redis_url},
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=max(120, jobs),
                check=False,
            )
        wall = time.perf_counter() - started
        done = [j for j in Job.fetch_many(ids, connection=connection) if j is not None]
        finished = [j for j in done if j.get_status() == "finished"]
        if result.returncode != 0 or len(finished) != jobs:
            raise RuntimeError(f"RQ {kind} worker: {len(finished)}/{jobs} jobs finished")
        first = min(j.started_at for j in finished if j.started_at)
        last = max(j.ended_at for j in finished if j.ended_at)
        span = (last - first).total_seconds()
        out[kind] = {
            "jobs_per_s": round(jobs / span, 1),
            "span_s": round(span, 3),
            "wall_s_with_startup": round(wall, 2),
        }
        queue.delete(delete_jobs=True)
    return out


# --- phase 2: the plain client ---------------------------------------------------------------------


async def plain_client(
    url: str, requests: Sequence[tuple[bytes, dict[str, str]]], inflight: int
) -> tuple[float, int]:
    """POST every request with `inflight` in flight on one aiohttp session; (req/s, non-2xx)."""
    import aiohttp

    bad = 0
    connector = aiohttp.TCPConnector(limit=inflight, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def warm(body: bytes, headers: dict[str, str]) -> None:
            async with session.post(url, data=body, headers=headers) as reply:
                await reply.read()

        await asyncio.gather(*(warm(*requests[i % len(requests)]) for i in range(inflight * 4)))
        items = iter(requests)

        async def lane() -> None:
            nonlocal bad
            for body, headers in items:
                async with session.post(url, data=body, headers=headers) as reply:
                    await reply.read()
                    if reply.status // 100 != 2:
                        bad += 1

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(inflight)))
        elapsed = time.perf_counter() - started
    return len(requests) / elapsed, bad


def baseline(url: str, requests: Sequence[tuple[bytes, dict[str, str]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"client": f"aiohttp, {INFLIGHT} in flight", "requests": len(requests)}
    rate, bad = asyncio.run(plain_client(url, requests, INFLIGHT))
    out["asyncio_req_per_s"], out["bad"] = round(rate, 1), bad
    try:
        import uvloop
    except ImportError:
        return out
    rate, bad = uvloop.run(plain_client(url, requests, INFLIGHT))
    out["uvloop_req_per_s"], out["bad"] = round(rate, 1), out["bad"] + bad
    return out


def per_unit(cores: dict[str, float], seconds: float, units: int) -> dict[str, float]:
    """CPU microseconds per unit of work, per process group (noise left out)."""
    return {
        k: round(v * seconds / units * 1e6, 1) for k, v in cores.items() if k != "other" and v > 0
    }


def measured_baseline(
    sink: Sink, requests: Sequence[tuple[bytes, dict[str, str]]], pg_pid: int
) -> dict[str, Any]:
    cpu = CpuMeter({"postgres": pg_pid, "sink": sink.pid})
    cpu.start()
    out = baseline(sink.url, requests)
    out["cpu_cores"] = cpu.stop()
    # CPU per request (microseconds): steadier than a rate when the machine is shared.
    out["cpu_us_per_request"] = per_unit(out["cpu_cores"], cpu.elapsed, len(requests) * 2)
    return out


# --- phase 4: open-loop ingest ----------------------------------------------------------------------


@dataclass
class Sent:
    scheduled: float  # time.time() the send was due
    sent: float = math.nan
    replied: float = math.nan
    status: int = 0
    event_id: str | None = None
    error: str | None = None


async def open_loop(
    base_url: str, bodies: DealBodies, first_id: int, rate: float, seconds: float
) -> list[Sent]:
    """POST deal events at `rate`/s for `seconds`, each at its scheduled time, never waiting."""
    import aiohttp

    count = int(rate * seconds)
    url = base_url + INGEST_PATH
    payloads = [bodies.body(first_id + i) for i in range(count)]
    results = [Sent(scheduled=0.0) for _ in range(count)]
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            item = results[i]
            item.sent = time.time()
            try:
                async with session.post(
                    url, data=payloads[i], headers={"Content-Type": FORM}
                ) as reply:
                    data = await reply.read()
                    item.replied = time.time()
                    item.status = reply.status
                if reply.status == 200:
                    item.event_id = json.loads(data)["event_id"]
            except (aiohttp.ClientError, TimeoutError) as exc:
                item.error = type(exc).__name__

        tasks: list[asyncio.Task[None]] = []
        wall0 = time.time() + 0.05
        start = time.perf_counter() + 0.05
        async for due in due_times(start, rate, count):
            results[len(tasks)].scheduled = wall0 + (due - start)
            tasks.append(asyncio.create_task(one(len(tasks))))
        await asyncio.gather(*tasks)
    return results


def run_open_loop(
    base_url: str, bodies: DealBodies, first_id: int, rate: float, secs: float
) -> list[Sent]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(open_loop(base_url, bodies, first_id, rate, secs))
    return uvloop.run(open_loop(base_url, bodies, first_id, rate, secs))


# --- profiling the worker while it drains ------------------------------------------------------------


def start_profiler(out: Path, pid: int, logs: Path) -> subprocess.Popen[bytes]:
    """py-spy on the worker (`uv run --with py-spy python -m benchmarks.dispatch --profile ...`)."""
    import shutil

    spy = shutil.which("py-spy")
    if spy is None:
        raise RuntimeError(
            "--profile needs py-spy: uv run --with py-spy python -m benchmarks.dispatch"
        )
    fmt = {".json": "speedscope", ".txt": "raw"}.get(out.suffix, "flamegraph")
    cmd = [spy, "record", "--pid", str(pid), "--rate", "250", "--format", fmt, "--output", str(out)]
    with open(logs / "py-spy.log", "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def stop_profiler(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


# --- the run ----------------------------------------------------------------------------------------


def wait_until(
    check: Callable[[], bool], timeout: float, procs: Processes, interval: float = 0.2
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        if check():
            return True
        time.sleep(interval)
    return check()


def run(args: argparse.Namespace, results: Results) -> None:
    from app.settings import load_settings

    logs = Path(tempfile.mkdtemp(prefix="mmhub-bench-dispatch-logs-"))
    say(f"logs: {logs}")
    with contextlib.ExitStack() as stack:
        say("starting embedded PostgreSQL 16 (durable) and Valkey ...")
        database_url, redis_url, pg_pid = stack.enter_context(embedded_database())
        sink = Sink(log=logs / "sink.log").start()
        stack.callback(sink.stop)
        config = logs / "mmhub.yaml"
        import yaml

        config.write_text(
            yaml.safe_dump(hub_config(sink.url, args.concurrency), allow_unicode=True),
            encoding="utf-8",
        )
        env = {
            **os.environ,
            "MMHUB_DATABASE_URL": database_url,
            "MMHUB_REDIS_URL": redis_url,
            "MMHUB_CONFIG": str(config),
            "MMHUB_BENCH_B24_TOKEN": PORTAL_TOKEN,
            "MMHUB_LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        if args.tracing:  # every role exports its spans over OTLP/HTTP, to a second local sink
            collector = Sink(log=logs / "otlp.log").start()
            stack.callback(collector.stop)
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.base_url
        os.environ.update({k: env[k] for k in ("MMHUB_CONFIG", "MMHUB_BENCH_B24_TOKEN")})
        settings = load_settings(database_url=database_url, redis_url=redis_url)
        procs = Processes(env, logs)
        stack.callback(procs.stop_all)
        db = Db(database_url)
        stack.callback(db.close)

        # 0. RQ no-op jobs
        if args.rq_jobs:
            say(f"RQ side measurement: {args.rq_jobs} no-op jobs per worker class ...")
            results.rq = rq_side(redis_url, args.rq_jobs, logs)

        # 1. backlog
        say(f"inserting {args.deliveries} events + deliveries through the GroupCommitter ...")
        bodies = DealBodies()
        results.backlog_insert_s = round(
            asyncio.run(insert_backlog(settings, bodies, args.deliveries)), 2
        )
        pending = db.value("SELECT count(*) FROM deliveries WHERE status = 'pending'")
        if pending != args.deliveries:
            raise RuntimeError(f"{pending} pending deliveries, expected {args.deliveries}")
        requests = outbound_requests(db)

        # 2. baseline (again after the drain: the better of the two is the yardstick)
        say(f"baseline: aiohttp posting the same {len(requests)} bodies, {INFLIGHT} in flight ...")
        results.baseline["before"] = measured_baseline(sink, requests, pg_pid)
        results.noise["baseline_before"] = results.baseline["before"]["cpu_cores"]["other"]
        sink.reset()

        # 3. drain
        say("drain: starting the relay and one worker ...")
        spawned = time.time()
        relay = procs.start("relay", ["-m", "cli", "relay"])
        worker = procs.start("worker", ["-m", "cli", "worker"])
        wpid = worker.pid
        if not wait_until(lambda: sink.count() > 0, 60, procs, interval=0.01):
            raise RuntimeError("the worker delivered nothing within 60 s")
        results.rss_first_job_mb = round(rss_mb(wpid), 1)
        cpu = CpuMeter({"postgres": pg_pid, "sink": sink.pid, "worker": wpid, "relay": relay.pid})
        cpu.start()
        profiler = start_profiler(args.profile.resolve(), wpid, logs) if args.profile else None
        rss_samples = [results.rss_first_job_mb]
        timeout = max(120.0, args.deliveries / 50)

        def drained() -> bool:
            rss_samples.append(rss_mb(wpid))
            left = db.value(
                "SELECT count(*) FROM deliveries WHERE status IN "
                "('pending', 'delivering', 'retrying', 'held')"
            )
            return int(left) == 0

        ok = wait_until(drained, timeout, procs, interval=0.25)
        drained_wall = time.time()
        results.drain["cpu_cores"] = cpu.stop()
        cpu_elapsed = cpu.elapsed
        if profiler is not None:
            stop_profiler(profiler)
            say(f"  worker profile: {args.profile}")
        row = db.fetch(
            "SELECT (SELECT count(*) FROM delivery_attempts) AS attempts, "
            "(SELECT count(*) FROM deliveries WHERE status = 'delivered') AS delivered, "
            "(SELECT min(started_at) FROM delivery_attempts) AS first, "
            "(SELECT max(updated_at) FROM deliveries) AS last"
        )[0]
        stats = sink.stats()
        attempts, delivered = int(row["attempts"]), int(row["delivered"])
        span = (row["last"] - row["first"]).total_seconds()
        results.drain.update(
            {
                "attempts": attempts,
                "delivered": delivered,
                "seconds": round(span, 3),
                "sink_received": stats["count"],
                "sink_seconds_first_to_last": round(stats["last"] - stats["first"], 3),
                "startup_s_spawn_to_first_request": round(stats["first"] - spawned, 2),
                "wall_s_spawn_to_drained_seen": round(drained_wall - spawned, 2),
            }
        )
        results.drain_rate = round(attempts / span, 1) if span > 0 else math.nan
        results.drain["cpu_us_per_delivery"] = per_unit(
            results.drain["cpu_cores"], cpu_elapsed, attempts
        )
        results.noise["drain"] = results.drain["cpu_cores"]["other"]
        results.rss_after_drain_mb = round(rss_mb(wpid), 1)
        say(f"baseline again: the same {len(requests)} bodies ...")
        results.baseline["after"] = measured_baseline(sink, requests, pg_pid)
        results.noise["baseline_after"] = results.baseline["after"]["cpu_cores"]["other"]
        del requests
        sink.reset()
        results.baseline_rate = max(
            results.baseline[when].get(key, 0.0)
            for when in ("before", "after")
            for key in ("asyncio_req_per_s", "uvloop_req_per_s")
        )
        results.ratio = round(results.drain_rate / results.baseline_rate, 3)
        if not ok or delivered != args.deliveries:
            results.problems.append(f"drain: {delivered}/{args.deliveries} delivered")
        if attempts != args.deliveries:
            results.problems.append(f"drain: {attempts} attempts for {args.deliveries} deliveries")
        say(f"  {attempts} attempts in {span:.2f} s: {results.drain_rate:.0f} deliveries/s")

        # 4. steady
        api_port = free_port()
        say(
            f"steady: ingest API on port {api_port}, {args.rate:g} events/s for {args.seconds:g} s ..."
        )
        api = procs.start("api", ["-m", "cli", "api", "--port", str(api_port)])
        base_url = f"http://127.0.0.1:{api_port}"
        wait_ready(base_url + "/readyz", api)
        sink.reset()
        warm = run_open_loop(base_url, bodies, WARMUP_BASE, args.rate, WARMUP_SECONDS)
        if any(s.status != 200 for s in warm):
            results.problems.append("steady warm-up: an ingest request failed")
        wait_until(
            lambda: db.value("SELECT count(*) FROM deliveries WHERE status <> 'delivered'") == 0,
            30,
            procs,
        )
        cpu = CpuMeter(
            {
                "postgres": pg_pid,
                "sink": sink.pid,
                "worker": wpid,
                "relay": procs.running["relay"].pid,
                "api": api.pid,
            }
        )
        cpu.start()
        sent = run_open_loop(base_url, bodies, STEADY_BASE, args.rate, args.seconds)
        results.steady["cpu_cores"] = cpu.stop()
        results.noise["steady"] = results.steady["cpu_cores"]["other"]
        accepted = [s for s in sent if s.status == 200 and s.event_id]
        wanted = {s.event_id for s in accepted}

        def all_received() -> bool:
            rss_samples.append(rss_mb(wpid))
            left = db.value("SELECT count(*) FROM deliveries WHERE status <> 'delivered'")
            return int(left) == 0

        wait_until(all_received, 60, procs, interval=0.2)
        records = sink.records()
        received: dict[str, float] = {}
        for when, event_id in zip(records["received"], records["id"], strict=True):
            if event_id in wanted and event_id not in received:
                received[event_id] = when
        results.rss_end_mb = round(rss_mb(wpid), 1)
        rss_samples.append(results.rss_end_mb)
        results.rss_max_mb = round(max(rss_samples), 1)
        results.rss_growth = round(results.rss_end_mb / results.rss_first_job_mb - 1, 3)
        results.e2e_accepted = Latency.of(
            [received[s.event_id] - s.replied for s in accepted if s.event_id in received]
        )
        results.e2e_scheduled = Latency.of(
            [received[s.event_id] - s.scheduled for s in accepted if s.event_id in received]
        )
        results.ingest_reply = Latency.of([s.replied - s.scheduled for s in accepted])
        lag = sorted((s.sent - s.scheduled) * 1000 for s in sent)
        negative = sum(
            1 for s in accepted if s.event_id in received and received[s.event_id] < s.replied
        )
        results.steady.update(
            {
                "sent": len(sent),
                "accepted": len(accepted),
                "failed": len(sent) - len(accepted),
                "received_at_sink": len(received),
                "achieved_rate": (
                    round(len(sent) / (sent[-1].scheduled - sent[0].scheduled), 1)
                    if len(sent) > 1
                    else math.nan
                ),
                "send_lag_p99_ms": round(percentile(lag, 99), 2),
                "received_before_reply": negative,
            }
        )
        if len(accepted) != len(sent):
            results.problems.append(f"steady: {len(sent) - len(accepted)} ingest requests failed")
        if len(received) != len(accepted):
            results.problems.append(
                f"steady: {len(accepted) - len(received)} accepted events never reached the sink"
            )
        procs.stop_all()


def judge(results: Results) -> None:
    results.noisy = any(v > NOISE_CORES for v in results.noise.values())
    results.checks = {
        "drain_ratio": results.ratio >= TARGET_RATIO,
        "e2e_p99": results.e2e_accepted.p99_ms <= TARGET_P99_MS,
        "rss_flat": abs(results.rss_growth) <= TARGET_RSS_GROWTH,
    }


def table(results: Results) -> str:
    def mark(ok: bool | None) -> str:
        return "" if ok is None else ("PASS" if ok else "FAIL")

    rq = results.rq
    runs = [
        f"{results.baseline.get(when, {}).get(key, math.nan):,.0f}"
        for when in ("before", "after")
        for key in ("asyncio_req_per_s", "uvloop_req_per_s")
    ]
    rows = [
        (
            "plain client (aiohttp, 32 in flight), best",
            f"{results.baseline_rate:,.0f} req/s",
            "",
            None,
        ),
        ("  before drain: asyncio / uvloop", " / ".join(runs[:2]), "", None),
        ("  after drain:  asyncio / uvloop", " / ".join(runs[2:]), "", None),
        (
            "hub drain, 1 worker (attempt rows/s)",
            f"{results.drain_rate:,.0f} deliveries/s",
            "",
            None,
        ),
        (
            "drain / plain client",
            f"{results.ratio:.3f}",
            f">= {TARGET_RATIO}",
            results.checks.get("drain_ratio"),
        ),
        (
            f"e2e p50 @ {results.rate:g} ev/s (accepted->sink)",
            f"{results.e2e_accepted.p50_ms:.1f} ms",
            "",
            None,
        ),
        (
            f"e2e p99 @ {results.rate:g} ev/s (accepted->sink)",
            f"{results.e2e_accepted.p99_ms:.1f} ms",
            f"<= {TARGET_P99_MS:g} ms",
            results.checks.get("e2e_p99"),
        ),
        (
            "e2e p50/p99 from scheduled send",
            f"{results.e2e_scheduled.p50_ms:.1f} / {results.e2e_scheduled.p99_ms:.1f} ms",
            "",
            None,
        ),
        (
            "ingest reply p50/p99",
            f"{results.ingest_reply.p50_ms:.1f} / {results.ingest_reply.p99_ms:.1f} ms",
            "",
            None,
        ),
        (
            "worker RSS first job -> end",
            f"{results.rss_first_job_mb:.1f} -> {results.rss_end_mb:.1f} MiB "
            f"({results.rss_growth:+.1%}; max {results.rss_max_mb:.1f})",
            f"within {TARGET_RSS_GROWTH:.0%}",
            results.checks.get("rss_flat"),
        ),
    ]
    per = results.drain.get("cpu_us_per_delivery", {})
    plain = results.baseline.get("after", results.baseline.get("before", {}))
    plain_per = plain.get("cpu_us_per_request", {})
    rows.append(
        (
            "CPU us/delivery: worker / postgres / sink",
            " / ".join(f"{per.get(k, math.nan):.0f}" for k in ("worker", "postgres", "sink")),
            "",
            None,
        )
    )
    rows.append(
        (
            "CPU us/request, plain client / sink",
            " / ".join(f"{plain_per.get(k, math.nan):.0f}" for k in ("bench", "sink")),
            "",
            None,
        )
    )
    if rq:
        rows.append(
            (
                "RQ no-op jobs/s: SimpleWorker vs Worker",
                f"{rq['simple']['jobs_per_s']:,.0f} vs {rq['fork']['jobs_per_s']:,.0f}",
                "",
                None,
            )
        )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [f"{'measure':<{width}}  {'value':<{vwidth}}  {'target':<12}  result"]
    lines.append("-" * len(lines[0]) + "-" * 6)
    for name, value, target, ok in rows:
        lines.append(f"{name:<{width}}  {value:<{vwidth}}  {target:<12}  {mark(ok)}")
    noise = ", ".join(f"{k} {v:.2f}" for k, v in results.noise.items())
    verdict = "NOISY: repeat when the machine is quiet" if results.noisy else "quiet"
    lines.append(f"CPU used outside the run (cores): {noise} -> {verdict}")
    return "\n".join(lines)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=200.0, help="steady events/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="steady phase length")
    parser.add_argument("--concurrency", type=int, default=32, help="the sink target's concurrency")
    parser.add_argument("--rq-jobs", type=int, default=500, help="RQ no-op jobs per worker class")
    parser.add_argument("--json", action="store_true", help="write bench-results/dispatch.json")
    parser.add_argument(
        "--no-tracing",
        dest="tracing",
        action="store_false",
        help="do not export spans (by default every role exports them over OTLP/HTTP to a sink)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the worker during the drain into this file (.svg flamegraph, .json speedscope)",
    )
    parser.add_argument("--rq-worker", choices=("simple", "fork"), help=argparse.SUPPRESS)
    parser.add_argument("--rq-queue", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rq_worker:
        rq_worker_main(args.rq_worker, args.rq_queue)
        return 0

    results = Results(args.deliveries, args.concurrency, args.rate, args.seconds)
    results.machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    # Ctrl-C and SIGTERM unwind through the ExitStack, which stops every process and server.
    signal.signal(signal.SIGTERM, _interrupt)
    error: BaseException | None = None
    try:
        run(args, results)
    except KeyboardInterrupt:
        say("interrupted: everything stopped")
        return 130
    except Exception as exc:  # the table still shows what was measured
        error = exc
        results.problems.append(f"{type(exc).__name__}: {exc}")
    judge(results)
    say("")
    say(table(results))
    say("")
    say(f"drain detail: {json.dumps(results.drain)}")
    say(f"steady detail: {json.dumps(results.steady)}")
    say(f"baseline detail: {json.dumps(results.baseline)}")
    if results.rq:
        say(f"rq detail: {json.dumps(results.rq)}")
    for problem in results.problems:
        say(f"PROBLEM: {problem}")
    if args.json:
        out = ROOT / "bench-results" / "dispatch.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(asdict(results), indent=2, default=str), encoding="utf-8")
        say(f"wrote {out}")
    if error is not None or results.problems:
        return 2
    return 0 if all(results.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
