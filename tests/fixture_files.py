"""Locate the wire fixtures kept in the repository (tests/fixtures/)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_bytes(rel: str) -> bytes:
    """Return a fixture's raw bytes; ``rel`` is e.g. ``"bitrix24/webhook-deal-add.form"``."""
    return (FIXTURES / rel).read_bytes()
