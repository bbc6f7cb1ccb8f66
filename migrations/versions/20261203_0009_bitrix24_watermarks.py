"""bitrix24 watermarks: how far reconciliation has read each portal's records of each entity

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bitrix24_watermarks",
        sa.Column("portal", sa.Text(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "swept_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("portal", "entity", name=op.f("pk_bitrix24_watermarks")),
    )


def downgrade() -> None:
    op.drop_table("bitrix24_watermarks")
