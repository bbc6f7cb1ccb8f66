"""pytest plugin for `make mutation`: every pytest session takes a database slot of its own.

mutmut runs each mutant's tests in a forked pytest session, several at a time, and the suite
truncates the tables and flushes Redis per test, so two sessions must never share a database.
`tests.mutation.run` starts one PostgreSQL and one Valkey, prepares one migrated database and one
Redis db index per slot, and lists them in MMHUB_MUTATION_SLOTS. A session locks a slot's lock
file (the lock goes when the session ends or its process dies) and points
MMHUB_TEST_DATABASE_URL / MMHUB_TEST_REDIS_URL at it; tests/conftest.py then uses those servers
instead of starting its own, which would cost seconds per mutant. Without MMHUB_MUTATION_SLOTS
this plugin does nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time

import pytest

SLOTS_ENV = "MMHUB_MUTATION_SLOTS"
_URL_ENV = ("MMHUB_TEST_DATABASE_URL", "MMHUB_TEST_REDIS_URL")
_held: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    raw = os.environ.get(SLOTS_ENV)
    if not raw:
        return
    _clear_caches()
    slots: list[dict[str, str]] = json.loads(raw)
    while True:  # a slot frees up as soon as the previous mutant's process has exited
        for slot in slots:
            fd = os.open(slot["lock"], os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _held["fd"] = fd
            _held["env"] = {name: os.environ.get(name) for name in _URL_ENV}
            os.environ["MMHUB_TEST_DATABASE_URL"] = slot["database_url"]
            os.environ["MMHUB_TEST_REDIS_URL"] = slot["redis_url"]
            return
        time.sleep(0.05)


def _clear_caches() -> None:
    """Empty the project's functools caches (is_secret_key, the scrub patterns).

    mutmut forks each mutant's session from a process that already ran the tests unmutated: a warm
    cache would answer with the unmutated code's results and let the mutant survive unseen.
    """
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("app.", "dispatch.")):
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == name:
                clear()


def pytest_unconfigure(config: pytest.Config) -> None:
    fd = _held.pop("fd", None)
    if not isinstance(fd, int):
        return
    saved = _held.pop("env", {})
    assert isinstance(saved, dict)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.close(fd)  # releases the lock: mutmut forks the next mutants from this process
