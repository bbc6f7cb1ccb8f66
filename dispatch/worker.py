"""`mmhub worker`: an RQ worker that runs drain jobs in its own long-lived process.

We use RQ's SimpleWorker on purpose. The default Worker forks a process per job, which throws away
the database pool, the HTTP keep-alive connections, the event loop and in-process metrics, and caps
a worker near 57 jobs/s on this class of machine; SimpleWorker runs jobs in this process, where
`dispatch.runtime` keeps all of them for the worker's life. A crash in a job cannot corrupt others:
jobs share nothing but those pools, and every delivery's state lives in PostgreSQL.
"""

from __future__ import annotations

import logging

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue, SimpleWorker, worker_registration
from rq.job import Job

from app.settings import Settings
from dispatch import runtime
from dispatch.telemetry import declare_targets

log = logging.getLogger(__name__)


class HubWorker(SimpleWorker):
    """SimpleWorker whose jobs share this process's dispatch runtime, and which outlives Redis.

    RQ waits up to a minute between reconnection attempts (exponential backoff) and never
    registers again once Redis has lost its registration (a restart without persistence, a
    FLUSHALL): the worker took jobs again only by chance and monitoring saw none. Here it retries
    every second (a local Redis costs nothing to ask) and registers again at its next heartbeat,
    which comes every WORKER_TTL - 15 seconds while idle.

    RQ also quits its work loop when Redis goes away between two jobs (checking for `rq suspend`,
    its state, its heartbeat) or while it books a job's end (`make soak` lost a worker that way in
    most runs). None of that bookkeeping matters to deliveries, whose state is in PostgreSQL (the
    relay enqueues a target's drain again), so here a lost connection there is logged and the loop
    goes on to its dequeue, which waits for Redis to come back.
    """

    max_connection_wait_time = 1.0

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        try:
            if not self.connection.sismember(self.redis_workers_keys, self.key):
                with self.connection.pipeline() as registering:
                    registering.hset(self.key, mapping=self.serialize())
                    worker_registration.register(self, registering)
                    registering.execute()
                log.info("worker %s registered again (Redis had lost it)", self.name)
            super().heartbeat(timeout, pipeline)
        except RedisConnectionError as exc:
            log.warning("worker %s: no heartbeat, Redis is unavailable: %s", self.name, exc)

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except RedisConnectionError as exc:  # not suspended as far as we know; dequeue waits
            log.warning("worker %s: cannot check for suspension: %s", self.name, exc)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        try:
            super().set_state(state, pipeline)
        except RedisConnectionError as exc:  # a pipeline raises at execute(), not here
            self._state = state
            log.warning("worker %s: state %s not recorded: %s", self.name, state, exc)

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        except RedisConnectionError as exc:
            log.warning(
                "worker %s: Redis went away while job %s ended; its deliveries are in PostgreSQL "
                "and the relay enqueues their target again: %s",
                self.name,
                job.id,
                exc,
            )


# Seconds: RQ heartbeats an idle worker every WORKER_TTL - 15 (its default 420 meant 405 s).
WORKER_TTL = 20


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Take drain jobs until stopped (SIGINT/SIGTERM finish the current job first)."""
    runner = runtime.install(settings)
    declare_targets(sorted(settings.hub.targets))
    connection = Redis.from_url(settings.require_redis_url)
    worker = HubWorker(
        [Queue(settings.queue_name, connection=connection)],
        connection=connection,
        worker_ttl=WORKER_TTL,
    )
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
    finally:
        runner.close()
