"""A goal's money goes one way, once: `goals.outflow`, referenced by every saga row.

- goals.outflow: RELEASE or REFUND, NULL until decided; a trigger refuses any
  change once it is set, so a goal can never be both released and refunded.
- releases.outflow (always RELEASE) and refunds.outflow (REFUND for a goal's
  refund, NULL for a payment that arrived after the goal closed) with
  composite foreign keys to goals (id, outflow): a release row can exist only
  on a goal whose outflow is RELEASE, a goal refund only on one whose outflow
  is REFUND.
- Existing rows are given the outflow their saga rows already imply.

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
    op.add_column("goals", sa.Column("outflow", sa.String(length=8), nullable=True))
    op.create_check_constraint("goals_outflow_check", "goals", "outflow IN ('RELEASE', 'REFUND')")
    op.create_unique_constraint("goals_id_outflow_key", "goals", ["id", "outflow"])
    op.execute("UPDATE goals SET outflow = 'RELEASE' WHERE id IN (SELECT goal_id FROM releases)")
    op.execute("UPDATE goals SET outflow = 'REFUND' WHERE outflow IS NULL AND refund_cause IS NOT NULL")
    op.execute(
        """
        CREATE FUNCTION goals_outflow_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.outflow IS NOT NULL AND NEW.outflow IS DISTINCT FROM OLD.outflow THEN
                RAISE EXCEPTION 'goal %: outflow % is final', OLD.id, OLD.outflow
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER goals_outflow_is_final BEFORE UPDATE OF outflow ON goals "
        "FOR EACH ROW EXECUTE FUNCTION goals_outflow_is_final()"
    )

    op.add_column("releases", sa.Column("outflow", sa.String(length=8), server_default="RELEASE", nullable=False))
    op.create_check_constraint("releases_outflow_check", "releases", "outflow = 'RELEASE'")
    op.create_foreign_key("releases_goal_outflow_fkey", "releases", "goals", ["goal_id", "outflow"], ["id", "outflow"])

    op.add_column("refunds", sa.Column("outflow", sa.String(length=8), nullable=True))
    op.execute(
        "UPDATE refunds SET outflow = 'REFUND' FROM contributions c, goals g "
        "WHERE c.id = refunds.contribution_id AND g.id = refunds.goal_id "
        "AND NOT c.refund_on_confirm AND g.outflow = 'REFUND'"
    )
    op.create_check_constraint("refunds_outflow_check", "refunds", "outflow = 'REFUND'")
    op.create_foreign_key("refunds_goal_outflow_fkey", "refunds", "goals", ["goal_id", "outflow"], ["id", "outflow"])


def downgrade() -> None:
    op.drop_constraint("refunds_goal_outflow_fkey", "refunds", type_="foreignkey")
    op.drop_constraint("refunds_outflow_check", "refunds", type_="check")
    op.drop_column("refunds", "outflow")
    op.drop_constraint("releases_goal_outflow_fkey", "releases", type_="foreignkey")
    op.drop_constraint("releases_outflow_check", "releases", type_="check")
    op.drop_column("releases", "outflow")
    op.execute("DROP TRIGGER goals_outflow_is_final ON goals")
    op.execute("DROP FUNCTION goals_outflow_is_final()")
    op.drop_constraint("goals_id_outflow_key", "goals", type_="unique")
    op.drop_constraint("goals_outflow_check", "goals", type_="check")
    op.drop_column("goals", "outflow")
