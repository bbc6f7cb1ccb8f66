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
from rq import Queue, SimpleWorker

from app.settings import Settings
from dispatch import runtime
from dispatch.telemetry import declare_targets

log = logging.getLogger(__name__)


class HubWorker(SimpleWorker):
    """SimpleWorker whose jobs share this process's dispatch runtime."""


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Take drain jobs until stopped (SIGINT/SIGTERM finish the current job first)."""
    runner = runtime.install(settings)
    declare_targets(sorted(settings.hub.targets))
    connection = Redis.from_url(settings.require_redis_url)
    worker = HubWorker([Queue(settings.queue_name, connection=connection)], connection=connection)
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
    finally:
        runner.close()
