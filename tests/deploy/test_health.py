"""GET /health: which build answers (version, git revision, build time), for the operators' probes."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from importlib.metadata import version

import pytest

from app.settings import Settings
from tests.http_app import running_app
from tests.roles import ROOT


@pytest.fixture
def head() -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


async def test_a_checkout_reports_its_git_revision(
    settings_for: Callable[..., Settings], head: str
) -> None:
    async with running_app(settings_for()) as client:
        reply = await client.get("/health")
    assert reply.status_code == 200
    assert reply.json() == {
        "status": "ok",
        "version": version("mmhub"),
        "git_revision": head,
        "build_time": None,
    }


async def test_the_image_reports_its_build_arguments(settings_for: Callable[..., Settings]) -> None:
    # The Dockerfile turns its GIT_REVISION and BUILD_TIME build arguments into these variables.
    settings = settings_for(git_revision="0123abc", build_time="2026-12-03T10:00:00Z")
    async with running_app(settings) as client:
        reply = await client.get("/health")
    assert reply.json()["git_revision"] == "0123abc"
    assert reply.json()["build_time"] == "2026-12-03T10:00:00Z"
    assert reply.json()["version"] == version("mmhub")
