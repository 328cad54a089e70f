"""Goals persistence: SQLAlchemy 2 models and the queries the use cases need.

Locks are always taken in one order — the goal row, then its contributions,
proofs or saga rows — so concurrent calls on one goal never deadlock. Every
change of a goal's progress (status, raised amount, contributor count) goes
through `progress_changed`, which increments the goal's `seq` and queues one
NOTIFY on `goal_progress` in the same transaction: PostgreSQL delivers it at
commit, in commit order, to the listener of every goals replica.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import (
    Enum as SAEnum,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import for_update
from services.common.models import created_at_column
from services.goals.domain import (
    ContributionStatus,
    GoalStatus,
    Outflow,
    PayoutOutcome,
    ProofStatus,
    RefundCause,
    RefundState,
    ReleaseStep,
)

E = TypeVar("E", bound=StrEnum)
NOTIFY_CHANNEL = "goal_progress"
GOAL_STATUSES = tuple(s.value for s in GoalStatus)
CONTRIBUTION_STATUSES = tuple(s.value for s in ContributionStatus)
PROOF_STATUSES = tuple(s.value for s in ProofStatus)


def stored_enum(enum: type[E], length: int) -> SAEnum:
    """A status column typed as its domain enum, stored as before: VARCHAR(length) holding
    the member's value (no database enum type; the tables' CHECK constraints list the values)."""
    return SAEnum(
        enum,
        native_enum=False,
        length=length,
        create_constraint=False,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    pass


def updated_at_column() -> Mapped[datetime]:
    # Set by the service from its clock on every change (`touch`), never by an
    # ORM on-update default, which would mix the database's clock in.
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Goal(Base):
    __tablename__ = "goals"
    __table_args__ = (
        CheckConstraint("target_amount > 0", name="goals_target_positive"),
        CheckConstraint(f"status IN {GOAL_STATUSES}", name="goals_status_check"),
        CheckConstraint("raised_amount >= 0", name="goals_raised_not_negative"),
        Index("goals_status_deadline_idx", "status", "deadline"),
        Index("goals_owner_idx", "owner_id", "created_at"),
        Index("goals_created_idx", "created_at", "id"),
        # A client's request id names one goal (the goal id is derived from it too).
        UniqueConstraint("owner_id", "request_id", name="goals_request_key"),
        CheckConstraint("outflow IN ('RELEASE', 'REFUND')", name="goals_outflow_check"),
        # The target of the saga rows' (goal_id, outflow) foreign keys.
        UniqueConstraint("id", "outflow", name="goals_id_outflow_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column()
    title: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    # Minor units of `currency`.
    target_amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[GoalStatus] = mapped_column(stored_enum(GoalStatus, 16), default=GoalStatus.OPEN)
    raised_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    contributor_count: Mapped[int] = mapped_column(Integer, default=0)
    # The goal's GOAL account in the ledger.
    account_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    cancel_reason: Mapped[str] = mapped_column(String(500), default="")
    funded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()
    # Incremented on every change of progress (status, raised, contributors):
    # WatchGoal's `seq`.
    seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The ledger `seq` of the last GOAL balance applied, so a replayed or stale
    # balance change is never applied over a newer one.
    ledger_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The GOAL balance as of `ledger_seq`, minor units: what the ledger has been
    # seen to hold. Not progress itself (see lifecycle.refresh_progress): a
    # capture shows once both its balance and its confirmation are in.
    ledger_balance: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The amount and distinct contributors of the contributions that count (`_counting`),
    # kept as they change (`count_contribution`, `uncount_contribution`) under the goal's
    # lock, so the progress needs no aggregate over every contribution at each change.
    counted_amount: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    counted_contributors: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The client's CreateGoal request id and the hash of its input.
    request_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # EXPIRED, CANCELLED or REJECTED once a refund has started; NULL before.
    refund_cause: Mapped[RefundCause | None] = mapped_column(stored_enum(RefundCause, 16), nullable=True)
    # RELEASE or REFUND (domain.Outflow) once decided; a trigger keeps it from
    # ever changing again, and saga rows reference it.
    outflow: Mapped[Outflow | None] = mapped_column(stored_enum(Outflow, 8), nullable=True)


class Contribution(Base):
    __tablename__ = "contributions"
    __table_args__ = (
        CheckConstraint("amount > 0", name="contributions_amount_positive"),
        CheckConstraint(f"status IN {CONTRIBUTION_STATUSES}", name="contributions_status_check"),
        UniqueConstraint("user_id", "idempotency_key", name="contributions_idempotency_key"),
        Index("contributions_goal_idx", "goal_id", "created_at"),
        Index("contributions_goal_status_user_idx", "goal_id", "status", "user_id"),
        # ListMyContributions: one user's contributions across goals, in (created_at, id) order.
        Index("contributions_user_created_idx", "user_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    goal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("goals.id"))
    user_id: Mapped[uuid.UUID] = mapped_column()
    payment_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    payment_reference: Mapped[str] = mapped_column(String(100), default="")
    idempotency_key: Mapped[str] = mapped_column(String(200))
    # Minor units of `currency`.
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[ContributionStatus] = mapped_column(
        stored_enum(ContributionStatus, 16), default=ContributionStatus.PENDING
    )
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()
    # When Paystack says the payer paid.
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Why the payment failed, as payments reported it.
    failure_reason: Mapped[str] = mapped_column(String(500), default="", server_default="")
    # The payment succeeded after the goal had closed: it never counted and is
    # refunded on its own by the refund saga.
    refund_on_confirm: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")


class Proof(Base):
    __tablename__ = "proofs"
    __table_args__ = (
        UniqueConstraint("goal_id", "attempt", name="proofs_goal_attempt_key"),
        UniqueConstraint("owner_id", "request_id", name="proofs_request_key"),
        CheckConstraint(f"status IN {PROOF_STATUSES}", name="proofs_status_check"),
        CheckConstraint("attempt BETWEEN 1 AND 3", name="proofs_attempt_range"),
        # At most one proof of a goal in voting, enforced by the database.
        Index("proofs_one_pending_per_goal", "goal_id", unique=True, postgresql_where=text("status = 'PENDING'")),
        Index("proofs_pending_ends_idx", "voting_ends_at", postgresql_where=text("status = 'PENDING'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    goal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("goals.id"))
    owner_id: Mapped[uuid.UUID] = mapped_column()
    title: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    media_urls: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    status: Mapped[ProofStatus] = mapped_column(stored_enum(ProofStatus, 16), default=ProofStatus.PENDING)
    # 1, 2 or 3: the owner may submit at most three proofs per goal.
    attempt: Mapped[int] = mapped_column(Integer)
    # Sums of voters' contributed amounts, minor units.
    approve_weight: Mapped[int] = mapped_column(BigInteger, default=0)
    reject_weight: Mapped[int] = mapped_column(BigInteger, default=0)
    voting_ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()
    voter_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The client's CreateProof request id and the hash of its input.
    request_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Vote(Base):
    __tablename__ = "votes"
    # One vote per contributor per proof, enforced by the database.
    __table_args__ = (UniqueConstraint("proof_id", "voter_id", name="votes_proof_voter_key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    proof_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("proofs.id"))
    voter_id: Mapped[uuid.UUID] = mapped_column()
    is_approved: Mapped[bool] = mapped_column(Boolean)
    # The voter's contributed amount at voting time, minor units.
    weight: Mapped[int] = mapped_column(BigInteger)
    comment: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = created_at_column()


class StreamCursor:
    """How far a followed stream has been applied: one row, its last seq."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class LedgerCursor(StreamCursor, Base):
    """The ledger's GOAL balance stream (WatchBalances)."""

    __tablename__ = "ledger_cursor"
    __table_args__ = (CheckConstraint("id = 1", name="ledger_cursor_single_row"),)


