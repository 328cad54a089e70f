"""The goals service: progress seq, idempotency keys, sagas, the ledger stream's cursor.

- goals: `seq` (incremented on every change of progress; WatchGoal's seq),
  `ledger_seq` (last GOAL balance applied), the CreateGoal request id and its
  input's hash, `refund_cause`; CHECKs on status and raised amount.
- contributions: `paid_at`, `failure_reason`, `refund_on_confirm` (paid after
  the goal closed: refunded, never counted).
- proofs: `voter_count`, the CreateProof request id and hash, at most one proof
  in voting per goal (partial unique index).
- ledger_cursor: the last ledger seq the GOAL balance stream was applied up to,
  updated in the same transaction as the goals it changed.
- refunds (one per refunded contribution), releases (one per released goal)
  and payouts (every payout asked for, by its id): saga state, so a crash at
  any step resumes without repeating a money movement.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GOAL_STATUSES = "('OPEN', 'FUNDED', 'RELEASED', 'WITHDRAWN', 'EXPIRED', 'CANCELLED', 'REFUNDING', 'REFUNDED')"


def timestamps() -> list[sa.Column[sa.DateTime]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    ]


def upgrade() -> None:
    op.add_column("goals", sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("goals", sa.Column("ledger_seq", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("goals", sa.Column("request_id", sa.String(length=200), nullable=True))
    op.add_column("goals", sa.Column("request_fingerprint", sa.String(length=64), nullable=True))
    op.add_column("goals", sa.Column("refund_cause", sa.String(length=16), nullable=True))
    op.create_index("goals_created_idx", "goals", ["created_at", "id"])
    op.create_unique_constraint("goals_request_key", "goals", ["owner_id", "request_id"])
    op.create_check_constraint("goals_status_check", "goals", f"status IN {GOAL_STATUSES}")
    op.create_check_constraint("goals_raised_not_negative", "goals", "raised_amount >= 0")

    op.add_column("contributions", sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "contributions", sa.Column("failure_reason", sa.String(length=500), server_default="", nullable=False)
    )
    op.add_column("contributions", sa.Column("refund_on_confirm", sa.Boolean(), server_default="false", nullable=False))
    op.create_index("contributions_goal_status_user_idx", "contributions", ["goal_id", "status", "user_id"])
    op.create_check_constraint(
        "contributions_status_check", "contributions", "status IN ('PENDING', 'SUCCEEDED', 'FAILED', 'REFUNDED')"
    )

    op.add_column("proofs", sa.Column("voter_count", sa.Integer(), server_default="0", nullable=False))
    op.add_column("proofs", sa.Column("request_id", sa.String(length=200), nullable=True))
    op.add_column("proofs", sa.Column("request_fingerprint", sa.String(length=64), nullable=True))
    op.create_unique_constraint("proofs_request_key", "proofs", ["owner_id", "request_id"])
    op.create_check_constraint("proofs_status_check", "proofs", "status IN ('PENDING', 'APPROVED', 'REJECTED')")
    op.create_check_constraint("proofs_attempt_range", "proofs", "attempt BETWEEN 1 AND 3")
    op.create_index(
        "proofs_one_pending_per_goal",
        "proofs",
        ["goal_id"],
        unique=True,
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    op.create_index(
        "proofs_pending_ends_idx", "proofs", ["voting_ends_at"], postgresql_where=sa.text("status = 'PENDING'")
    )

    op.create_table(
        "ledger_cursor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="ledger_cursor_single_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO ledger_cursor (id, last_seq) VALUES (1, 0)")

    op.create_table(
        "refunds",
        sa.Column("contribution_id", sa.Uuid(), nullable=False),
        sa.Column("goal_id", sa.Uuid(), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        *timestamps(),
        sa.CheckConstraint("state IN ('PENDING', 'REQUESTED', 'DONE')", name="refunds_state_check"),
        sa.ForeignKeyConstraint(["contribution_id"], ["contributions.id"]),
        sa.ForeignKeyConstraint(["goal_id"], ["goals.id"]),
        sa.PrimaryKeyConstraint("contribution_id"),
    )
    op.create_index("refunds_due_idx", "refunds", ["next_attempt_at"], postgresql_where=sa.text("state <> 'DONE'"))
    op.create_index("refunds_goal_idx", "refunds", ["goal_id"])

    op.create_table(
        "releases",
        sa.Column("goal_id", sa.Uuid(), nullable=False),
        sa.Column("proof_id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("payout_attempt", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        *timestamps(),
        sa.CheckConstraint("step IN ('POST', 'PAYOUT', 'PAYING', 'DONE')", name="releases_step_check"),
        sa.CheckConstraint("amount > 0 AND fee >= 0 AND fee <= amount", name="releases_amounts_check"),
        sa.ForeignKeyConstraint(["goal_id"], ["goals.id"]),
        sa.ForeignKeyConstraint(["proof_id"], ["proofs.id"]),
        sa.PrimaryKeyConstraint("goal_id"),
    )
    op.create_index(
        "releases_due_idx", "releases", ["next_attempt_at"], postgresql_where=sa.text("step IN ('POST', 'PAYOUT')")
    )

    op.create_table(
        "payouts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("goal_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        *timestamps(),
        sa.CheckConstraint("outcome IS NULL OR outcome IN ('SUCCEEDED', 'FAILED', 'REVERSED')", name="payouts_outcome"),
        sa.ForeignKeyConstraint(["goal_id"], ["goals.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("goal_id", "attempt", name="payouts_goal_attempt_key"),
    )


def downgrade() -> None:
    op.drop_table("payouts")
    op.drop_index("releases_due_idx", table_name="releases")
    op.drop_table("releases")
    op.drop_index("refunds_goal_idx", table_name="refunds")
    op.drop_index("refunds_due_idx", table_name="refunds")
    op.drop_table("refunds")
    op.drop_table("ledger_cursor")
    op.drop_index("proofs_pending_ends_idx", table_name="proofs")
    op.drop_index("proofs_one_pending_per_goal", table_name="proofs")
    op.drop_constraint("proofs_attempt_range", "proofs", type_="check")
    op.drop_constraint("proofs_status_check", "proofs", type_="check")
    op.drop_constraint("proofs_request_key", "proofs", type_="unique")
    op.drop_column("proofs", "request_fingerprint")
    op.drop_column("proofs", "request_id")
    op.drop_column("proofs", "voter_count")
    op.drop_constraint("contributions_status_check", "contributions", type_="check")
    op.drop_index("contributions_goal_status_user_idx", table_name="contributions")
    op.drop_column("contributions", "refund_on_confirm")
    op.drop_column("contributions", "failure_reason")
    op.drop_column("contributions", "paid_at")
    op.drop_constraint("goals_raised_not_negative", "goals", type_="check")
    op.drop_constraint("goals_status_check", "goals", type_="check")
    op.drop_constraint("goals_request_key", "goals", type_="unique")
    op.drop_index("goals_created_idx", table_name="goals")
    op.drop_column("goals", "refund_cause")
    op.drop_column("goals", "request_fingerprint")
    op.drop_column("goals", "request_id")
    op.drop_column("goals", "ledger_seq")
    op.drop_column("goals", "seq")
