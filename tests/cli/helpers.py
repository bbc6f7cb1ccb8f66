"""Rows for the support CLI tests to act on, and reads of what the commands changed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from click.testing import Result
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.ids import new_id
from app.models import AuditEntry, Delivery, DeliveryAttempt, Event

# `await mmhub("deliveries", "list", "--json")` (the fixture in conftest.py).
Mmhub = Callable[..., Awaitable[Result]]

SECRET_KEYS = {"password", "token", "application_token", "secret", "webhook_url"}


def secrets_from_env(node: Any, env: dict[str, str], path: tuple[str, ...] = ()) -> Any:
    """The hub config with every secret as a `${VAR}` reference (as a real mmhub.yaml has it)."""
    if isinstance(node, dict):
        return {k: secrets_from_env(v, env, (*path, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [secrets_from_env(v, env, (*path, str(i))) for i, v in enumerate(node)]
    if path and path[-1] in SECRET_KEYS:
        name = "MMHUB_TEST_" + "_".join(path).upper()
        env[name] = str(node)
        return "${" + name + "}"
    return node


def write_config(path: Path, hub: dict[str, Any]) -> dict[str, str]:
    """Write `hub` as mmhub.yaml with its secrets in the environment; returns that environment."""
    env: dict[str, str] = {}
    body = yaml.safe_dump(secrets_from_env(hub, env), allow_unicode=True)
    path.write_text(body, encoding="utf-8")
    return env


async def seed(
    engine: AsyncEngine,
    *,
    target: str = "erp",
    status: str = "dead",
    source: str = "bitrix24",
    event_type: str = "ONCRMDEALADD",
    subject: str = "deal/1",
    age: timedelta = timedelta(minutes=5),
    payload: dict[str, Any] | None = None,
    attempts: int = 0,
    count: int = 1,
) -> list[str]:
    """Events with one delivery each, in the given state; returns the delivery ids."""
    received = datetime.now(UTC) - age
    ids = []
    async with AsyncSession(engine) as session, session.begin():
        for _ in range(count):
            event_id, delivery_id = new_id(), new_id()
            session.add(
                Event(
                    id=event_id,
                    source=source,
                    type=event_type,
                    subject=subject,
                    dedup_key=str(event_id),
                    received_at=received,
                    headers={},
                    payload=payload or {"FIELDS": {"ID": subject.rsplit("/", 1)[-1]}},
                    raw_body=b"{}",
                )
            )
            await session.flush()
            session.add(
                Delivery(
                    id=delivery_id,
                    event_id=event_id,
                    route="deals-to-erp",
                    target=target,
                    status=status,
                    ordering_key=subject,
                    attempt_count=attempts,
                    last_error="http_503: Service Unavailable" if attempts else None,
                    created_at=received,
                )
            )
            for number in range(1, attempts + 1):
                session.add(
                    DeliveryAttempt(
                        delivery_id=delivery_id,
                        target=target,
                        number=number,
                        started_at=received + timedelta(seconds=number),
                        duration_ms=12,
                        http_status=503,
                        error_class="http_503",
                        error="Service Unavailable",
                        response_excerpt="<html>Сервис недоступен</html>",
                        outcome="dead" if number == attempts else "retry",
                    )
                )
            ids.append(str(delivery_id))
    return ids


async def rows(engine: AsyncEngine) -> dict[str, Any]:
    """Every delivery by id."""
    async with engine.connect() as conn:
        return {str(r.id): r for r in (await conn.execute(select(Delivery))).all()}


async def audit_rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(AuditEntry).order_by(AuditEntry.id))).all())


async def count_rows(engine: AsyncEngine, table: str) -> int:
    query = text(f"SELECT count(*) FROM {table}")  # noqa: S608 - our own table names
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())
