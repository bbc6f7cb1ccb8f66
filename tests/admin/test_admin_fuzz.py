"""Schemathesis against the served OpenAPI document of /admin/v1, with an operator token: whatever
it sends, the API answers no 5xx. Bounded in time (MAX_TIME seconds) and in examples per operation.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from tests.admin.support import OPERATOR_TOKEN, admin_hub
from tests.dispatch.harness import FORM, deal
from tests.roles import Processes
from tests.soak.rig import free_port

MAX_TIME = 15  # seconds for the whole run
MAX_EXAMPLES = 15  # per operation and phase


def test_admin_api_answers_no_5xx_to_schemathesis(urls: tuple[str, str], tmp_path: Path) -> None:
    config = tmp_path / "mmhub.yaml"
    config.write_text(yaml.safe_dump(admin_hub("http://127.0.0.1:9")), encoding="utf-8")
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    processes = Processes(urls, config, MMHUB_SPOOL_DIR=str(tmp_path / "spool"))
    processes.start("api", "--port", str(port))
    try:
        _wait_for(f"{api}/healthz")
        for deal_id in range(1, 4):  # rows for the searches to return, and ids for the links
            url = f"{api}/webhooks/bitrix24"
            request = urllib.request.Request(url, data=deal(deal_id), headers=FORM)  # noqa: S310
            urllib.request.urlopen(request, timeout=30).close()  # noqa: S310 - our own server
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{api}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--include-path-regex",
                "^/admin/",
                "--header",
                f"Authorization: Bearer {OPERATOR_TOKEN}",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--max-time",
                str(MAX_TIME),
                "--seed",
                "8",
                "--generation-database",
                "none",
                "--workers",  # one: Hypothesis parses lambdas with `ast`, not thread-safe on 3.11
                "1",
                "--no-color",
            ],
            cwd=tmp_path,  # its cache and reports stay out of the checkout
            capture_output=True,
            text=True,
            timeout=MAX_TIME * 6,
        )
    finally:
        processes.stop_all()
    print(result.stdout[-3000:])  # the per-operation summary, shown with pytest -s
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def _wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own server
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds}s")
