"""The hub's real processes (`python -m cli <role>`) on the test's servers, for tests and the soak."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Processes:
    """Starts `python -m cli <role>` with the given servers and YAML file; stops what it started."""

    def __init__(
        self, urls: tuple[str, str], config: Path, logs: Path | None = None, **env: str
    ) -> None:
        self.logs = logs  # each process's output goes to LOGS/<role>-<n>.log when set
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
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        output = None
        if self.logs is not None:
            output = open(self.logs / f"{role}-{len(self.running)}.log", "ab")  # noqa: SIM115
        command = [sys.executable, "-m", "cli", role, *args]
        process = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=output, stderr=output)
        self.running.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.terminate()
        for process in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
