"""Pause state per target, as stored in PostgreSQL and read back for the admin API."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import make_sessionmaker
from app.outbox.states import get_state, pause_target, resume_target


async def test_each_target_reads_its_own_state(engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(engine)
    async with sessions.begin() as session:
        await pause_target(session, "erp", "1C maintenance", "alice")
        await pause_target(session, "crm", "portal migration", "bob")
        await resume_target(session, "crm")

    async with sessions() as session:
        erp, crm = await get_state(session, "erp"), await get_state(session, "crm")
        assert await get_state(session, "ww") is None  # never paused: no row
    assert erp is not None
    assert crm is not None
    assert (erp.target, erp.paused, erp.paused_reason, erp.paused_by) == (
        "erp",
        True,
        "1C maintenance",
        "alice",
    )
    assert (crm.target, crm.paused, crm.paused_reason, crm.paused_by) == ("crm", False, None, None)
