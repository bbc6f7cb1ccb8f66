"""Engine and session factories. Each process builds its own and disposes it on exit."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential


def make_engine(url: str, *, pool_size: int = 10, application_name: str = "mmhub") -> AsyncEngine:
    """An asyncpg engine; `pool_pre_ping` lets the pool recover by itself after a database restart."""
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={
            "server_settings": {"application_name": application_name},
            "timeout": 5,
            "command_timeout": 30,
        },
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


# PostgreSQL's "try again" answers: a serialization failure and a deadlock victim.
_CONFLICT_STATES = frozenset({"40001", "40P01"})


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` (SQLAlchemy-wrapped or raw asyncpg) is a conflict that a retry resolves."""
    for error in (exc, getattr(exc, "orig", None), exc.__cause__):
        if getattr(error, "sqlstate", None) in _CONFLICT_STATES:
            return True
    return False


# Retries a function that runs its statements in its own savepoint or transaction.
retry_conflicts = retry(
    retry=retry_if_exception(is_conflict),
    stop=stop_after_attempt(8),
    wait=wait_random_exponential(multiplier=0.01, max=0.5),
    reraise=True,
)


async def driver_connection(conn: AsyncConnection | AsyncSession) -> Any:
    """The asyncpg connection under a SQLAlchemy connection or session, in its transaction.

    For statements written once in asyncpg's style and run both from the drain (which talks to
    asyncpg directly) and from a session.
    """
    if isinstance(conn, AsyncSession):
        conn = await conn.connection()
    # SQLAlchemy's asyncpg adapter begins its transaction lazily, on its first statement.
    await conn.exec_driver_sql("SELECT 1")
    return (await conn.get_raw_connection()).driver_connection
