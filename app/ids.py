"""Identifiers."""

from __future__ import annotations

import uuid

import uuid_utils


def new_id() -> uuid.UUID:
    """A time-ordered UUIDv7: primary key indexes stay append-only and ids sort by creation."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)
