"""`make bench-purge`: retention at scale: purge time, and ingest latency while a purge runs.

    uv run python -m benchmarks.purge [--rows 10000000] [--older-fraction 0.5] [--batch 1000]
                                      [--duty-cycle D] [--rate 200] [--explain] [--json]

One run starts a durable (fsync on) embedded PostgreSQL 16 and Valkey in a throwaway folder and
migrates it (`benchmarks.common.embedded_database`), then:

1. Load: `--rows` events received over the last 60 days (`--older-fraction` of them more than 30
   days ago), each with one delivered delivery and one attempt, rows shaped as ingest writes them
   (the Bitrix24 fixture bodies, parsed, redacted and masked by the app's own functions), ids
   time-ordered like the app's UUIDv7. The rows go in with `INSERT … SELECT generate_series`, in
   time order, in chunks, with the three tables' indexes and constraints dropped first and rebuilt
   afterwards exactly as the migrations made them (definitions read back from the catalog); then
   VACUUM ANALYZE and a CHECKPOINT. 10M events take about 7 minutes and 20 GB.
2. `--explain`: EXPLAIN (ANALYZE, BUFFERS) of one batch's statements on the loaded tables, and the
   generic plans of the two cascade steps (rolled back).
3. The real app (`benchmarks.common.ApiServer`: uvicorn in its own process) takes Bitrix24 ingest at
   a fixed `--rate` (open loop: latency from each request's scheduled send time, so queueing
   counts): a warm-up, `--baseline` seconds without a purge, then for as long as
   `app.outbox.retention.purge()` runs in its own process (as `mmhub purge` would) on everything older
   than 30 days (cutoff fixed at load time), then `--after` seconds more. Before the baseline and
   the purge it waits (up to `--quiet-wait`) for other processes to leave the CPUs alone.
4. A second purge at once, which finds nothing left but walks past the rows just deleted.

Reported: load time and sizes; purge time, rows/s, per-batch p50/p99/max (and the p50 of the first
and last tenth of the batches: a batch must not get dearer as the purge goes on); ingest p50/p99
in each window, with the cores each process group used. Exit status 0, or 2 when the run does not
reconcile (purged != old rows loaded, old rows left, events stored != 200 replies, any request
failed). `make bench-purge` runs 1M events (about 3 minutes); the default is the 10M case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any, cast

import psutil

from benchmarks.common import (
    FORM,
    INGEST_PATH,
    ROOT,
    ApiServer,
    BodyTemplate,
    body_templates,
    embedded_database,
)

RETENTION = timedelta(days=30)
SPAN = timedelta(days=60)
TABLES = ("events", "deliveries", "delivery_attempts")
CHUNK = 500_000
MARGIN = timedelta(minutes=5)  # no loaded row within this of the cutoff or of the load time
SEQ_BASE = 3_000_000_000  # ingest record ids: far from the loaded ones
NOISE_CORES = 0.2  # CPU used by other processes beyond which a window is flagged as noisy


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


async def fetchval(database_url: str, sql: str, *args: Any) -> Any:
    import asyncpg

    conn = await asyncpg.connect(_dsn(database_url))
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


# --- 1. bulk load ---------------------------------------------------------------------------------


@dataclass
class LoadStats:
    rows: int
    older: int
    now: str
    cutoff: str
    insert_s: float = 0.0
    index_s: float = 0.0
    vacuum_s: float = 0.0
    sizes_mb: dict[str, float] = field(default_factory=dict)

    @property
    def now_at(self) -> datetime:
        return datetime.fromisoformat(self.now)

    @property
    def cutoff_at(self) -> datetime:
        return datetime.fromisoformat(self.cutoff)


@dataclass(frozen=True)
class RowShape:
    """One fixture body as ingest stores it: type, subject entity, dedup prefix, payload, body."""

    type: str
    entity: str
    portal: str
    origin: str | None
    payload: str
    raw_body: bytes


def row_shapes(templates: list[BodyTemplate]) -> tuple[list[RowShape], str]:
    """Each fixture rendered once and put through the app's own parsing and scrubbing."""
    from app.ingest.scrub import mask_secrets, safe_headers
    from app.secrets import redact, secret_values
    from app.sources.bitrix24.parse import parse_b24
    from app.sources.bitrix24.phpform import parse_php_form

    shapes = []
    headers: dict[str, str] = {}
    for template in templates:
        raw = template.render(7405, 1766047124)
        payload = parse_php_form(raw)
        parsed = parse_b24(payload)
        headers = safe_headers(
            {
                "host": "hub.example",
                "content-type": FORM,
                "content-length": str(len(raw)),
                "user-agent": "Bitrix24 Webhook Engine",
                "x-forwarded-for": "203.0.113.7",
            }
        )
        shapes.append(
            RowShape(
                type=parsed.event,
                entity=parsed.subject.split("/")[0],
                portal=parsed.member_id or parsed.domain or "",
                origin=parsed.domain,
                payload=json.dumps(redact(payload)),
                raw_body=mask_secrets(raw, secret_values(payload)),
            )
        )
    return shapes, json.dumps(headers)


