"""Engine and session factories. Each process builds its own and disposes it on exit."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


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
