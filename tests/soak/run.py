"""The soak run: events at a fixed rate over a set of subjects, alternating between the two API
processes, while a schedule of faults plays; then what the sinks received is checked against what
the hub accepted."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis
from sqlalchemy import text

from app.db import make_engine
from app.embedded import remove_state
from tests.dispatch.harness import deal
from tests.hub_config import ONEC_PASSWORD, ONEC_USER
from tests.soak.report import Report, Sent, analyse
from tests.soak.rig import OPERATOR_TOKEN, Rig

log = logging.getLogger("soak")
B24_SUBJECTS = 50  # the rest of the subjects are 1C orders
BASIC = "Basic " + base64.b64encode(f"{ONEC_USER}:{ONEC_PASSWORD}".encode()).decode()


@dataclass(frozen=True)
class Plan:
    """How much load, and which faults when (fractions of the load's duration)."""

    events: int = 5000
    rate: float = 50.0  # events per second
    subjects: int = 60
    outage: float = 30.0  # seconds PostgreSQL stays stopped
    pauses: int = 10
    target_503: float = 8.0  # seconds the erp target answers 503
    kill_worker: bool = True  # known stall until the fix on the other branch is merged
    restart_valkey: bool = True  # idem
    visibility_timeout: str = "10s"
    settle: float = 300.0  # seconds to wait for the last deliveries after the load
    durable: bool = True

    @property
    def duration(self) -> float:
        return self.events / self.rate


@dataclass
class Soak:
    plan: Plan
    rig: Rig
    sent: list[Sent] = field(default_factory=list)
    admin_statuses: list[int] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    excused: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    start: float = 0.0

    def excuse(self, targets: tuple[str, ...], seconds: float) -> None:
        """Deliveries may stop from now for `seconds`, by design (a stall not to count)."""
        now = time.monotonic()
        for target in targets:
            self.excused.setdefault(target, []).append((now, now + seconds))

    def note(self, what: str) -> None:
        print(f"  t={time.monotonic() - self.start:6.1f}s  {what}", flush=True)

    async def at(self, fraction: float) -> None:
        await asyncio.sleep(max(0.0, self.start + fraction * self.plan.duration - time.monotonic()))

    async def load(self, http: aiohttp.ClientSession) -> None:
        """One event every 1/rate seconds, alternating between the API processes; an event waits
        for its subject's previous reply (so acceptance order within a subject is well defined)."""
        chains: dict[int, asyncio.Task[None]] = {}
        refs = {k: str(uuid.uuid4()) for k in range(B24_SUBJECTS, self.plan.subjects)}
        for i in range(self.plan.events):
            await asyncio.sleep(max(0.0, self.start + i / self.plan.rate - time.monotonic()))
            subject = i % self.plan.subjects
            previous = chains.get(subject)
            # Round by round over the subjects: a subject's successive events alternate processes.
            api = self.rig.apis[(i // self.plan.subjects) % len(self.rig.apis)]
            chains[subject] = asyncio.create_task(
                self.send(http, i, subject, refs.get(subject), api, previous)
            )
        await asyncio.gather(*chains.values())

    async def send(
        self,
        http: aiohttp.ClientSession,
        i: int,
        subject: int,
        ref: str | None,
        api: str,
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None:
            await previous  # acceptance order within a subject is the order sent
        if ref is None:
            url, body = f"{api}/webhooks/bitrix24", deal(100_000 + subject, ts=1_700_000_000 + i)
            headers = {"content-type": "application/x-www-form-urlencoded"}
            targets = ("erp", "audit")
        else:
            envelope = {"type": "Документ.ЗаказКлиента", "event": "updated", "ref": ref}
            envelope |= {"data_version": str(i), "data": {"number": i}}
            url, body = f"{api}/webhooks/1c", json.dumps(envelope).encode()
            headers = {"content-type": "application/json", "authorization": BASIC}
            targets = ("audit",)
        status, event_id = 0, None
        try:
            async with http.post(url, data=body, headers=headers) as reply:
                status = reply.status
                if status in (200, 202):
                    event_id = (await reply.json())["event_id"]
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.note(f"event {i}: {type(exc).__name__}")
        self.sent.append(Sent(i, f"s{subject}", targets, status, event_id, time.monotonic()))

    async def faults(self, http: aiohttp.ClientSession) -> None:
        plan, rig = self.plan, self.rig
        steps: list[tuple[float, str, Callable[[], Awaitable[Any]]]] = []
        if plan.kill_worker:
            steps.append((0.08, "SIGKILL a worker (a new one starts)", _now(rig.kill, "worker")))
        steps.append((0.14, "SIGKILL a relay (a new one starts)", _now(rig.kill, "relay")))
        if plan.restart_valkey:
            steps.append((0.20, "kill Valkey, restart it 2 s later", lambda: rig.restart_valkey(2)))
        steps.append((0.28, "FLUSHALL", self.flushall))
        steps.append((0.34, f"stop PostgreSQL for {plan.outage:.0f} s", self.outage))
        steps.append(
            (0.34 + plan.outage / plan.duration + 0.04, "erp answers 503", self.target_503)
        )
        steps.append(
            (0.80, f"pause/resume erp {plan.pauses} times", lambda: self.pause_resume(http))
        )
        for fraction, what, action in steps:
            await self.at(fraction)
            self.note(what)
            await action()
        self.note("fault schedule done")

    async def flushall(self) -> None:
        redis = Redis.from_url(self.rig.runtime.redis_url)
        await redis.flushall()
        await redis.aclose()

    async def outage(self) -> None:
        self.excuse(("erp", "audit"), self.plan.outage + 5)
        await self.rig.stop_postgres_for(self.plan.outage)

    async def target_503(self) -> None:
        self.excuse(("erp",), self.plan.target_503 + 5)
        await self.rig.erp.fail_for(self.plan.target_503)

    async def pause_resume(self, http: aiohttp.ClientSession) -> None:
        auth = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
        for n in range(self.plan.pauses):
            api = self.rig.apis[n % len(self.rig.apis)]
            for action in ("pause", "resume"):
                url = f"{api}/admin/v1/targets/erp/{action}"
                try:
                    async with http.post(url, json={"reason": "soak"}, headers=auth) as reply:
                        self.admin_statuses.append(reply.status)
                        if reply.status >= 500:
                            self.note(f"{action} erp: {reply.status} {await reply.text()}")
                except aiohttp.ClientError as exc:
                    self.note(f"{action} erp: {type(exc).__name__}")
                    self.admin_statuses.append(0)
                await asyncio.sleep(0.3)

    async def sample_connections(self) -> None:
        engine = make_engine(self.rig.runtime.database_url, pool_size=1, application_name="soak")
        query = text(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name <> 'soak'"
        )
        try:
            while True:
                try:
                    async with engine.connect() as conn:
                        self.connections.append(int((await conn.execute(query)).scalar_one()))
                except Exception:  # noqa: S110 - PostgreSQL is stopped on purpose for a while
                    pass
                await asyncio.sleep(1)
        finally:
            await engine.dispose()

    async def settle(self) -> None:
        """Wait until every accepted event reached each of its targets (bounded by plan.settle)."""
        deadline = time.monotonic() + self.plan.settle
        while time.monotonic() < deadline:
            if not analyse(self.sent, self.rig, final=False).lost:
                return
            await asyncio.sleep(1)


def _now(function: Callable[..., None], *args: Any) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        await asyncio.to_thread(function, *args)

    return call


async def run(plan: Plan, state: Path | None = None, *, keep: bool = False) -> Report:
    """Run the soak on a throwaway state directory (kept with `keep`: the processes' logs are in
    its logs/) and return what it found."""
    state = state or Path(tempfile.mkdtemp(prefix="mmhub-soak-"))
    state.chmod(0o755)
    rig = Rig(state, plan.durable, plan.visibility_timeout)
    try:
        await rig.start()
        soak = Soak(plan, rig)
        rss_start = rig.rss()
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            soak.start = time.monotonic()
            sampler = asyncio.create_task(soak.sample_connections())
            supervisor = asyncio.create_task(rig.supervise())
            print(f"soak: {plan.events} events at {plan.rate}/s over {plan.subjects} subjects")
            await asyncio.gather(soak.load(http), soak.faults(http))
            soak.note("load done; waiting for the last deliveries")
            await soak.settle()
            sampler.cancel()
            supervisor.cancel()
        report = analyse(soak.sent, rig, final=True, excused=soak.excused)
        report.rss = (rss_start, rig.rss())
        report.connections = soak.connections
        report.admin_statuses = soak.admin_statuses
        report.exited = rig.exited
        return report
    finally:
        await rig.stop()
        if keep:
            print(f"state and logs kept in {state}")
        else:
            remove_state(state)