# Row g of the load: its time (evenly spread, in g order, the old ones first) and its shape.
_SOURCE = """
FROM generate_series($1::bigint, $2::bigint) AS g
CROSS JOIN LATERAL (
    SELECT CASE WHEN g <= $3 THEN $4::timestamptz + (g - 1) * $5::interval
                ELSE $6::timestamptz + (g - $3 - 1) * $7::interval END AS at
) t
CROSS JOIN LATERAL (
    SELECT lpad(to_hex((extract(epoch FROM t.at) * 1000)::bigint), 12, '0') AS ms
) u
JOIN unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[])
    WITH ORDINALITY AS s(type, entity, portal, origin, payload, raw_body, k)
    ON s.k = g % cardinality($8::text[]) + 1
"""
# UUIDv7-like ids (time first), as the app makes them: the primary keys stay append-only.
_EVENT_ID = "(u.ms || '70' || lpad(to_hex(g), 18, '0'))::uuid"
_DELIVERY_ID = "(u.ms || '71' || lpad(to_hex(g), 18, '0'))::uuid"

# Built from constant fragments only (no outside values): noqa S608 below.
_LOAD_EVENTS = f"""
INSERT INTO events (id, source, type, subject, dedup_key, origin, received_at, occurred_at,
                    request_id, headers, payload, raw_body)
SELECT {_EVENT_ID}, 'bitrix24', s.type, s.entity || '/' || g,
       s.portal || ':' || s.type || ':' || s.entity || '/' || g || ':'
           || extract(epoch FROM t.at)::bigint,
       s.origin, t.at, t.at - interval '1 second', 'bench-' || g, $14::jsonb, s.payload::jsonb,
       s.raw_body
{_SOURCE}
"""  # noqa: S608
_LOAD_DELIVERIES = f"""
INSERT INTO deliveries (id, event_id, route, target, status, attempt_count, next_attempt_at,
                        ordering_key, created_at, updated_at, delivered_at)
SELECT {_DELIVERY_ID}, {_EVENT_ID}, 'everything-to-audit', 'audit', 'delivered', 1, t.at,
       s.entity || '/' || g, t.at, t.at + interval '150 ms', t.at + interval '150 ms'
{_SOURCE}
"""
_LOAD_ATTEMPTS = f"""
INSERT INTO delivery_attempts (delivery_id, target, number, started_at, duration_ms, http_status,
                               response_excerpt, outcome, manual)
SELECT {_DELIVERY_ID}, 'audit', 1, t.at + interval '20 ms', 130, 200, '{{"ok": true}}',
       'delivered', false
{_SOURCE}
"""

_CONSTRAINTS = """
SELECT conrelid::regclass::text AS tbl, conname, contype::text, pg_get_constraintdef(oid) AS def
FROM pg_constraint
WHERE conrelid = ANY($1::text[]::regclass[]) AND contype IN ('p', 'u', 'f')
ORDER BY conrelid, conname
"""
_INDEXES = """
SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def
FROM pg_index i
WHERE indrelid = ANY($1::text[]::regclass[])
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                  WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u'))
ORDER BY indexrelid
"""


def _defs(rows: Sequence[Any]) -> set[tuple[Any, ...]]:
    return {tuple(row.values()) for row in rows}


