"""Postings: transactions, balances, the commit-order sequence, append-only entries.

- ledger_transactions: one row per posted transaction; its id is the caller's
  idempotency key and `fingerprint` the hash of its postings.
- account_balances: O(1) balances, updated in the posting's own transaction;
  a CHECK keeps every balance on its normal side at or above zero.
- ledger_sequence: a single row whose update hands out `seq` values. The row
  lock is held until commit, so seqs are gap-free and in commit order.
- ledger_entries gets the account's running totals after each entry (replays
  of balance streams are then a range scan) and becomes append-only: UPDATE,
  DELETE and TRUNCATE raise in the database, whoever the client is.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = """
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: the ledger is append-only; post a reversing transaction',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END
$$;
"""


def upgrade() -> None:
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("reverses_transaction_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["reverses_transaction_id"], ["ledger_transactions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reverses_transaction_id", name="ledger_transactions_reversed_once"),
    )
    op.create_table(
        "account_balances",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("debits", sa.BigInteger(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("balance >= 0", name="account_balances_not_negative"),
        sa.CheckConstraint("debits >= 0 AND credits >= 0", name="account_balances_totals_not_negative"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "ledger_sequence",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="ledger_sequence_single_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO ledger_sequence (id, last_seq) VALUES (1, 0)")
    op.add_column("ledger_entries", sa.Column("debits_after", sa.BigInteger(), nullable=False))
    op.add_column("ledger_entries", sa.Column("credits_after", sa.BigInteger(), nullable=False))
    op.add_column("ledger_entries", sa.Column("balance_after", sa.BigInteger(), nullable=False))
    op.create_foreign_key(
        "ledger_entries_transaction_id_fkey",
        "ledger_entries",
        "ledger_transactions",
        ["transaction_id"],
        ["id"],
    )
    op.execute(APPEND_ONLY)
    for table in ("ledger_entries", "ledger_transactions"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        )


def downgrade() -> None:
    for table in ("ledger_entries", "ledger_transactions"):
        op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
        op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
    op.execute("DROP FUNCTION ledger_append_only()")
    op.drop_constraint("ledger_entries_transaction_id_fkey", "ledger_entries", type_="foreignkey")
    op.drop_column("ledger_entries", "balance_after")
    op.drop_column("ledger_entries", "credits_after")
    op.drop_column("ledger_entries", "debits_after")
    op.drop_table("ledger_sequence")
    op.drop_table("account_balances")
    op.drop_table("ledger_transactions")
