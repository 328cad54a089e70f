"""payments_cursor: how far the payments outcome stream has been applied (one row).

Goals follows PaymentsInternalService.WatchOutcomes the way it follows the
ledger's GOAL balances: each outcome is applied in one transaction with this
cursor, so a restart resumes after the last outcome applied.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payments_cursor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="payments_cursor_single_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO payments_cursor (id, last_seq) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("payments_cursor")