async def bulk_load(database_url: str, rows: int, older_fraction: float) -> LoadStats:
    import asyncpg

    now = datetime.now(UTC).replace(microsecond=0)
    cutoff = now - RETENTION
    older = round(rows * older_fraction)
    newer = rows - older
    old_start, new_start = now - SPAN, cutoff + MARGIN
    old_step = (RETENTION - MARGIN) / max(older, 1)
    new_step = (RETENTION - 2 * MARGIN) / max(newer, 1)
    shapes, headers = row_shapes(body_templates())
    stats = LoadStats(rows, older, now.isoformat(), cutoff.isoformat())
    columns = (
        [s.type for s in shapes],
        [s.entity for s in shapes],
        [s.portal for s in shapes],
        [s.origin for s in shapes],
        [s.payload for s in shapes],
        [s.raw_body for s in shapes],
    )

    conn = await asyncpg.connect(_dsn(database_url))
    try:
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute("SET max_parallel_maintenance_workers = 2")
        constraints = await conn.fetch(_CONSTRAINTS, list(TABLES))
        indexes = await conn.fetch(_INDEXES, list(TABLES))
        async with conn.transaction():
            for c in sorted(constraints, key=lambda c: c["contype"] != "f"):  # foreign keys first
                await conn.execute(f'ALTER TABLE {c["tbl"]} DROP CONSTRAINT "{c["conname"]}"')
            for index in indexes:
                await conn.execute(f"DROP INDEX {index['name']}")

        started = time.perf_counter()
        for first in range(1, rows + 1, CHUNK):
            last = min(first + CHUNK - 1, rows)
            args = (first, last, older, old_start, old_step, new_start, new_step, *columns)
            async with conn.transaction():
                await conn.execute(_LOAD_EVENTS, *args, headers)
                await conn.execute(_LOAD_DELIVERIES, *args)
                await conn.execute(_LOAD_ATTEMPTS, *args)
            elapsed = time.perf_counter() - started
            say(f"  loaded {last:,} / {rows:,} events (+ deliveries, attempts) in {elapsed:,.0f} s")
        stats.insert_s = time.perf_counter() - started

        started = time.perf_counter()
        for c in constraints:
            if c["contype"] != "f":
                await conn.execute(
                    f'ALTER TABLE {c["tbl"]} ADD CONSTRAINT "{c["conname"]}" {c["def"]}'
                )
        for index in indexes:
            await conn.execute(index["def"])
        for c in constraints:
            if c["contype"] == "f":
                await conn.execute(
                    f'ALTER TABLE {c["tbl"]} ADD CONSTRAINT "{c["conname"]}" {c["def"]}'
                )
        stats.index_s = time.perf_counter() - started
        now_constraints = await conn.fetch(_CONSTRAINTS, list(TABLES))
        now_indexes = await conn.fetch(_INDEXES, list(TABLES))
        if (_defs(now_constraints), _defs(now_indexes)) != (_defs(constraints), _defs(indexes)):
            raise RuntimeError("the rebuilt schema differs from the migrated one")
        say(f"  indexes and constraints rebuilt in {stats.index_s:,.0f} s (same as migrated)")

        started = time.perf_counter()
        for table in TABLES:
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        await conn.execute("CHECKPOINT")
        stats.vacuum_s = time.perf_counter() - started
        say(f"  vacuum, analyze and checkpoint in {stats.vacuum_s:,.0f} s")
        for table in TABLES:
            size = await conn.fetchval("SELECT pg_total_relation_size($1::text::regclass)", table)
            stats.sizes_mb[table] = round(size / 2**20, 1)
    finally:
        await conn.close()
    return stats


# --- 2. plans -------------------------------------------------------------------------------------


async def explain(database_url: str, cutoff: datetime, batch: int) -> list[str]:
    """EXPLAIN ANALYZE of one batch's statements on the loaded tables, rolled back."""
    from sqlalchemy import text

    from app.db import make_engine, make_sessionmaker
    from app.outbox.retention import (
        _CANDIDATES,
        _COUNT_ATTEMPTS,
        _DELETE_EVENTS,
        _DELIVERY_STATES,
        _LOCK_DELIVERIES,
        final_statuses,
    )

    engine = make_engine(database_url, pool_size=1)
    out: list[str] = []

    async def plan(title: str, session: Any, sql: str, params: dict[str, Any]) -> None:
        rows = await session.execute(text(sql), params)
        out.append(f"-- {title}")
        for (line,) in rows:
            out.append(f"   {line}" if len(line) < 160 else f"   {line[:150]} …")

    try:
        async with make_sessionmaker(engine)() as session:
            final = list(final_statuses(include_dead=False))
            params = {
                "cutoff": cutoff,
                "after_at": datetime(1, 1, 1, tzinfo=UTC),
                "after_id": "00000000-0000-0000-0000-000000000000",
                "final": final,
                "batch": batch,
            }
            analyze = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON) "
            await plan("candidates (first batch)", session, analyze + _CANDIDATES.text, params)
            ids = [row.id for row in await session.execute(_CANDIDATES, params)]
            batch_params = {"events": ids, "final": final}
            await plan(
                "their deliveries' states", session, analyze + _DELIVERY_STATES.text, batch_params
            )
            await plan(
                "lock the final ones", session, analyze + _LOCK_DELIVERIES.text, batch_params
            )
            deliveries = [row.id for row in await session.execute(_LOCK_DELIVERIES, batch_params)]
            await plan(
                "count their attempts",
                session,
                analyze + _COUNT_ATTEMPTS.text,
                {"deliveries": deliveries},
            )
            middle = (
                await session.execute(
                    text(
                        "SELECT received_at, id FROM events WHERE received_at < :cutoff "
                        "ORDER BY received_at DESC, id DESC LIMIT 1"
                    ),
                    {"cutoff": cutoff - RETENTION / 2},
                )
            ).one()
            params |= {"after_at": middle.received_at, "after_id": middle.id}
            await plan(
                "candidates (from a cursor half-way)", session, analyze + _CANDIDATES.text, params
            )
            # The statements the foreign keys' cascade triggers run for each deleted row (RI
            # triggers keep a prepared plan; a generic plan is what they settle on).
            await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
            await session.execute(
                text(
                    "PREPARE ri_deliveries(uuid) AS "
                    'DELETE FROM ONLY "public"."deliveries" WHERE $1 OPERATOR(pg_catalog.=) "event_id"'
                )
            )
            await session.execute(
                text(
                    'PREPARE ri_attempts(uuid) AS DELETE FROM ONLY "public"."delivery_attempts" '
                    'WHERE $1 OPERATOR(pg_catalog.=) "delivery_id"'
                )
            )
            event_id = ids[-1]
            delivery_id = (
                await session.execute(
                    text("SELECT id FROM deliveries WHERE event_id = :e"), {"e": event_id}
                )
            ).scalar_one()
            await plan(
                "cascade step events -> deliveries (generic plan)",
                session,
                f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE ri_deliveries('{event_id}')",
                {},
            )
            await plan(
                "cascade step deliveries -> delivery_attempts (generic plan)",
                session,
                f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE ri_attempts('{delivery_id}')",
                {},
            )
            await session.execute(text("SET LOCAL plan_cache_mode = auto"))
            await plan(
                f"delete {len(ids) - 1} events with cascade",
                session,
                analyze + _DELETE_EVENTS.text,
                {"events": ids[:-1]},
            )
            await session.rollback()
    finally:
        await engine.dispose()
    return out


