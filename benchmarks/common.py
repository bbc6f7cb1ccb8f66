"""What the benchmarks share: the hub configuration, the fixture bodies, the servers they run.

`bench_app()` is the uvicorn factory the benchmark serves in its own process: the real app from
`create_app()` with the fixture portals and routes, plus `POST /bench/bare`, a route that only reads
the body and returns a constant small JSON (the yardstick the ingest rate is compared with).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

ROOT = Path(__file__).resolve().parent.parent
# The wire fixtures live in tests/fixtures (MMHUB_FIXTURES overrides the folder).
FIXTURES = Path(os.environ.get("MMHUB_FIXTURES", ROOT / "tests" / "fixtures"))
BARE_PATH = "/bench/bare"
DURABLE_PATH = "/bench/durable"
INGEST_PATH = "/webhooks/bitrix24"
FORM = "application/x-www-form-urlencoded"

# The ingest tests' configuration (tests/hub_config.py), copied so the benchmark does not depend on
# the test tree: the fixture portals with their tokens; deals go to two targets, the rest to one.
PORTALS = [
    {
        "member_id": "010b6886ebc205e43ae65000ee00addb",
        "application_token": "3c6c9248ec54af6bea1159b43ee0ab32",
    },
    {
        "member_id": "d897063e1ce7c5eb9f04b9751eef5915",
        "domain": "some-domain.bitrix24.ru",
        "application_token": "jvh9y1ulvt2m6k5or90v9mg8nn32ozas",
    },
    {
        "member_id": "995c2cbaf3edb993c1d640820f802149",
        "application_token": "0zhkhllfzn5z3dfuulqqerwr3wduyx42",
    },
    # Matched by domain only: the portal's member_id is not configured.
    {"domain": "some-domain.bitrix24.com", "application_token": "51856fefc120afa4b628cc82d3935cce"},
]
HUB_CONFIG: dict[str, Any] = {
    "sources": {
        "bitrix24": {"portals": PORTALS},
        "onec": {
            "auth": {"type": "basic", "username": "exchange", "password": "s3cret-1c-password"}
        },
    },
    "targets": {
        "erp": {"kind": "onec", "url": "http://127.0.0.1:9/erp", "allow_private": True},
        "ww": {"kind": "walking_warehouse", "url": "http://127.0.0.1:9/ww", "allow_private": True},
        "crm": {
            "kind": "bitrix24",
            "webhook_url": "http://127.0.0.1:9/rest/1/code/",
            "allow_private": True,
        },
        "audit": {"kind": "http", "url": "http://127.0.0.1:9/audit", "allow_private": True},
    },
    "routes": [
        {
            "name": "deals-to-erp",
            "from": {"source": "bitrix24", "events": ["ONCRMDEAL*"]},
            "to": ["erp"],
        },
        {"name": "everything-to-audit", "from": {"source": "bitrix24"}, "to": ["audit"]},
        {
            "name": "orders-to-ww-and-crm",
            "from": {"source": "onec", "events": ["Документ.ЗаказКлиента.*"]},
            "to": [
                "ww",
                {
                    "target": "crm",
                    "method": "crm.timeline.comment.add",
                    "params": {"fields": {"ENTITY_TYPE": "deal", "COMMENT": "{{ data.number }}"}},
                },
            ],
        },
        {"name": "1c-to-audit", "from": {"source": "onec"}, "to": ["audit"]},
    ],
}

# Form keys whose values make each request a new event: the record id and the timestamp.
_ID_KEYS = {"data[FIELDS][ID]", "data[FIELDS_AFTER][ID]", "data[FIELDS_BEFORE][ID]", "data[ID]"}
_TS_KEY = "ts"
ID, TS = 1, 2  # slots in a template


@dataclass(frozen=True)
class BodyTemplate:
    """A fixture body cut around its record id and `ts`, so each request is a new event."""

    name: str
    event: str
    parts: tuple[bytes | int, ...]  # literal bytes, ID or TS

    def render(self, record_id: int, ts: int) -> bytes:
        values = {ID: b"%d" % record_id, TS: b"%d" % ts}
        return b"".join(values[p] if isinstance(p, int) else p for p in self.parts)


def body_templates(folder: Path | None = None) -> list[BodyTemplate]:
    """Every `bitrix24/*.form` fixture as a template (raw bytes kept, only two values replaced)."""
    folder = folder or FIXTURES / "bitrix24"
    templates = []
    for path in sorted(folder.glob("*.form")):
        raw = path.read_bytes().strip()
        parts: list[bytes | int] = []
        literal = b""
        event = ""
        slots = set()
        for index, pair in enumerate(raw.split(b"&")):
            key, _, value = pair.partition(b"=")
            name = urllib.parse.unquote_plus(key.decode("ascii"))
            sep = b"&" if index else b""
            slot = ID if name in _ID_KEYS else TS if name == _TS_KEY else None
            if name == "event":
                event = urllib.parse.unquote_plus(value.decode("ascii"))
            if slot is None or slot in slots:
                literal += sep + pair
                continue
            slots.add(slot)
            parts += [literal + sep + key + b"=", slot]
            literal = b""
        parts.append(literal)
        if slots != {ID, TS}:
            raise ValueError(f"{path}: no record id or no ts to vary")
        templates.append(BodyTemplate(path.stem, event, tuple(p for p in parts if p != b"")))
    if not templates:
        raise FileNotFoundError(f"no Bitrix24 fixtures (*.form) in {folder}")
    return templates


def expected_deliveries(event_type: str) -> int:
    """How many deliveries the benchmark's routes plan for one Bitrix24 event of this type."""
    from app.hubconfig import HubConfig
    from app.ingest.routing import plan_deliveries

    return len(plan_deliveries(HubConfig.model_validate(HUB_CONFIG), "bitrix24", event_type))


