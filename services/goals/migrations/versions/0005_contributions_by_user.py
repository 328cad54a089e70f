"""contributions_user_created_idx: one user's contributions across goals, newest first.

ListMyContributions pages a caller's contributions by (created_at, id) whatever
the goal; the existing indexes all lead with goal_id.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("contributions_user_created_idx", "contributions", ["user_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("contributions_user_created_idx", table_name="contributions")