# --- 3. ingest load: open loop over raw HTTP/1.1 keep-alive connections ---------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request in flight (httptools parses the reply)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        import httptools

        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except Exception as exc:
            self._fail(exc)
            self.close()

    def on_message_complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    async def send(self, raw: bytes) -> int:
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


class Requests:
    """Raw ingest requests cycling through the fixture bodies, each a new event."""

    def __init__(self, templates: list[BodyTemplate], port: int) -> None:
        self._templates = templates
        self._counter = 0
        self._ts = int(time.time())
        self._head = (
            f"POST {INGEST_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: {FORM}\r\nContent-Length: "
        ).encode()

    def __call__(self) -> bytes:
        self._counter += 1
        n = self._counter
        body = self._templates[n % len(self._templates)].render(SEQ_BASE + n, self._ts + n // 100)
        return self._head + b"%d\r\n\r\n" % len(body) + body


@dataclass
class Sample:
    due: float  # scheduled send time (loop clock)
    latency: float  # reply time - due time
    status: int  # HTTP status, or 0 for a socket error or timeout


class OpenLoop:
    """Requests due at a fixed rate whatever the replies do; latency counted from the due time."""

    def __init__(self, port: int, make: Callable[[], bytes], rate: float, connections: int):
        self.port, self.make, self.rate, self.connections = port, make, rate, connections
        self.samples: list[Sample] = []
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[float | None] = asyncio.Queue()
        conns = [await _connect(self.port) for _ in range(self.connections)]

        async def client(conn: _Connection) -> None:
            while (due := await queue.get()) is not None:
                try:
                    status = await asyncio.wait_for(conn.send(self.make()), timeout=30)
                except Exception:
                    status = 0
                    conn.close()
                    conn = await _connect(self.port)
                self.samples.append(Sample(due, loop.time() - due, status))
            conn.close()

        tasks = [asyncio.create_task(client(c)) for c in conns]
        interval, start, sent = 1.0 / self.rate, loop.time() + 0.01, 0
        while not self._stop.is_set():
            now = loop.time()
            while start + sent * interval <= now:
                queue.put_nowait(start + sent * interval)
                sent += 1
            # Timers have millisecond resolution: wake at least 1 ms apart, never spin.
            await asyncio.sleep(max(start + sent * interval - loop.time(), 0.001))
        for _ in tasks:
            queue.put_nowait(None)
        await asyncio.gather(*tasks)


@dataclass
class Window:
    name: str
    seconds: float
    requests: int = 0
    ok: int = 0
    failed: int = 0
    rate: float = 0.0
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    cores: dict[str, float] = field(default_factory=dict)
    db: dict[str, float] = field(default_factory=dict)  # WAL written, blocks read, checkpoints

    @classmethod
    def of(cls, name: str, samples: list[Sample], start: float, end: float) -> Window:
        inside = [s for s in samples if start <= s.due < end]
        ok = sorted(s.latency * 1e3 for s in inside if s.status == 200)
        window = cls(name, end - start, len(inside), len(ok), len(inside) - len(ok))
        window.rate = len(ok) / window.seconds if window.seconds > 0 else 0.0
        window.p50_ms, window.p90_ms = percentile(ok, 50), percentile(ok, 90)
        window.p99_ms = percentile(ok, 99)
        window.max_ms = ok[-1] if ok else math.nan
        return window


_DB_COUNTERS = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') / 1048576.0 AS wal_mb,
       (SELECT blks_read FROM pg_stat_database WHERE datname = current_database())
           * 8 / 1024.0 AS read_mb,
       (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) AS checkpoints
"""


async def db_counters(database_url: str) -> dict[str, float]:
    """WAL written, blocks read from outside shared_buffers (MB) and checkpoints, so far."""
    import asyncpg

    conn = await asyncpg.connect(_dsn(database_url))
    try:
        row = await conn.fetchrow(_DB_COUNTERS)
    finally:
        await conn.close()
    return {key: float(value) for key, value in row.items()}


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: round(after[key] - before[key], 1) for key in after}


class CpuMeter:
    """Cores used per process group between two laps.

    PostgreSQL is the postmaster and all its children; a backend or an autovacuum worker that
    exits takes its CPU time with it, so `track()` samples them every half second meanwhile.
    """

    def __init__(self, api_pid: int, pg_pid: int) -> None:
        self._api, self._pg = psutil.Process(api_pid), psutil.Process(pg_pid)
        self._pg_seen: dict[int, float] = {}
        self._last: tuple[float, dict[str, float]] = (time.monotonic(), self._sample())

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            return 0.0
        return float(t.user + t.system)

    def _postgres(self) -> float:
        try:
            procs = [self._pg, *self._pg.children()]
        except psutil.Error:
            procs = [self._pg]
        for proc in procs:
            self._pg_seen[proc.pid] = max(self._pg_seen.get(proc.pid, 0.0), self._cpu(proc))
        return sum(self._pg_seen.values())

    async def track(self) -> None:
        while True:
            self._postgres()
            await asyncio.sleep(0.5)

    def _sample(self) -> dict[str, float]:
        m = psutil.cpu_times()
        return {
            "api": self._cpu(self._api),
            "postgres": self._postgres(),
            "load": self._cpu(psutil.Process()),
            "busy": m.user + m.nice + m.system + m.irq + m.softirq + getattr(m, "steal", 0.0),
        }

    def lap(self, purge_cpu: float = 0.0) -> dict[str, float]:
        """Cores used since the previous lap; `purge_cpu`: CPU seconds the purge process used."""
        now, sample = time.monotonic(), self._sample()
        then, last = self._last
        self._last = (now, sample)
        sample["purge"], last = purge_cpu, {**last, "purge": 0.0}
        used = {k: max(0.0, (sample[k] - last[k]) / (now - then)) for k in sample}
        # Whatever else ran meanwhile (other engineers' tests, autovacuum is in `postgres`): noise.
        used["other"] = max(0.0, used.pop("busy") - sum(used.values()))
        return {k: round(v, 2) for k, v in used.items()}


# --- the purge, in its own process (as `mmhub purge` would run) -----------------------------------


def purge_process(
    database_url: str,
    cutoff: str,
    include_dead: bool,
    batch: int,
    duty_cycle: float | None,
    out: Connection,
) -> None:
    """Child process: run `app.outbox.retention.purge()` and send back its report (or the error).

    It says when the purge itself starts (after the interpreter's start-up and imports), then the
    report with the CPU seconds the purge used.
    """
    try:
        report = asyncio.run(_purge(database_url, cutoff, include_dead, batch, duty_cycle, out))
        out.send({"report": report, "cpu_s": _cpu_seconds() - report.pop("cpu_at_start")})
    except BaseException:
        out.send({"error": traceback.format_exc()})
    finally:
        out.close()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _purge(
    database_url: str,
    cutoff: str,
    include_dead: bool,
    batch: int,
    duty_cycle: float | None,
    out: Connection,
) -> dict[str, Any]:
    from app.db import make_engine, make_sessionmaker
    from app.outbox.retention import DEFAULT_DUTY_CYCLE, purge

    engine = make_engine(database_url, pool_size=1, application_name="mmhub-purge")
    cpu_at_start = _cpu_seconds()
    out.send({"started": True})
    try:
        report = await purge(
            make_sessionmaker(engine),
            datetime.fromisoformat(cutoff),
            include_dead=include_dead,
            batch=batch,
            duty_cycle=DEFAULT_DUTY_CYCLE if duty_cycle is None else duty_cycle,
        )
    finally:
        await engine.dispose()
    return {**asdict(report), "cpu_at_start": cpu_at_start}


@dataclass
class PurgeFigures:
    events: int
    deliveries: int
    attempts: int
    batches: int
    seconds: float
    busy: int
    events_per_s: float
    rows_per_s: float
    batch_p50_ms: float
    batch_p99_ms: float
    batch_max_ms: float
    first_tenth_p50_ms: float
    last_tenth_p50_ms: float

    @classmethod
    def of(cls, report: dict[str, Any]) -> PurgeFigures:
        times = [t * 1e3 for t in report["batch_seconds"]]
        tenth = max(1, len(times) // 10)
        rows = report["events"] + report["deliveries"] + report["attempts"]
        seconds = report["seconds"]
        ordered = sorted(times)
        return cls(
            events=report["events"],
            deliveries=report["deliveries"],
            attempts=report["attempts"],
            batches=report["batches"],
            seconds=seconds,
            busy=report["busy"],
            events_per_s=report["events"] / seconds if seconds else 0.0,
            rows_per_s=rows / seconds if seconds else 0.0,
            batch_p50_ms=percentile(ordered, 50),
            batch_p99_ms=percentile(ordered, 99),
            batch_max_ms=ordered[-1] if ordered else math.nan,
            first_tenth_p50_ms=percentile(sorted(times[:tenth]), 50),
            last_tenth_p50_ms=percentile(sorted(times[-tenth:]), 50),
        )


async def wait_for_quiet(cpu: CpuMeter, budget: float) -> None:
    """Wait (up to `budget` seconds) for a second in which nothing but the benchmark runs."""
    deadline = time.monotonic() + budget
    cpu.lap()
    while True:
        await asyncio.sleep(1.0)
        other = cpu.lap()["other"]
        if other < NOISE_CORES:
            return
        if time.monotonic() >= deadline:
            say(f"  still {other:.2f} cores used by other processes: measuring anyway")
            return
        say(f"  other processes use {other:.2f} cores: waiting ...")


async def run_phases(
    args: argparse.Namespace, server: ApiServer, database_url: str, cutoff: str, pg_pid: int
) -> tuple[list[Window], dict[str, Any]]:
    """Warm-up, baseline, purge, after: one continuous open-loop ingest load."""
    loop = asyncio.get_running_loop()
    load = OpenLoop(
        server.port, Requests(body_templates(), server.port), args.rate, args.connections
    )
    runner = asyncio.create_task(load.run())
    cpu = CpuMeter(server.pid, pg_pid)
    tracker = asyncio.create_task(cpu.track())
    # (name, start, end, cores, db): the windows are read once every request has had its reply.
    spans: list[tuple[str, float, float, dict[str, float], dict[str, float]]] = []

    say(f"ingest at {args.rate:g}/s: warm-up {args.warmup:g} s, baseline {args.baseline:g} s")
    await asyncio.sleep(args.warmup)
    await wait_for_quiet(cpu, args.quiet_wait)
    db = await db_counters(database_url)
    start = loop.time()
    await asyncio.sleep(args.baseline)
    end = loop.time()
    cores = cpu.lap()
    spans.append(
        ("baseline (no purge)", start, end, cores, _delta(db, await db_counters(database_url)))
    )

    await wait_for_quiet(cpu, args.quiet_wait)
    db = await db_counters(database_url)
    say(f"purging everything received before {cutoff} (batch {args.batch}) ...")
    started = asyncio.Event()
    job = asyncio.create_task(
        purge_in_child(
            database_url, cutoff, args.include_dead, args.batch, args.duty_cycle, started
        )
    )
    signal_task = asyncio.create_task(started.wait())
    await asyncio.wait([job, signal_task], return_when=asyncio.FIRST_COMPLETED)
    signal_task.cancel()
    start = loop.time()
    cpu.lap()
    outcome = await job
    end = loop.time()
    cores = cpu.lap(outcome.get("cpu_s", 0.0))
    spans.append(("during purge", start, end, cores, _delta(db, await db_counters(database_url))))
    if "error" in outcome:
        load.stop()
        await runner
        raise RuntimeError("the purge failed:\n" + outcome["error"])

    say(f"purge done in {end - start:,.1f} s; ingest {args.after:g} s more")
    db = await db_counters(database_url)
    start = loop.time()
    await asyncio.sleep(args.after)
    end = loop.time()
    cores = cpu.lap()
    spans.append(("after purge", start, end, cores, _delta(db, await db_counters(database_url))))
    load.stop()
    await runner
    tracker.cancel()
    windows = []
    for name, first, last, used, activity in spans:
        windows.append(Window.of(name, load.samples, first, last))
        windows[-1].cores, windows[-1].db = used, activity
    warm = Window.of("all", load.samples, -math.inf, math.inf)

    # The next run, at once: nothing left to purge, but the rows just deleted are dead index
    # entries and heap tuples until (auto)vacuum gets to them, and its first batch walks past them.
    dead = await fetchval(
        database_url, "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'events'"
    )
    say(f"purging again at once ({dead:,} dead rows in events not vacuumed yet) ...")
    again = await purge_in_child(database_url, cutoff, args.include_dead, args.batch, 1.0)
    if "error" in again:
        raise RuntimeError("the second purge failed:\n" + again["error"])
    rerun = {"dead_events": dead, "seconds": again["report"]["seconds"]}
    rerun["events"] = again["report"]["events"]
    return windows, {
        "report": outcome["report"],
        "requests": warm.requests,
        "ok": warm.ok,
        "rerun": rerun,
    }


async def purge_in_child(
    database_url: str,
    cutoff: str,
    include_dead: bool,
    batch: int,
    duty_cycle: float | None,
    started: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Run `purge_process` in a fresh process (as `mmhub purge` would run) and wait for it;
    `started` is set when the purge itself begins."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=purge_process,
        args=(database_url, cutoff, include_dead, batch, duty_cycle, sender),
        name="mmhub-purge",
    )
    child.start()
    sender.close()
    try:
        while True:
            while not receiver.poll():
                if not child.is_alive() and not receiver.poll():
                    raise RuntimeError(f"the purge process exited with {child.exitcode}")
                await asyncio.sleep(0.01)
            outcome: dict[str, Any] = receiver.recv()
            if "started" not in outcome:
                break
            if started is not None:
                started.set()
    finally:
        await asyncio.to_thread(child.join, 30)
        receiver.close()
    return outcome


# --- report ---------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}"


def print_report(result: dict[str, Any]) -> None:
    load, purge, pg = result["load"], result["purge"], result["postgres"]
    print()
    print(f"mmhub purge benchmark  {result['when']}")
    print(
        f"  PostgreSQL {pg['server_version']} embedded, durable: fsync={pg['fsync']}, "
        f"synchronous_commit={pg['synchronous_commit']}, shared_buffers={pg['shared_buffers']}, "
        f"max_wal_size={pg['max_wal_size']}; {result['cpus']} CPUs"
    )
    print(
        f"  data: {load['rows']:,} events (1 delivered delivery + 1 attempt each) over 60 days, "
        f"{load['older']:,} older than 30 days"
    )
    sizes = ", ".join(f"{t} {mb / 1024:,.2f} GB" for t, mb in load["sizes_mb"].items())
    print(
        f"  load: insert {load['insert_s']:,.0f} s, indexes {load['index_s']:,.0f} s, "
        f"vacuum+analyze {load['vacuum_s']:,.0f} s; sizes (with indexes): {sizes}"
    )
    print()
    print(
        f"  purge (batch {result['batch']}, duty cycle {result['duty_cycle']:g}): "
        f"{purge['events']:,} events + "
        f"{purge['deliveries']:,} deliveries + {purge['attempts']:,} attempts "
        f"in {purge['seconds']:,.1f} s"
    )
    print(
        f"    {purge['events_per_s']:,.0f} events/s ({purge['rows_per_s']:,.0f} rows/s); "
        f"{purge['batches']:,} batches: p50 {_ms(purge['batch_p50_ms'])} ms, "
        f"p99 {_ms(purge['batch_p99_ms'])} ms, max {_ms(purge['batch_max_ms'])} ms; "
        f"p50 of the first tenth {_ms(purge['first_tenth_p50_ms'])} ms, "
        f"of the last tenth {_ms(purge['last_tenth_p50_ms'])} ms; busy (skipped) {purge['busy']}"
    )
    rerun = result["rerun"]
    print(
        f"    a second run right after: {rerun['seconds']:,.1f} s for {rerun['events']:,} events "
        f"(it walks past the {rerun['dead_events']:,} rows just deleted, not yet vacuumed)"
    )
    print()
    head = f"  {'ingest at ' + format(result['rate'], 'g') + '/s':<22}{'seconds':>9}{'200s':>9}"
    head += f"{'rate/s':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'failed':>8}"
    print(head + f"{'WAL MB':>8}{'read MB':>9}{'ckpts':>6}   cores api/pg/purge/other")
    for w in result["windows"]:
        cores = "/".join(
            f"{w['cores'].get(k, 0):.2f}" for k in ("api", "postgres", "purge", "other")
        )
        print(
            f"  {w['name']:<22}{w['seconds']:>9,.1f}{w['ok']:>9,}{w['rate']:>8,.0f}"
            f"{_ms(w['p50_ms']):>9}{_ms(w['p90_ms']):>9}{_ms(w['p99_ms']):>9}"
            f"{_ms(w['max_ms']):>9}{w['failed']:>8}{w['db']['wal_mb']:>8,.0f}"
            f"{w['db']['read_mb']:>9,.0f}{w['db']['checkpoints']:>6,.0f}   {cores}"
        )
    base, during = result["windows"][0], result["windows"][1]
    print()
    print(
        f"  ingest during purge vs baseline: p50 {_ms(during['p50_ms'])} / {_ms(base['p50_ms'])} ms, "
        f"p99 {_ms(during['p99_ms'])} / {_ms(base['p99_ms'])} ms "
        f"(x{during['p99_ms'] / base['p99_ms']:.2f})"
    )
    checks = result["checks"]
    print(
        f"  reconciled: {'yes' if result['reconciled'] else 'NO'} (purged {purge['events']:,} of "
        f"{load['older']:,} old events, {checks['old_left']:,} left; "
        f"{checks['ingested']:,} events ingested / {checks['ok']:,} 200 replies; "
        f"{checks['failed']} failed requests)"
    )
    if result["explain"]:
        print()
        print("  plans of one batch (rolled back):")
        for line in result["explain"]:
            print("  " + line)
    noisy = max(w["cores"].get("other", 0.0) for w in result["windows"])
    if noisy > NOISE_CORES:
        print(f"\n  WARNING: other processes used up to {noisy:.2f} cores: figures are noisy")
    print()


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.purge",
        description="Retention purge on a large table, and ingest latency while it runs.",
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="events loaded (10,000,000)")
    parser.add_argument(
        "--older-fraction", type=float, default=0.5, help="share older than 30 days (0.5)"
    )
    parser.add_argument("--batch", type=int, default=1000, help="events per purge batch (1000)")
    parser.add_argument("--include-dead", action="store_true", help="purge with include_dead")
    parser.add_argument(
        "--duty-cycle",
        type=float,
        help="share of the time the purge spends in batches (app.outbox.retention's default)",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="ingest requests/s (200)")
    parser.add_argument("--connections", type=int, default=32, help="client connections (32)")
    parser.add_argument("--warmup", type=float, default=3.0, help="ingest warm-up seconds (3)")
    parser.add_argument("--baseline", type=float, default=20.0, help="baseline seconds (20)")
    parser.add_argument("--after", type=float, default=10.0, help="seconds after the purge (10)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="seconds to wait before baseline and purge for other processes to go quiet (30)",
    )
    parser.add_argument("--explain", action="store_true", help="print the plans of one batch")
    parser.add_argument("--json", action="store_true", help="also write bench-results/purge.json")
    args = parser.parse_args(argv)
    if args.rows < 1 or not 0 < args.older_fraction < 1 or args.batch < 1 or args.rate <= 0:
        parser.error("--rows, --batch, --rate must be positive; 0 < --older-fraction < 1")
    if args.duty_cycle is not None and not 0 < args.duty_cycle <= 1:
        parser.error("--duty-cycle must be in (0, 1]")
    return args


def _postgres_info(database_url: str) -> tuple[dict[str, str], int]:
    from benchmarks.common import query

    names = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "max_wal_size")
    info = {n: str(query(database_url, f"SHOW {n}")[0][0]) for n in names}
    # The postmaster: the parent of any server process, e.g. the checkpointer.
    sql = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
    pid = int(query(database_url, sql)[0][0])
    return info, psutil.Process(pid).ppid()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM stops the run like Ctrl-C: servers and the database are stopped in order.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    say("starting PostgreSQL 16 (fsync on) and Valkey in a throwaway folder ...")
    try:
        with embedded_database() as (database_url, redis_url):
            pg_info, pg_pid = _postgres_info(database_url)
            say(f"loading {args.rows:,} events ...")
            stats = asyncio.run(bulk_load(database_url, args.rows, args.older_fraction))
            plans = []
            if args.explain:
                plans = asyncio.run(
                    explain(database_url, datetime.fromisoformat(stats.cutoff), args.batch)
                )
            server = ApiServer(database_url, redis_url)
            try:
                server.start()
                say(f"API server pid {server.pid} on {server.base_url}")
                windows, outcome = asyncio.run(
                    run_phases(args, server, database_url, stats.cutoff, pg_pid)
                )
            except BaseException:
                if tail := server.tail():
                    say("--- API server log (tail) ---\n" + tail)
                raise
            finally:
                server.stop()
                server.log.unlink(missing_ok=True)
            result = assemble(args, database_url, stats, pg_info, windows, outcome, plans)
    except KeyboardInterrupt:
        say("interrupted: servers stopped")
        return 130
    print_report(result)
    if args.json:
        out = ROOT / "bench-results" / "purge.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        say(f"wrote {out}")
    return 0 if result["reconciled"] else 2


def assemble(
    args: argparse.Namespace,
    database_url: str,
    stats: LoadStats,
    pg_info: dict[str, str],
    windows: list[Window],
    outcome: dict[str, Any],
    plans: list[str],
) -> dict[str, Any]:
    from app.outbox.retention import DEFAULT_DUTY_CYCLE

    report = outcome["report"]
    figures = PurgeFigures.of(report)
    count = "SELECT count(*) FROM events WHERE received_at "
    old_left = asyncio.run(fetchval(database_url, count + "< $1", stats.cutoff_at))
    ingested = asyncio.run(fetchval(database_url, count + "> $1", stats.now_at))
    failed = outcome["requests"] - outcome["ok"]
    checks = {"old_left": old_left, "ingested": ingested, "ok": outcome["ok"], "failed": failed}
    reconciled = (
        figures.events == stats.older
        and figures.deliveries == stats.older
        and figures.attempts == stats.older
        and old_left == 0
        and ingested == outcome["ok"]
        and failed == 0
    )
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "postgres": pg_info,
        "rate": args.rate,
        "batch": args.batch,
        "duty_cycle": DEFAULT_DUTY_CYCLE if args.duty_cycle is None else args.duty_cycle,
        "include_dead": args.include_dead,
        "load": asdict(stats),
        "purge": asdict(figures),
        "windows": [asdict(w) for w in windows],
        "checks": checks,
        "rerun": outcome["rerun"],
        "reconciled": reconciled,
        "batch_ms": [round(t * 1e3, 2) for t in report["batch_seconds"]],
        "explain": plans,
    }


if __name__ == "__main__":
    sys.exit(main())
