"""Revocation log (pushed to every service's auth cache) and windowed rate-limit counters.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revocations",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("revocations_revoked_at_idx", "revocations", ["revoked_at"])
    op.create_table(
        "rate_limit_counters",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start"),
    )
    op.create_index("rate_limit_counters_expires_at_idx", "rate_limit_counters", ["expires_at"])


def downgrade() -> None:
    op.drop_index("rate_limit_counters_expires_at_idx", table_name="rate_limit_counters")
    op.drop_table("rate_limit_counters")
    op.drop_index("revocations_revoked_at_idx", table_name="revocations")
    op.drop_table("revocations")