# --- the app the benchmark serves -----------------------------------------------------------------


async def bare(request: Request) -> dict[str, str]:
    """The yardstick: read the body, answer a constant small JSON, touch nothing else."""
    await request.body()
    return {"status": "accepted"}


def minimal_app() -> FastAPI:
    """uvicorn factory: the minimal FastAPI app, the other yardstick: no middleware, no hub, only
    `POST /bench/bare` (the same handler)."""
    app = FastAPI()
    app.add_api_route(BARE_PATH, bare, methods=["POST"], include_in_schema=False)
    return app


def durable_app() -> FastAPI:
    """uvicorn factory: the plainest durable webhook receiver, a yardstick for what the hub adds.

    No middleware, no auth, no checks, no log, no trace: it reads the body, parses it with the
    standard library's `parse_qsl` and replies once the fields are committed as one jsonb row, the
    requests that arrive while a commit runs sharing the next one (the hub's group commit, without
    its deliveries, keys and spool). Against it, ingest ÷ durable app is what the hub's own work
    costs beyond making a webhook durable on this machine.
    """
    import asyncpg
    import orjson

    url = os.environ["MMHUB_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    waiting: asyncio.Queue[tuple[str, asyncio.Future[None]]] = asyncio.Queue()

    async def commit_forever(conn: Any) -> None:
        while True:
            batch = [await waiting.get()]
            while not waiting.empty():
                batch.append(waiting.get_nowait())
            try:
                sql = "INSERT INTO bench_durable (fields) SELECT * FROM unnest($1::jsonb[])"
                await conn.execute(sql, [fields for fields, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    done.set_exception(exc)
            else:
                for _, done in batch:
                    done.set_result(None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conn = await asyncpg.connect(url)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_durable (id bigserial PRIMARY KEY, fields jsonb)"
        )
        committer = asyncio.create_task(commit_forever(conn))
        yield
        committer.cancel()
        await conn.close()

    async def durable(request: Request) -> dict[str, str]:
        fields = dict(urllib.parse.parse_qsl((await request.body()).decode()))
        done = asyncio.get_running_loop().create_future()
        waiting.put_nowait((orjson.dumps(fields).decode(), done))
        await done
        return {"status": "accepted"}

    app = FastAPI(lifespan=lifespan)
    app.add_api_route(DURABLE_PATH, durable, methods=["POST"], include_in_schema=False)
    return app


def bench_app() -> FastAPI:
    """uvicorn factory: the real app (settings from MMHUB_* variables) plus `POST /bench/bare`."""
    from app.hubconfig import HubConfig
    from app.logs import setup_logging
    from app.main import create_app
    from app.settings import Settings

    settings = Settings(hub=HubConfig.model_validate(HUB_CONFIG))
    # As `mmhub api` runs: JSON log lines at MMHUB_LOG_LEVEL (INFO), one per event accepted.
    setup_logging(settings.log_level)
    app = create_app(settings)
    app.add_api_route(BARE_PATH, bare, methods=["POST"], include_in_schema=False)
    # First in line, as the webhook is: at the end FastAPI matched it against every admin and
    # console route first (~200 us per request), which is not what the hub's middleware costs.
    app.router.routes.insert(0, app.router.routes.pop())
    return app


# --- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def embedded_database() -> Iterator[tuple[str, str]]:
    """Durable (fsync on) embedded PostgreSQL 16 and Valkey in a throwaway folder, migrated."""
    from app.embedded import EmbeddedServers, remove_state
    from app.migrate import upgrade

    state = Path(tempfile.mkdtemp(prefix="mmhub-bench-"))
    state.chmod(0o755)  # as root, PostgreSQL runs as its own system user and must reach pgdata
    servers = EmbeddedServers(state, durable=True)
    try:
        runtime, _ = servers.start()
        upgrade(runtime.database_url)
        yield runtime.database_url, runtime.redis_url
    finally:
        servers.stop()
        remove_state(state)


class ApiServer:
    """`bench_app()` (or another factory) under uvicorn in its own process: one worker, uvloop,
    httptools, quiet."""

    def __init__(
        self,
        database_url: str,
        redis_url: str,
        env: dict[str, str] | None = None,
        factory: str = "benchmarks.common:bench_app",
        ready_path: str = "/readyz",
    ):
        self.factory, self.ready_path = factory, ready_path
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="mmhub-bench-api-", suffix=".log")[1])
        self._env = {
            **os.environ,
            **(env or {}),
            "MMHUB_DATABASE_URL": database_url,
            "MMHUB_REDIS_URL": redis_url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "uvicorn", self.factory, "--factory"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        cmd += ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]
        cmd += ["--no-access-log", "--timeout-graceful-shutdown", "10"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop the server in order
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the API server exited with {self.process.returncode}:\n{self.tail()}"
                )
            url = f"{self.base_url}{self.ready_path}"
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2) as reply,  # noqa: S310 - our own server
            ):
                if reply.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the API server was not ready within {timeout:.0f}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


# --- the database, as the benchmark checks it ------------------------------------------------------


def _dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _fetch(database_url: str, query: str) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(_dsn(database_url))
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


def query(database_url: str, sql: str) -> list[Any]:
    """Run one query from synchronous code (the benchmark's own short-lived connection)."""
    import asyncio

    return asyncio.run(_fetch(database_url, sql))


def count_events(database_url: str) -> int:
    return int(query(database_url, "SELECT count(*) FROM events")[0][0])


def count_durable(database_url: str) -> int:
    """Rows `durable_app()` committed (0 before it first ran)."""
    sql = "SELECT count(*) FROM bench_durable"
    if not query(database_url, "SELECT to_regclass('bench_durable')")[0][0]:
        return 0
    return int(query(database_url, sql)[0][0])


async def due_times(start: float, rate: float, count: int) -> AsyncIterator[float]:
    """An open-loop sender's schedule: `count` moments `1 / rate` apart from `start` (on
    `time.perf_counter`), each yielded once it has come, whatever the replies do. One that is
    already late is yielded at once; timers have millisecond resolution, so the sender sleeps at
    least 1 ms at a time and never spins."""
    for index in range(count):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(max(delay, 0.001))
        yield due
