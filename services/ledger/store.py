"""Ledger's tables (SQLAlchemy 2 models). Repositories are added with the service."""

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.models import created_at_column

ACCOUNT_TYPES = ("USER", "GOAL", "ESCROW", "REVENUE")
ENTRY_TYPES = ("DEBIT", "CREDIT")


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("account_type", "entity_id", "currency", name="accounts_owner_key"),
        CheckConstraint(f"account_type IN {ACCOUNT_TYPES}", name="accounts_account_type_check"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    account_type: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime] = created_at_column()


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("amount > 0", name="ledger_entries_amount_positive"),
        CheckConstraint(f"entry_type IN {ENTRY_TYPES}", name="ledger_entries_entry_type_check"),
        Index("ledger_entries_account_seq_idx", "account_id", "seq"),
        Index("ledger_entries_transaction_idx", "transaction_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    transaction_id: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    entry_type: Mapped[str] = mapped_column(String(6))
    # Minor units (kobo, pesewas, cents); always positive, the side says the sign.
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(500), default="")
    # Global position in commit order (assigned by the ledger service).
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    created_at: Mapped[datetime] = created_at_column()
