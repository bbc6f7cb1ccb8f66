"""bitrix24 offline: the process id of a portal's offline batch read and not yet cleared

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bitrix24_offline",
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column("process_id", sa.Text(), nullable=True),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_bitrix24_offline")),
    )


def downgrade() -> None:
    op.drop_table("bitrix24_offline")
