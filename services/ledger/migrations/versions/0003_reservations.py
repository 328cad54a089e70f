"""Reservations: outflows in two phases (pending, then posted or voided).

- ledger_transactions.kind (POSTED, PENDING, POST_PENDING, VOID_PENDING) and
  pending_transaction_id, unique: a reservation is posted or voided by one
  transaction, and the database refuses a second.
- ledger_entries.phase (POSTED, PENDING, PENDING_RESOLVED) and the account's
  pending totals after each entry, for stream replays.
- account_balances: pending debits and credits and `available` (the balance
  less what is reserved to leave); CHECKs keep them in range, so the floor on
  available is the database's backstop as the floor on the balance was.
Existing rows are all posted and reserve nothing, which the defaults say.

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
    op.add_column(
        "ledger_transactions", sa.Column("kind", sa.String(length=16), server_default="POSTED", nullable=False)
    )
    op.add_column("ledger_transactions", sa.Column("pending_transaction_id", sa.String(length=200), nullable=True))
    op.create_foreign_key(
        "ledger_transactions_pending_transaction_id_fkey",
        "ledger_transactions",
        "ledger_transactions",
        ["pending_transaction_id"],
        ["id"],
    )
    op.create_unique_constraint("ledger_transactions_resolved_once", "ledger_transactions", ["pending_transaction_id"])
    op.create_check_constraint(
        "ledger_transactions_kind_check",
        "ledger_transactions",
        "kind IN ('POSTED', 'PENDING', 'POST_PENDING', 'VOID_PENDING')",
    )
    op.create_check_constraint(
        "ledger_transactions_resolution_names_its_reservation",
        "ledger_transactions",
        "(pending_transaction_id IS NOT NULL) = (kind IN ('POST_PENDING', 'VOID_PENDING'))",
    )

    op.add_column("ledger_entries", sa.Column("phase", sa.String(length=16), server_default="POSTED", nullable=False))
    op.add_column(
        "ledger_entries", sa.Column("debits_pending_after", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.add_column(
        "ledger_entries", sa.Column("credits_pending_after", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.create_check_constraint(
        "ledger_entries_phase_check", "ledger_entries", "phase IN ('POSTED', 'PENDING', 'PENDING_RESOLVED')"
    )

    op.add_column("account_balances", sa.Column("debits_pending", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("account_balances", sa.Column("credits_pending", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("account_balances", sa.Column("available", sa.BigInteger(), server_default="0", nullable=False))
    op.execute("UPDATE account_balances SET available = balance")
    op.create_check_constraint(
        "account_balances_pending_not_negative", "account_balances", "debits_pending >= 0 AND credits_pending >= 0"
    )
    op.create_check_constraint(
        "account_balances_available_in_range", "account_balances", "available >= 0 AND available <= balance"
    )


def downgrade() -> None:
    op.drop_constraint("account_balances_available_in_range", "account_balances", type_="check")
    op.drop_constraint("account_balances_pending_not_negative", "account_balances", type_="check")
    op.drop_column("account_balances", "available")
    op.drop_column("account_balances", "credits_pending")
    op.drop_column("account_balances", "debits_pending")
    op.drop_constraint("ledger_entries_phase_check", "ledger_entries", type_="check")
    op.drop_column("ledger_entries", "credits_pending_after")
    op.drop_column("ledger_entries", "debits_pending_after")
    op.drop_column("ledger_entries", "phase")
    op.drop_constraint("ledger_transactions_resolution_names_its_reservation", "ledger_transactions", type_="check")
    op.drop_constraint("ledger_transactions_kind_check", "ledger_transactions", type_="check")
    op.drop_constraint("ledger_transactions_resolved_once", "ledger_transactions", type_="unique")
    op.drop_constraint("ledger_transactions_pending_transaction_id_fkey", "ledger_transactions", type_="foreignkey")
    op.drop_column("ledger_transactions", "pending_transaction_id")
    op.drop_column("ledger_transactions", "kind")
