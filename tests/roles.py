"""The hub's real processes (`python -m cli api|relay|worker`) on a test's servers, for tests and the
soak."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from app.embedded import free_port
from tests.dispatch.harness import eventually

ROOT = Path(__file__).resolve().parents[1]


def hub_ports() -> dict[str, int]:
    """A free port for each role: the API's, and the relay's and worker's /metrics."""
    return {role: free_port() for role in ("api", "relay", "worker")}


class Processes:
    """Starts roles with the test's servers and YAML file; `stop_all()` ends them (SIGTERM first)."""

    def __init__(
        self,
        urls: tuple[str, str],
        config: Path,
        command: list[str] | None = None,
        cwd: Path = ROOT,
        logs: Path | None = None,
        **env: str,
    ) -> None:
        self.env = {
            **os.environ,
            "MMHUB_DATABASE_URL": urls[0],
            "MMHUB_REDIS_URL": urls[1],
            "MMHUB_CONFIG": str(config),
            "MMHUB_VISIBILITY_TIMEOUT": "1s",
            "MMHUB_RELAY_POLL_INTERVAL": "200ms",
            "MMHUB_LOG_LEVEL": "WARNING",
            **env,
        }
        # The checkout's code by default; an installed `mmhub` for the image-layout test.
        self.command = command or [sys.executable, "-m", "cli"]
        self.cwd = cwd
        self.running: list[subprocess.Popen[bytes]] = []
        self.logs = logs or config.parent

    def start(self, role: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start one role (`args` after its name); its stderr (JSON log lines) goes to
        `log_of(role)`, shared by the processes of one role."""
        with self.log_of(role).open("ab") as log:
            process = subprocess.Popen(
                [*self.command, role, *args],
                env={**self.env, **env},
                cwd=self.cwd,
                stderr=log,
            )
        self.running.append(process)
        return process

    def log_of(self, role: str) -> Path:
        return self.logs / f"{role}.log"

    async def start_hub(self, ports: dict[str, int] | None = None) -> dict[str, int]:
        """API, relay and worker, each on its own port (`hub_ports()` unless given); returns the
        ports once every role's /metrics answers."""
        ports = ports or hub_ports()
        self.start("api", MMHUB_PORT=str(ports["api"]))
        for role in ("relay", "worker"):
            self.start(role, MMHUB_METRICS_PORT=str(ports[role]))
        async with httpx.AsyncClient(timeout=2) as client:

            async def answering() -> bool:
                for port in ports.values():
                    try:
                        reply = await client.get(f"http://127.0.0.1:{port}/metrics")
                    except httpx.TransportError:
                        return False
                    if reply.status_code != 200:
                        return False
                return True

            await eventually(answering, seconds=120)  # a loaded machine starts them slowly
        return ports

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.terminate()
        for process in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
