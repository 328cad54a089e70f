"""Goals' tables (SQLAlchemy 2 models). Repositories are added with the service."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.models import created_at_column, updated_at_column


class Base(DeclarativeBase):
    pass


class Goal(Base):
    __tablename__ = "goals"
    __table_args__ = (
        CheckConstraint("target_amount > 0", name="goals_target_positive"),
        Index("goals_status_deadline_idx", "status", "deadline"),
        Index("goals_owner_idx", "owner_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column()
    title: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    # Minor units of `currency`.
    target_amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="OPEN")
    raised_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    contributor_count: Mapped[int] = mapped_column(Integer, default=0)
    # The goal's GOAL account in the ledger.
    account_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    cancel_reason: Mapped[str] = mapped_column(String(500), default="")
    funded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class Contribution(Base):
    __tablename__ = "contributions"
    __table_args__ = (
        CheckConstraint("amount > 0", name="contributions_amount_positive"),
        UniqueConstraint("user_id", "idempotency_key", name="contributions_idempotency_key"),
        Index("contributions_goal_idx", "goal_id", "created_at"),
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
    status: Mapped[str] = mapped_column(String(16), default="PENDING")
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class Proof(Base):
    __tablename__ = "proofs"
    __table_args__ = (UniqueConstraint("goal_id", "attempt", name="proofs_goal_attempt_key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    goal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("goals.id"))
    owner_id: Mapped[uuid.UUID] = mapped_column()
    title: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    media_urls: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    status: Mapped[str] = mapped_column(String(16), default="PENDING")
    # 1, 2 or 3: the owner may submit at most three proofs per goal.
    attempt: Mapped[int] = mapped_column(Integer)
    # Sums of voters' contributed amounts, minor units.
    approve_weight: Mapped[int] = mapped_column(BigInteger, default=0)
    reject_weight: Mapped[int] = mapped_column(BigInteger, default=0)
    voting_ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


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
