"""Locate the shared wire fixtures (/work/shared/fixtures, a sibling of the repository)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures"


def fixture_bytes(rel: str) -> bytes:
    """Return a fixture's raw bytes; ``rel`` is e.g. ``"bitrix24/webhook-deal-add.form"``."""
    return (FIXTURES / rel).read_bytes()