class PaymentsCursor(StreamCursor, Base):
    """Payments' outcome stream (WatchOutcomes)."""

    __tablename__ = "payments_cursor"
    __table_args__ = (CheckConstraint("id = 1", name="payments_cursor_single_row"),)


class Refund(Base):
    """Refund saga of one succeeded contribution (the goal closed, or it paid too late)."""

    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint(f"state IN {tuple(s.value for s in RefundState)}", name="refunds_state_check"),
        Index("refunds_due_idx", "next_attempt_at", postgresql_where=text("state <> 'DONE'")),
        Index("refunds_goal_idx", "goal_id"),
        CheckConstraint("outflow = 'REFUND'", name="refunds_outflow_check"),
        # A refund of the goal's money exists only on a goal whose outflow is REFUND.
        ForeignKeyConstraint(["goal_id", "outflow"], ["goals.id", "goals.outflow"], name="refunds_goal_outflow_fkey"),
    )

    contribution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contributions.id"), primary_key=True)
    goal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("goals.id"))
    # REFUND when the goal refunds everyone; NULL for a payment that arrived after
    # the goal closed, which never counted and goes back whatever the outflow.
    outflow: Mapped[Outflow | None] = mapped_column(stored_enum(Outflow, 8), nullable=True)
    payment_id: Mapped[str] = mapped_column(String(64))
    # Each attempt has its own refund id (domain.refund_id); a new attempt
    # starts only after payments reports the previous one failed.
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[RefundState] = mapped_column(stored_enum(RefundState, 16), default=RefundState.PENDING)
    # Failed or inconclusive calls in a row, for the backoff.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class Release(Base):
    """Release saga of one goal: post the release, then pay the owner out."""

    __tablename__ = "releases"
    __table_args__ = (
        CheckConstraint(f"step IN {tuple(s.value for s in ReleaseStep)}", name="releases_step_check"),
        CheckConstraint("amount > 0 AND fee >= 0 AND fee <= amount", name="releases_amounts_check"),
        Index("releases_due_idx", "next_attempt_at", postgresql_where=text("step IN ('POST', 'PAYOUT')")),
        CheckConstraint("outflow = 'RELEASE'", name="releases_outflow_check"),
        # A release exists only on a goal whose outflow is RELEASE.
        ForeignKeyConstraint(["goal_id", "outflow"], ["goals.id", "goals.outflow"], name="releases_goal_outflow_fkey"),
    )

    goal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("goals.id"), primary_key=True)
    outflow: Mapped[Outflow] = mapped_column(
        stored_enum(Outflow, 8), default=Outflow.RELEASE, server_default=Outflow.RELEASE.value
    )
    proof_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("proofs.id"))
    # Fixed when the proof is approved: what leaves the GOAL account, minor units.
    amount: Mapped[int] = mapped_column(BigInteger)
    # The platform's share of `amount`; the owner is paid `amount - fee`.
    fee: Mapped[int] = mapped_column(BigInteger)
    step: Mapped[ReleaseStep] = mapped_column(stored_enum(ReleaseStep, 16), default=ReleaseStep.POST)
    # The payout attempt in progress or next (1-based); each has its own id.
    payout_attempt: Mapped[int] = mapped_column(Integer, default=1)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class Payout(Base):
    """Every payout the release saga asked for, stored before it is asked (its id is the key)."""

    __tablename__ = "payouts"
    __table_args__ = (
        UniqueConstraint("goal_id", "attempt", name="payouts_goal_attempt_key"),
        CheckConstraint("outcome IS NULL OR outcome IN ('SUCCEEDED', 'FAILED', 'REVERSED')", name="payouts_outcome"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    goal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("goals.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    # Minor units of the goal's currency.
    amount: Mapped[int] = mapped_column(BigInteger)
    # NULL until payments' payout_settled outcome reports it.
    outcome: Mapped[PayoutOutcome | None] = mapped_column(stored_enum(PayoutOutcome, 16), nullable=True)
    reason: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


# -- progress -------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """What WatchGoal sends: a goal's progress at one `seq`."""

    goal_id: str
    seq: int
    status: GoalStatus
    raised_amount: int
    target_amount: int
    contributor_count: int
    currency: str

    def to_json(self) -> str:
        return json.dumps(
            [self.goal_id, self.seq, self.status.value, self.raised_amount, self.target_amount,
             self.contributor_count, self.currency],
            separators=(",", ":"),
        )  # fmt: skip

    @classmethod
    def from_json(cls, payload: str) -> Progress:
        goal_id, seq, status, raised, target, count, currency = json.loads(payload)
        return cls(str(goal_id), int(seq), GoalStatus(status), int(raised), int(target), int(count), str(currency))

    @classmethod
    def of(cls, goal: Goal) -> Progress:
        return cls(
            str(goal.id), goal.seq, goal.status, goal.raised_amount, goal.target_amount,
            goal.contributor_count, goal.currency,
        )  # fmt: skip


def touch(row: Goal | Contribution | Proof | Refund | Release | Payout, at: datetime) -> None:
    """Set `updated_at` from the service's clock (the one rules read)."""
    row.updated_at = at


async def progress_changed(session: AsyncSession, goal: Goal, now: datetime) -> None:
    """Record one change of the goal's progress: next seq, and a NOTIFY sent at commit."""
    goal.seq += 1
    touch(goal, now)
    await session.flush()
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": NOTIFY_CHANNEL, "payload": Progress.of(goal).to_json()},
    )


async def progress_of(connection: AsyncConnection, goal_id: str) -> Progress | None:
    row = (
        await connection.execute(
            select(
                Goal.id, Goal.seq, Goal.status, Goal.raised_amount, Goal.target_amount,
                Goal.contributor_count, Goal.currency,
            ).where(Goal.id == uuid.UUID(goal_id))
        )
    ).first()  # fmt: skip
    if row is None:
        return None
    return Progress(str(row[0]), row[1], GoalStatus(row[2]), row[3], row[4], row[5], row[6])


# -- goals ----------------------------------------------------------------------------
async def get_goal(
    session: AsyncSession, goal_id: str, *, lock: bool = False, skip_locked: bool = False
) -> Goal | None:
    query = select(Goal).where(Goal.id == uuid.UUID(goal_id))
    if lock:
        query = for_update(query, skip_locked=skip_locked)
    return (await session.execute(query)).scalar_one_or_none()


async def insert_goal(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert unless a goal with this id exists (a concurrent retry); True if inserted."""
    inserted = await session.execute(insert(Goal).values(**values).on_conflict_do_nothing().returning(Goal.id))
    return inserted.first() is not None


async def list_goals(
    session: AsyncSession,
    *,
    status: GoalStatus | None,
    owner_id: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Goal]:
    """Newest first; `after` is the (created_at, id) of the previous page's last goal."""
    query = select(Goal)
    if status is not None:
        query = query.where(Goal.status == status)
    if owner_id is not None:
        query = query.where(Goal.owner_id == uuid.UUID(owner_id))
    if after is not None:
        created, last_id = after
        query = query.where(
            or_(Goal.created_at < created, and_(Goal.created_at == created, Goal.id < uuid.UUID(last_id)))
        )
    query = query.order_by(Goal.created_at.desc(), Goal.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


@dataclass(frozen=True)
class Books:
    """One goal's books for reconciliation: the goal, its release if any, its contributions with a payment."""

    goal: Goal
    release: Release | None
    contributions: list[Contribution]


async def list_books(session: AsyncSession, after: tuple[datetime, str] | None, limit: int) -> list[Books]:
    """Oldest goal first; `after` is the (created_at, id) of the previous page's last goal."""
    query = select(Goal)
    if after is not None:
        created, last_id = after
        query = query.where(
            or_(Goal.created_at > created, and_(Goal.created_at == created, Goal.id > uuid.UUID(last_id)))
        )
    goals = list((await session.execute(query.order_by(Goal.created_at, Goal.id).limit(limit))).scalars())
    ids = [g.id for g in goals]
    releases = {
        r.goal_id: r for r in (await session.execute(select(Release).where(Release.goal_id.in_(ids)))).scalars()
    }
    contributions: dict[uuid.UUID, list[Contribution]] = {}
    paid = select(Contribution).where(Contribution.goal_id.in_(ids), Contribution.payment_id.is_not(None))
    for contribution in (await session.execute(paid.order_by(Contribution.created_at))).scalars():
        contributions.setdefault(contribution.goal_id, []).append(contribution)
    return [Books(g, releases.get(g.id), contributions.get(g.id, [])) for g in goals]


async def goals_due_to_expire(session: AsyncSession, now: datetime, limit: int) -> list[Goal]:
    query = (
        select(Goal).where(Goal.status == GoalStatus.OPEN, Goal.deadline <= now).order_by(Goal.deadline).limit(limit)
    )
    return list((await session.execute(query)).scalars())


# -- contributions ----------------------------------------------------------------------
def _counting(goal_id: uuid.UUID) -> Any:
    """Contributions that count for the goal: succeeded, and not refunded for paying too late."""
    return and_(
        Contribution.goal_id == goal_id,
        Contribution.status == ContributionStatus.SUCCEEDED,
        Contribution.refund_on_confirm.is_(False),
    )


async def counted_progress(session: AsyncSession, goal_id: uuid.UUID) -> tuple[int, int]:
    """(amount, distinct contributors) of the contributions that count for the goal, in one
    read over all of them: for deciding the outflow, once per goal, and checking the counts
    kept on the goal (100,000 contributions: 47 ms, so not at each change)."""
    query = select(
        func.coalesce(func.sum(Contribution.amount), 0), func.count(func.distinct(Contribution.user_id))
    ).where(_counting(goal_id))
    total, contributors = (await session.execute(query)).one()
    return int(total), int(contributors)


async def _counts_another(session: AsyncSession, contribution: Contribution) -> bool:
    """Whether another contribution of the same contributor counts for its goal (indexed:
    contributions_goal_status_user_idx)."""
    query = select(Contribution.id).where(
        _counting(contribution.goal_id),
        Contribution.user_id == contribution.user_id,
        Contribution.id != contribution.id,
    )
    return (await session.execute(query.limit(1))).first() is not None


async def count_contribution(session: AsyncSession, goal: Goal, contribution: Contribution) -> None:
    """The contribution has started to count for the goal (locked by the caller): its
    `counted_amount`, and its contributors if the contributor is new. Called once per
    contribution, on its move into the counting set."""
    goal.counted_amount += contribution.amount
    if not await _counts_another(session, contribution):
        goal.counted_contributors += 1


async def uncount_contribution(session: AsyncSession, goal: Goal, contribution: Contribution) -> None:
    """The counting contribution has stopped counting (refunded): the reverse of
    `count_contribution`."""
    goal.counted_amount -= contribution.amount
    if not await _counts_another(session, contribution):
        goal.counted_contributors -= 1


async def counted_total(session: AsyncSession, goal_id: uuid.UUID) -> int:
    """The goal's raised amount as its contributions tell it: the weight of every vote together."""
    query = select(func.coalesce(func.sum(Contribution.amount), 0)).where(_counting(goal_id))
    return int((await session.execute(query)).scalar_one())


async def weight_of(session: AsyncSession, goal_id: uuid.UUID, user_id: uuid.UUID) -> int:
    query = select(func.coalesce(func.sum(Contribution.amount), 0)).where(
        _counting(goal_id), Contribution.user_id == user_id
    )
    return int((await session.execute(query)).scalar_one())


async def uncast_weight(session: AsyncSession, goal_id: uuid.UUID, owner_id: uuid.UUID, proof_id: uuid.UUID) -> int:
    """Weight of the contributors (never the owner) who have not voted on the proof yet."""
    voters = select(Vote.voter_id).where(Vote.proof_id == proof_id)
    query = select(func.coalesce(func.sum(Contribution.amount), 0)).where(
        _counting(goal_id), Contribution.user_id != owner_id, Contribution.user_id.not_in(voters)
    )
    return int((await session.execute(query)).scalar_one())


async def get_contribution(session: AsyncSession, contribution_id: str, *, lock: bool = False) -> Contribution | None:
    query = select(Contribution).where(Contribution.id == uuid.UUID(contribution_id))
    if lock:
        query = for_update(query)
    return (await session.execute(query)).scalar_one_or_none()


async def lock_goal_of_contribution(session: AsyncSession, contribution_id: str) -> Goal | None:
    """The contribution's goal, locked and read under the lock, in one statement (the goal id
    from the contribution in a subquery): callers then lock and read the contribution."""
    goal_id = select(Contribution.goal_id).where(Contribution.id == uuid.UUID(contribution_id)).scalar_subquery()
    query = for_update(select(Goal).where(Goal.id == goal_id))
    return (await session.execute(query)).scalar_one_or_none()


async def contribution_by_key(session: AsyncSession, user_id: str, idempotency_key: str) -> Contribution | None:
    query = select(Contribution).where(
        Contribution.user_id == uuid.UUID(user_id), Contribution.idempotency_key == idempotency_key
    )
    return (await session.execute(query)).scalar_one_or_none()


async def insert_contribution(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert unless the caller's idempotency key is taken (a concurrent retry); True if inserted."""
    statement = (
        insert(Contribution)
        .values(**values)
        .on_conflict_do_nothing(constraint="contributions_idempotency_key")
        .returning(Contribution.id)
    )
    return (await session.execute(statement)).first() is not None


async def record_payment(
    session: AsyncSession, contribution_id: uuid.UUID, payment_id: str, reference: str, now: datetime
) -> None:
    """Remember the payment behind a contribution, unless a confirmation already recorded it."""
    await session.execute(
        update(Contribution)
        .where(Contribution.id == contribution_id, Contribution.payment_id.is_(None))
        .values(payment_id=payment_id, updated_at=now)
    )
    await session.execute(
        update(Contribution)
        .where(Contribution.id == contribution_id, Contribution.payment_reference == "")
        .values(payment_reference=reference, updated_at=now)
    )


async def list_contributions(
    session: AsyncSession,
    goal_id: uuid.UUID,
    *,
    user_id: uuid.UUID | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Contribution]:
    query = select(Contribution).where(Contribution.goal_id == goal_id)
    if user_id is not None:
        query = query.where(Contribution.user_id == user_id)
    if after is not None:
        created, last_id = after
        query = query.where(
            or_(
                Contribution.created_at < created,
                and_(Contribution.created_at == created, Contribution.id < uuid.UUID(last_id)),
            )
        )
    query = query.order_by(Contribution.created_at.desc(), Contribution.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


@dataclass(frozen=True)
class ContributionOfGoal:
    """A contribution with what a list of one user's contributions shows of its goal."""

    contribution: Contribution
    goal_title: str
    goal_status: GoalStatus


async def list_user_contributions(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    status: ContributionStatus | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[ContributionOfGoal]:
    """One user's contributions across goals, newest first; `after` is the (created_at, id)
    of the previous page's last one."""
    query = (
        select(Contribution, Goal.title, Goal.status)
        .join(Goal, Goal.id == Contribution.goal_id)
        .where(Contribution.user_id == user_id)
    )
    if status is not None:
        query = query.where(Contribution.status == status)
    if after is not None:
        created, last_id = after
        query = query.where(
            or_(
                Contribution.created_at < created,
                and_(Contribution.created_at == created, Contribution.id < uuid.UUID(last_id)),
            )
        )
    query = query.order_by(Contribution.created_at.desc(), Contribution.id.desc()).limit(limit)
    rows = await session.execute(query)
    return [ContributionOfGoal(c, title, GoalStatus(goal_status)) for c, title, goal_status in rows]


async def succeeded_contributions(session: AsyncSession, goal_id: uuid.UUID) -> list[Contribution]:
    query = select(Contribution).where(
        Contribution.goal_id == goal_id, Contribution.status == ContributionStatus.SUCCEEDED
    )
    return list((await session.execute(query)).scalars())


async def any_succeeded(session: AsyncSession, goal_id: uuid.UUID) -> bool:
    query = select(Contribution.id).where(
        Contribution.goal_id == goal_id, Contribution.status == ContributionStatus.SUCCEEDED
    )
    return (await session.execute(query.limit(1))).first() is not None


# -- proofs and votes -------------------------------------------------------------------
async def goal_of_proof(session: AsyncSession, proof_id: str) -> uuid.UUID | None:
    """The proof's goal id, without loading the proof: callers lock the goal, then read the proof."""
    query = select(Proof.goal_id).where(Proof.id == uuid.UUID(proof_id))
    return (await session.execute(query)).scalar_one_or_none()


async def get_proof(session: AsyncSession, proof_id: str, *, lock: bool = False) -> Proof | None:
    query = select(Proof).where(Proof.id == uuid.UUID(proof_id))
    if lock:
        query = for_update(query)
    return (await session.execute(query)).scalar_one_or_none()


async def proofs_of(session: AsyncSession, goal_id: uuid.UUID) -> list[Proof]:
    return list(
        (await session.execute(select(Proof).where(Proof.goal_id == goal_id).order_by(Proof.attempt))).scalars()
    )


async def proof_by_request(session: AsyncSession, owner_id: uuid.UUID, request_id: str) -> Proof | None:
    query = select(Proof).where(Proof.owner_id == owner_id, Proof.request_id == request_id)
    return (await session.execute(query)).scalar_one_or_none()


async def vote_totals(session: AsyncSession, proof_id: uuid.UUID) -> tuple[int, int, int]:
    """(approving weight, rejecting weight, voters) of the proof's stored votes."""
    query = select(
        func.coalesce(func.sum(Vote.weight).filter(Vote.is_approved.is_(True)), 0),
        func.coalesce(func.sum(Vote.weight).filter(Vote.is_approved.is_(False)), 0),
        func.count(),
    ).where(Vote.proof_id == proof_id)
    approve, reject, voters = (await session.execute(query)).one()
    return int(approve), int(reject), int(voters)


async def vote_of(session: AsyncSession, proof_id: uuid.UUID, voter_id: uuid.UUID) -> Vote | None:
    query = select(Vote).where(Vote.proof_id == proof_id, Vote.voter_id == voter_id)
    return (await session.execute(query)).scalar_one_or_none()


async def proofs_due_to_close(session: AsyncSession, now: datetime, limit: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(proof id, goal id) of proofs still in voting whose window has ended."""
    query = (
        select(Proof.id, Proof.goal_id)
        .where(Proof.status == ProofStatus.PENDING, Proof.voting_ends_at <= now)
        .order_by(Proof.voting_ends_at)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in (await session.execute(query)).all()]


# -- sagas ----------------------------------------------------------------------------------
async def refunds_due(session: AsyncSession, now: datetime, limit: int) -> list[uuid.UUID]:
    query = (
        select(Refund.contribution_id)
        .where(Refund.state != RefundState.DONE, Refund.next_attempt_at <= now)
        .order_by(Refund.next_attempt_at)
        .limit(limit)
    )
    return [row[0] for row in (await session.execute(query)).all()]


async def claim_refund(session: AsyncSession, contribution_id: uuid.UUID, now: datetime) -> Refund | None:
    """The refund row if it is still due and no other process is working on it."""
    query = for_update(
        select(Refund).where(
            Refund.contribution_id == contribution_id,
            Refund.state != RefundState.DONE,
            Refund.next_attempt_at <= now,
        ),
        skip_locked=True,
    )
    return (await session.execute(query)).scalar_one_or_none()


async def get_refund(session: AsyncSession, contribution_id: uuid.UUID, *, lock: bool = False) -> Refund | None:
    query = select(Refund).where(Refund.contribution_id == contribution_id)
    if lock:
        query = for_update(query)
    return (await session.execute(query)).scalar_one_or_none()


async def insert_refund(
    session: AsyncSession, contribution: Contribution, now: datetime, *, outflow: Outflow | None
) -> None:
    """Queue the refund of one contribution: part of the goal's REFUND outflow, or (None) a late payment."""
    assert contribution.payment_id is not None
    await session.execute(
        insert(Refund)
        .values(
            contribution_id=contribution.id, goal_id=contribution.goal_id, payment_id=contribution.payment_id,
            outflow=outflow, attempt=1, state=RefundState.PENDING, failures=0,
            next_attempt_at=now, last_error="", created_at=now, updated_at=now,
        )
        .on_conflict_do_nothing()
    )  # fmt: skip


async def releases_due(session: AsyncSession, now: datetime, limit: int) -> list[tuple[uuid.UUID, str]]:
    query = (
        select(Release.goal_id, Release.step)
        .where(Release.step.in_([ReleaseStep.POST, ReleaseStep.PAYOUT]), Release.next_attempt_at <= now)
        .order_by(Release.next_attempt_at)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in (await session.execute(query)).all()]


async def get_release(
    session: AsyncSession, goal_id: uuid.UUID, *, lock: bool = False, skip_locked: bool = False
) -> Release | None:
    query = select(Release).where(Release.goal_id == goal_id)
    if lock:
        query = for_update(query, skip_locked=skip_locked)
    return (await session.execute(query)).scalar_one_or_none()


async def get_payout(session: AsyncSession, payout_id: uuid.UUID, *, lock: bool = False) -> Payout | None:
    query = select(Payout).where(Payout.id == payout_id)
    if lock:
        query = for_update(query)
    return (await session.execute(query)).scalar_one_or_none()


async def insert_payout(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(insert(Payout).values(**values).on_conflict_do_nothing())


# -- the followed streams' cursors --------------------------------------------------------------
async def cursor(session: AsyncSession, table: type[StreamCursor]) -> int:
    return int((await session.execute(select(table.last_seq).where(table.id == 1))).scalar_one())


async def advance_cursor(session: AsyncSession, table: type[StreamCursor], seq: int) -> None:
    # GREATEST: several goals replicas may apply the same stream; the cursor never goes back.
    await session.execute(update(table).where(table.id == 1).values(last_seq=func.greatest(table.last_seq, seq)))


def ids(values: Sequence[uuid.UUID]) -> list[str]:
    return [str(v) for v in values]
