"""goals.ledger_balance: the GOAL balance as of `ledger_seq`, kept apart from the progress shown.

A capture reaches goals twice (the ledger's balance stream, payments'
confirmation) in either order; the progress a client sees changes once, when
both are in (lifecycle.refresh_progress), so the balance is remembered here
until then. Until now the raised amount of a goal taking money followed its
balance, so existing rows start from it.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("goals", sa.Column("ledger_balance", sa.BigInteger(), server_default="0", nullable=False))
    op.execute("UPDATE goals SET ledger_balance = raised_amount")


def downgrade() -> None:
    op.drop_column("goals", "ledger_balance")
