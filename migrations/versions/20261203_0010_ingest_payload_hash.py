"""ingest: events.payload_hash, to tell a reused Idempotency-Key with another payload (409)

Only events that came with an Idempotency-Key get a hash (the SHA-256 of their canonical stored
payload). Rows stored before this revision have none: a key that matches one of them is answered as
a duplicate, as before, since there is nothing to compare (see app/ingest/committer.py).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 09:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: PostgreSQL adds the column without rewriting the table.
    op.add_column("events", sa.Column("payload_hash", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("events", "payload_hash")
