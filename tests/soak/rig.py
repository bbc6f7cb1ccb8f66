"""The soak's rig: embedded servers, two recording sinks, and the hub's processes, scaled out
as production runs them (two API processes, two relays, two workers)."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import yaml
from aiohttp import web

from app.embedded import EmbeddedServers, RunningServers
from app.migrate import upgrade
from tests.fake_target import FakeTarget, Reply
from tests.hub_config import HUB_CONFIG
from tests.roles import Processes

OPERATOR_TOKEN = "soak-operator-token"


@dataclass(frozen=True)
class Receipt:
    """One request a sink received, and what it answered."""

    at: float  # time.monotonic()
    status: int
    event_id: str
    subject: str
    delivery_id: str


class RecordingSink(FakeTarget):
    """A fake target that notes every CloudEvent it receives with the status it answered."""

    def __init__(self) -> None:
        super().__init__()
        self.receipts: list[Receipt] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        event = orjson.loads(await request.read())
        answer = self.default
        key = request.headers.get("idempotency-key", "")
        self.receipts.append(
            Receipt(time.monotonic(), answer.status, event["id"], event["subject"], key)
        )
        return answer.response()

    def fail_for(self, seconds: float) -> asyncio.Task[None]:
        """Answer 503 for a while (in the background)."""

        async def window() -> None:
            self.default = Reply(status=503, body={"error": "maintenance"})
            await asyncio.sleep(seconds)
            self.default = Reply()

        return asyncio.create_task(window())


def hub_config(erp: str, audit: str) -> dict[str, Any]:
    """Deals go to `erp` (a 1C target) and `audit`; 1C orders to `audit`. Short retries."""
    config = copy.deepcopy(HUB_CONFIG)
    digest = hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()
    config["admin"] = {"tokens": [{"name": "soak", "role": "operator", "token_sha256": digest}]}
    config["targets"] = {
        "erp": {
            "kind": "onec",
            "url": f"{erp}/erp",
            "allow_private": True,
            "circuit_breaker": {"open_for": "3s"},
        },
        "audit": {"kind": "http", "url": f"{audit}/audit", "allow_private": True},
    }
    config["routes"] = [
        {
            "name": "deals",
            "from": {"source": "bitrix24", "events": ["ONCRMDEAL*"]},
            "to": ["erp", "audit"],
        },
        {"name": "orders", "from": {"source": "onec"}, "to": ["audit"]},
    ]
    config["retry"] = {"schedule": ["1s", "2s", *["3s"] * 30], "timeout": "5s"}
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Rig:
    """Everything the soak runs, and the handles to break it."""

    state: Path
    durable: bool
    visibility_timeout: str
    servers: EmbeddedServers = field(init=False)
    runtime: RunningServers = field(init=False)
    erp: RecordingSink = field(default_factory=RecordingSink)
    audit: RecordingSink = field(default_factory=RecordingSink)
    apis: list[str] = field(default_factory=list)
    processes: Processes = field(init=False)
    roles: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    killed: set[int] = field(default_factory=set)
    exited: list[str] = field(default_factory=list)  # processes that ended on their own

    async def start(self) -> None:
        self.servers = EmbeddedServers(self.state, durable=self.durable)
        self.runtime, _ = await asyncio.to_thread(self.servers.start)
        await asyncio.to_thread(upgrade, self.runtime.database_url)
        await self.erp.start()
        await self.audit.start()
        config = self.state / "mmhub.yaml"
        config.write_text(yaml.safe_dump(hub_config(self.erp.url, self.audit.url)), "utf-8")
        (self.state / "logs").mkdir(exist_ok=True)
        urls = (self.runtime.database_url, self.runtime.redis_url)
        self.processes = Processes(
            urls,
            config,
            logs=self.state / "logs",
            MMHUB_VISIBILITY_TIMEOUT=self.visibility_timeout,
            MMHUB_RELAY_POLL_INTERVAL="500ms",
            MMHUB_SPOOL_DIR=str(self.state / "spool"),
        )
        for _ in range(2):
            port = free_port()
            self.roles.setdefault("api", []).append(
                self.processes.start("api", "--port", str(port))
            )
            self.apis.append(f"http://127.0.0.1:{port}")
            self.start_role("relay")
            self.start_role("worker")
        for api in self.apis:
            await asyncio.to_thread(_wait_healthy, api)

    def start_role(self, role: str) -> None:
        self.roles.setdefault(role, []).append(self.processes.start(role))

    def kill(self, role: str) -> None:
        """SIGKILL the oldest live process of a role and start a new one in its place."""
        victim = next(p for p in self.roles[role] if p.poll() is None)
        self.killed.add(victim.pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.start_role(role)

    async def supervise(self) -> None:
        """Restart a process that ended on its own, as systemd or Kubernetes would; note it."""
        while True:
            await asyncio.sleep(1)
            for role in ("relay", "worker"):
                for process in list(self.roles.get(role, [])):
                    if process.poll() is not None and process.pid not in self.killed:
                        self.killed.add(process.pid)
                        self.exited.append(f"{role}[{process.pid}] exit {process.returncode}")
                        self.start_role(role)

    async def restart_valkey(self, down_for: float) -> None:
        """SIGKILL Valkey and start it again on the same port (empty: it keeps no data)."""
        pidfile = self.state / "valkey.pid"
        old = psutil.Process(int(pidfile.read_text()))
        # As app/embedded.py starts it (its process title hides the arguments).
        command = [old.exe(), "--bind", "127.0.0.1", "--port", str(self.runtime.valkey_port)]
        command += ["--dir", str(self.state / "valkey"), "--save", "", "--appendonly", "no"]
        old.kill()
        old.wait(10)
        await asyncio.sleep(down_for)
        await asyncio.to_thread(self._respawn_valkey, command)

    def _respawn_valkey(self, command: list[str]) -> None:
        log = open(self.state / "valkey" / "valkey.log", "ab")  # noqa: SIM115 - the child keeps it
        new = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        (self.state / "valkey.pid").write_text(str(new.pid))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.runtime.valkey_port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        runtime = json.loads(self.servers.runtime_file.read_text())
        self.servers.runtime_file.write_text(json.dumps({**runtime, "valkey_pid": new.pid}))

    async def stop_postgres_for(self, seconds: float) -> None:
        await asyncio.to_thread(self.servers.stop_postgres)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(self.servers.start_postgres, self.runtime.pg_port)

    def rss(self) -> dict[str, int]:
        """Resident memory of every live hub process, in bytes, by role and pid."""
        sizes = {}
        for role, processes in self.roles.items():
            for process in processes:
                if process.poll() is None:
                    try:
                        sizes[f"{role}[{process.pid}]"] = (
                            psutil.Process(process.pid).memory_info().rss
                        )
                    except psutil.Error:
                        continue
        return sizes

    async def stop(self) -> None:
        await asyncio.to_thread(self.processes.stop_all)
        await self.erp.stop()
        await self.audit.stop()
        await asyncio.to_thread(self.servers.stop)


def _wait_healthy(api: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/healthz", timeout=1) as reply:  # noqa: S310
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{api} did not come up within {seconds}s")
