"""With the outage spool off, a database outage gives 503 with Retry-After, never 200; the hub
recovers by itself."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select

from app.db import make_engine
from app.embedded import EmbeddedServers
from app.models import Event
from app.settings import Settings
from tests.fixture_files import fixture_bytes
from tests.http_app import running_app
from tests.hub_config import HUB_CONFIG

FORM = {"content-type": "application/x-www-form-urlencoded"}
DEAL = fixture_bytes("bitrix24/webhook-deal-add.form")


async def test_database_down_gives_503_then_recovers(
    own_servers: EmbeddedServers, settings_for: Callable[..., Settings]
) -> None:
    runtime = own_servers.running()
    assert runtime is not None
    settings = settings_for(HUB_CONFIG, spool_max_bytes=0).model_copy(
        update={"database_url": runtime.database_url, "redis_url": runtime.redis_url}
    )
    async with running_app(settings) as client:
        ok = await client.post("/webhooks/bitrix24", content=DEAL, headers=FORM)
        assert ok.status_code == 200

        own_servers.stop_postgres()
        second = DEAL.replace(b"7405", b"7406")
        down = await client.post("/webhooks/bitrix24", content=second, headers=FORM)
        assert down.status_code == 503, down.text
        assert down.headers["content-type"] == "application/problem+json"
        assert int(down.headers["retry-after"]) > 0
        assert down.json()["request_id"] == down.headers["x-request-id"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["postgresql"].startswith("unavailable")

        own_servers.start_postgres(runtime.pg_port)
        back = await client.post("/webhooks/bitrix24", content=second, headers=FORM)
        assert back.status_code == 200, back.text
        assert back.json()["duplicate"] is False
        assert (await client.get("/readyz")).status_code == 200

    engine = make_engine(runtime.database_url, pool_size=1)
    async with engine.connect() as conn:
        subjects = (await conn.execute(select(Event.subject).order_by(Event.subject))).scalars()
        assert list(subjects) == ["deal/7405", "deal/7406"]
        assert (await conn.execute(select(func.count()).select_from(Event))).scalar_one() == 2
    await engine.dispose()
