"""seed schema

Revision ID: 0001
Revises:

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_type", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("account_type IN ('USER', 'GOAL', 'ESCROW', 'REVENUE')", name="accounts_account_type_check"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_type", "entity_id", "currency", name="accounts_owner_key"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("transaction_id", sa.String(length=200), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("entry_type", sa.String(length=6), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("entry_type IN ('DEBIT', 'CREDIT')", name="ledger_entries_entry_type_check"),
        sa.CheckConstraint("amount > 0", name="ledger_entries_amount_positive"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("seq"),
    )
    op.create_index("ledger_entries_account_seq_idx", "ledger_entries", ["account_id", "seq"], unique=False)
    op.create_index("ledger_entries_transaction_idx", "ledger_entries", ["transaction_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ledger_entries_transaction_idx", table_name="ledger_entries")
    op.drop_index("ledger_entries_account_seq_idx", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("accounts")
