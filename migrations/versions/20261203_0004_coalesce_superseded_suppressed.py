"""coalesce: superseded and suppressed statuses, deliveries.superseded_by

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "'pending', 'delivering', 'delivered', 'retrying', 'dead', 'held', 'cancelled'"
_NEW = _OLD + ", 'superseded', 'suppressed'"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_deliveries_status"), "deliveries", type_="check")
    op.create_check_constraint(op.f("ck_deliveries_status"), "deliveries", f"status IN ({_NEW})")
    op.add_column("deliveries", sa.Column("superseded_by", sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f("fk_deliveries_superseded_by_deliveries"),
        "deliveries",
        "deliveries",
        ["superseded_by"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_deliveries_superseded_by_deliveries"), "deliveries", type_="foreignkey"
    )
    op.drop_column("deliveries", "superseded_by")
    op.execute(
        "UPDATE deliveries SET status = 'cancelled' WHERE status IN ('superseded', 'suppressed')"
    )
    op.drop_constraint(op.f("ck_deliveries_status"), "deliveries", type_="check")
    op.create_check_constraint(op.f("ck_deliveries_status"), "deliveries", f"status IN ({_OLD})")
