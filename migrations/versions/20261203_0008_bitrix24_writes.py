"""bitrix24 writes: the hub's own REST writes, for echo suppression

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bitrix24_writes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("portal", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("delivery_id", sa.UUID(), nullable=True),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bitrix24_writes")),
    )
    op.create_index(
        op.f("ix_bitrix24_writes_portal_subject_written_at"),
        "bitrix24_writes",
        ["portal", "subject", "written_at"],
    )


def downgrade() -> None:
    op.drop_table("bitrix24_writes")
