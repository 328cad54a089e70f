"""Ledger persistence: SQLAlchemy 2 models and the posting transaction.

Postings are written in batches (see batcher.py): one database transaction
(READ COMMITTED) writes every request of a batch, and takes its locks in one
fixed order, so concurrent batches (of several ledger replicas) never deadlock
and never lose an update:
  1. the balance rows of every account the batch names, `FOR UPDATE`, in
     account-id order; every read that decides a request comes after them
     (a concurrent duplicate, or a competing reversal or resolution, touches
     the same accounts, so it has committed and is seen);
  2. the new transaction rows, in id order (their primary key is the
     idempotency key: a duplicate another replica is writing still waits here,
     and the batch runs again);
  3. the single `ledger_sequence` row, which hands out `seq` and is held until
     commit, so seqs are gap-free and in commit order.
Each request is checked against the balances the requests before it left; a
refused one writes nothing and its batch-mates go on. Then the entries (with
each account's running totals), the new balances and the notifications
carrying the changes are written, and the batch commits.

A reservation is posted the same way with its entries in the PENDING phase;
its resolution (post or void) is a transaction of its own whose row names the
reservation in `pending_transaction_id`, unique, so the database itself lets a
reservation be resolved once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.errors import DomainError, IdempotencyKeyReused
from services.common.models import created_at_column, updated_at_column
from services.ledger import domain
from services.ledger.domain import AccountState, AccountType, EntryType, Phase, Posting, TransactionKind

ACCOUNT_TYPES = tuple(t.value for t in AccountType)
ENTRY_TYPES = tuple(t.value for t in EntryType)
PHASES = tuple(p.value for p in Phase)
TRANSACTION_KINDS = tuple(k.value for k in TransactionKind)
NOTIFY_CHANNEL = "ledger_balances"
# Reads run on a session (in a unit of work) or a bare connection (streams).
Executor = AsyncSession | AsyncConnection
# PostgreSQL's NOTIFY payload limit is 8000 bytes; above this we send only the
# seq range and listeners read the entries back.
MAX_NOTIFY_PAYLOAD = 7000


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


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"
    __table_args__ = (
        UniqueConstraint("reverses_transaction_id", name="ledger_transactions_reversed_once"),
        # A reservation is posted or voided by one transaction, ever.
        UniqueConstraint("pending_transaction_id", name="ledger_transactions_resolved_once"),
        CheckConstraint(f"kind IN {TRANSACTION_KINDS}", name="ledger_transactions_kind_check"),
        CheckConstraint(
            "(pending_transaction_id IS NOT NULL) = (kind IN ('POST_PENDING', 'VOID_PENDING'))",
            name="ledger_transactions_resolution_names_its_reservation",
        ),
    )

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    description: Mapped[str] = mapped_column(String(500))
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB)
    # SHA-256 of the canonical postings: a replay must match it.
    fingerprint: Mapped[str] = mapped_column(String(64))
    reverses_transaction_id: Mapped[str | None] = mapped_column(
        String(200), ForeignKey("ledger_transactions.id"), nullable=True
    )
    created_at: Mapped[datetime] = created_at_column()
    kind: Mapped[str] = mapped_column(String(16), default="POSTED", server_default="POSTED")
    # For a post or void: the reservation it resolves.
    pending_transaction_id: Mapped[str | None] = mapped_column(
        String(200), ForeignKey("ledger_transactions.id"), nullable=True
    )


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("amount > 0", name="ledger_entries_amount_positive"),
        CheckConstraint(f"entry_type IN {ENTRY_TYPES}", name="ledger_entries_entry_type_check"),
        CheckConstraint(f"phase IN {PHASES}", name="ledger_entries_phase_check"),
        Index("ledger_entries_account_seq_idx", "account_id", "seq"),
        Index("ledger_entries_transaction_idx", "transaction_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    transaction_id: Mapped[str] = mapped_column(String(200), ForeignKey("ledger_transactions.id"))
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    entry_type: Mapped[str] = mapped_column(String(6))
    # Minor units (kobo, pesewas, cents); always positive, the side says the sign.
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(500), default="")
    # Global position in commit order, gap-free.
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    # The account's totals and normal-side balance right after this entry.
    debits_after: Mapped[int] = mapped_column(BigInteger)
    credits_after: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = created_at_column()
    phase: Mapped[str] = mapped_column(String(16), default="POSTED", server_default="POSTED")
    debits_pending_after: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    credits_pending_after: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class AccountBalance(Base):
    __tablename__ = "account_balances"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="account_balances_not_negative"),
        CheckConstraint("debits >= 0 AND credits >= 0", name="account_balances_totals_not_negative"),
        CheckConstraint("debits_pending >= 0 AND credits_pending >= 0", name="account_balances_pending_not_negative"),
        CheckConstraint("available >= 0 AND available <= balance", name="account_balances_available_in_range"),
    )

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    debits: Mapped[int] = mapped_column(BigInteger)
    credits: Mapped[int] = mapped_column(BigInteger)
    # On the account's normal side; never below zero (the domain checks first,
    # this constraint is the backstop).
    balance: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = updated_at_column()
    # Reserved by unresolved pending transactions, and what is left to give
    # (domain.available); the floors keep `available` at or above zero.
    debits_pending: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    credits_pending: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    available: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class LedgerSequence(Base):
    __tablename__ = "ledger_sequence"
    __table_args__ = (CheckConstraint("id = 1", name="ledger_sequence_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


# -- read models ----------------------------------------------------------------
@dataclass(frozen=True)
class AccountRow:
    id: str
    account_type: AccountType
    entity_id: str
    currency: str
    created_at: datetime


@dataclass(frozen=True)
class BalanceRow:
    account_id: str
    currency: str
    balance: int
    debits: int
    credits: int
    seq: int
    updated_at: datetime
    debits_pending: int
    credits_pending: int
    available: int


@dataclass(frozen=True)
class EntryRow:
    id: str
    account_id: str
    transaction_id: str
    entry_type: EntryType
    amount: int
    currency: str
    description: str
    seq: int
    created_at: datetime
    phase: Phase

    def posting(self) -> Posting:
        return Posting(self.account_id, self.entry_type, self.amount, self.currency, self.phase)


@dataclass(frozen=True)
class TransactionRow:
    id: str
    description: str
    metadata: dict[str, str]
    reverses_transaction_id: str | None
    created_at: datetime
    entries: tuple[EntryRow, ...]
    kind: TransactionKind
    pending_transaction_id: str | None
    # For a reservation: the transaction that posted or voided it, if any.
    resolved_by: str | None


@dataclass(frozen=True)
class BalanceChange:
    """An account's totals after one entry: what balance streams carry."""

    account_id: str
    account_type: AccountType
    entity_id: str
    currency: str
    balance: int
    debits: int
    credits: int
    seq: int
    transaction_id: str
    debits_pending: int = 0
    credits_pending: int = 0

    @property
    def available(self) -> int:
        return domain.available(self.account_type, self.debits, self.credits, self.debits_pending, self.credits_pending)

    def to_json(self) -> list[Any]:
        return [
            self.account_id,
            self.account_type.value,
            self.entity_id,
            self.currency,
            self.balance,
            self.debits,
            self.credits,
            self.seq,
            self.transaction_id,
            self.debits_pending,
            self.credits_pending,
        ]

    @classmethod
    def from_json(cls, row: Sequence[Any]) -> BalanceChange:
        account_id, account_type, entity_id, currency, balance, debits, credits, seq, transaction_id, *pending = row
        return cls(
            account_id,
            AccountType(account_type),
            entity_id,
            currency,
            balance,
            debits,
            credits,
            seq,
            transaction_id,
            # A replica from before reservations sends none: its postings hold nothing pending.
            *(pending or (0, 0)),
        )


@dataclass(frozen=True)
class Difference:
    account_id: str
    stored_debits: int
    computed_debits: int
    stored_credits: int
    computed_credits: int
    stored_pending: tuple[int, int] = (0, 0)  # (debits, credits) reserved, as stored
    computed_pending: tuple[int, int] = (0, 0)  # and as the entries tell it


# -- accounts -------------------------------------------------------------------
_ACCOUNT_COLUMNS = "a.id, a.account_type, a.entity_id, a.currency, a.created_at"


def _account(row: Any) -> AccountRow:
    return AccountRow(str(row.id), AccountType(row.account_type), row.entity_id, row.currency, row.created_at)


async def open_account(
    session: AsyncSession, account_type: AccountType, entity_id: str, currency: str
) -> tuple[AccountRow, bool]:
    """Get or create; safe under concurrency (the unique key decides, the loser reads)."""
    inserted = (
        await session.execute(
            text(
                "INSERT INTO accounts (id, account_type, entity_id, currency) "
                "VALUES (:id, :type, :entity, :currency) "
                "ON CONFLICT ON CONSTRAINT accounts_owner_key DO NOTHING "
                "RETURNING id, account_type, entity_id, currency, created_at"
            ),
            {"id": uuid.uuid4(), "type": account_type.value, "entity": entity_id, "currency": currency},
        )
    ).first()
    if inserted is not None:
        await session.execute(
            text("INSERT INTO account_balances (account_id, debits, credits, balance, seq) VALUES (:id, 0, 0, 0, 0)"),
            {"id": inserted.id},
        )
        return _account(inserted), True
    existing = (
        await session.execute(
            text(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts a "  # noqa: S608 (a constant column list, no input)
                "WHERE a.account_type = :type AND a.entity_id = :entity AND a.currency = :currency"
            ),
            {"type": account_type.value, "entity": entity_id, "currency": currency},
        )
    ).one()
    return _account(existing), False


async def get_account(session: Executor, account_id: str) -> AccountRow:
    row = (
        await session.execute(text(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = :id"), {"id": account_id})  # noqa: S608 (a constant column list, no input)
    ).first()
    if row is None:
        raise domain.AccountNotFound(f"account {account_id} does not exist", metadata={"account_id": account_id})
    return _account(row)


async def get_balances(session: Executor, account_ids: Sequence[str]) -> list[BalanceRow]:
    """Balances in the order asked; AccountNotFound if any is missing."""
    rows = (
        await session.execute(
            text(
                "SELECT b.account_id, a.currency, b.balance, b.debits, b.credits, b.seq, b.updated_at, "
                "b.debits_pending, b.credits_pending, b.available "
                "FROM account_balances b JOIN accounts a ON a.id = b.account_id "
                "WHERE b.account_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": list(account_ids)},
        )
    ).all()
    by_id = {
        str(r.account_id): BalanceRow(
            str(r.account_id), r.currency, r.balance, r.debits, r.credits, r.seq, r.updated_at,
            r.debits_pending, r.credits_pending, r.available,
        )
        for r in rows
    }  # fmt: skip
    missing = [a for a in account_ids if a not in by_id]
    if missing:
        raise domain.AccountNotFound(f"account {missing[0]} does not exist", metadata={"account_id": missing[0]})
    return [by_id[a] for a in account_ids]


# -- entries --------------------------------------------------------------------
_ENTRY_COLUMNS = (
    "e.id, e.account_id, e.transaction_id, e.entry_type, e.amount, e.currency, e.description, e.seq, e.created_at, "
    "e.phase"
)


def _entry(row: Any) -> EntryRow:
    return EntryRow(
        str(row.id), str(row.account_id), row.transaction_id, EntryType(row.entry_type), row.amount,
        row.currency, row.description, row.seq, row.created_at, Phase(row.phase),
    )  # fmt: skip


async def list_entries(session: Executor, account_id: str, before_seq: int | None, limit: int) -> list[EntryRow]:
    """Newest first; `before_seq` continues a previous page."""
    rows = (
        await session.execute(
            text(
                f"SELECT {_ENTRY_COLUMNS} FROM ledger_entries e WHERE e.account_id = :account "  # noqa: S608 (a constant column list, no input)
                "AND (CAST(:before AS bigint) IS NULL OR e.seq < :before) ORDER BY e.seq DESC LIMIT :limit"
            ),
            {"account": account_id, "before": before_seq, "limit": limit},
        )
    ).all()
    return [_entry(r) for r in rows]


_TRANSACTION_COLUMNS = (
    "t.id, t.description, t.metadata, t.reverses_transaction_id, t.created_at, t.kind, t.pending_transaction_id, "
    "(SELECT r.id FROM ledger_transactions r WHERE r.pending_transaction_id = t.id) AS resolved_by"
)


async def get_transaction(session: Executor, transaction_id: str) -> TransactionRow:
    found = await _transactions(session, [transaction_id])
    if not found:
        raise domain.TransactionNotFound(
            f"transaction {transaction_id} does not exist", metadata={"transaction_id": transaction_id}
        )
    return found[0]


async def _transactions(session: Executor, transaction_ids: Sequence[str]) -> list[TransactionRow]:
    """The transactions with their entries, in the order of their first entry."""
    headers = (
        await session.execute(
            text(f"SELECT {_TRANSACTION_COLUMNS} FROM ledger_transactions t WHERE t.id = ANY(:ids)"),  # noqa: S608 (a constant column list, no input)
            {"ids": list(transaction_ids)},
        )
    ).all()
    entries = (
        await session.execute(
            text(
                f"SELECT {_ENTRY_COLUMNS} FROM ledger_entries e WHERE e.transaction_id = ANY(:ids) ORDER BY e.seq"  # noqa: S608 (a constant column list, no input)
            ),
            {"ids": list(transaction_ids)},
        )
    ).all()
    by_transaction: dict[str, list[EntryRow]] = {}
    for row in entries:
        by_transaction.setdefault(row.transaction_id, []).append(_entry(row))
    found = [
        TransactionRow(
            h.id, h.description, dict(h.metadata), h.reverses_transaction_id, h.created_at,
            tuple(by_transaction.get(h.id, ())), TransactionKind(h.kind), h.pending_transaction_id, h.resolved_by,
        )
        for h in headers
    ]  # fmt: skip
    return sorted(found, key=lambda t: t.entries[0].seq if t.entries else 0)


async def list_transactions(session: Executor, after_seq: int, limit: int) -> list[TransactionRow]:
    """The first `limit` transactions whose entries come after `after_seq`, in commit order.

    A transaction's entries are consecutive in `seq` (the sequence row is held
    until commit), so its first entry's seq orders it and resumes a listing.
    """
    ids: list[str] = []
    cursor = after_seq
    while len(ids) < limit:
        # A range scan of the seq index; most transactions have two to four entries.
        wanted = 4 * (limit - len(ids)) + 4
        rows = (
            await session.execute(
                text("SELECT transaction_id, seq FROM ledger_entries WHERE seq > :after ORDER BY seq LIMIT :n"),
                {"after": cursor, "n": wanted},
            )
        ).all()
        for row in rows:
            if not ids or ids[-1] != row.transaction_id:
                ids.append(row.transaction_id)
        if len(rows) < wanted:
            break
        cursor = rows[-1].seq
    return await _transactions(session, ids[:limit])


# -- posting --------------------------------------------------------------------
@dataclass(frozen=True)
class PostRequest:
    """One validated transaction to write. `kind` PENDING writes a reservation
    (the postings' phase says so); POST_PENDING and VOID_PENDING write the
    resolution of `resolves`; `reverses` names the transaction a reversal undoes."""

    transaction_id: str
    postings: tuple[Posting, ...]
    description: str
    metadata: dict[str, str]
    kind: TransactionKind = TransactionKind.POSTED
    reverses: str | None = None
    resolves: str | None = None

    @cached_property
    def fingerprint(self) -> str:
        return domain.fingerprint(self.postings, self.reverses, kind=self.kind, resolves=self.resolves)

    @property
    def exclusive_keys(self) -> tuple[tuple[str, str], ...]:
        """What two requests of one batch may not share: the id, and the transaction reversed or resolved."""
        keys = [("id", self.transaction_id)]
        if self.reverses is not None:
            keys.append(("reverses", self.reverses))
        if self.resolves is not None:
            keys.append(("resolves", self.resolves))
        return tuple(keys)


# What one request of a batch came to: the transaction and whether this request
# wrote it (False: a replay of the original), or the domain error that refused it.
PostOutcome = tuple[TransactionRow, bool] | DomainError


class RetryBatch(Exception):
    """The batch rolled back and must run again (a signal to its caller, never
    seen by a client): another ledger committed one of its transaction ids
    after the batch looked, and the rerun sees a replay."""


@dataclass
class _Accepted:
    request: PostRequest
    # Per posting: its offset in the batch's seq range and the account's state after it.
    legs: list[tuple[int, AccountState]]


async def post_batch(session: AsyncSession, requests: Sequence[PostRequest]) -> list[PostOutcome]:
    """Write the requests' transactions in this one database transaction; an
    outcome per request, in order. No two requests may share an exclusive key.

    A request refused by the rules (InsufficientFunds, CurrencyMismatch,
    AccountNotFound, IdempotencyKeyReused, AlreadyReversed,
    PendingAlreadyResolved) writes nothing and never fails the others: each is
    checked against the balances as the requests before it left them. The
    locks come first, then every read: a concurrent duplicate or a competing
    reversal or resolution touches the same accounts, so it has committed by
    the time the reads below run, and they see it.

    This is the ledger's hot path, so it talks to psycopg directly, in
    pipeline mode: three pipelined exchanges per batch (locks and reads; ids
    and seq range; entries, balances and notifications) besides the commit.
    Through SQLAlchemy each of its nine statements waited for its answer, and
    SQLAlchemy's own per-statement work was about a fifth of the process's CPU
    (py-spy under `bench/ledger.py`).
    """
    pg = await _driver(session)
    async with pg.pipeline():
        locking = pg.cursor(row_factory=dict_row)
        await locking.execute(_LOCK_BALANCES, (sorted({p.account_id for r in requests for p in r.postings}),))
        deciding = pg.cursor(row_factory=dict_row)
        await deciding.execute(
            _STORED_ANSWERS,
            (
                [r.transaction_id for r in requests],
                [r.reverses for r in requests if r.reverses is not None],
                [r.resolves for r in requests if r.resolves is not None],
            ),
        )
    locked, stored = await locking.fetchall(), await deciding.fetchall()
    states = {
        str(r["account_id"]): AccountState(
            str(r["account_id"]), AccountType(r["account_type"]), r["currency"], r["debits"], r["credits"],
            r["debits_pending"], r["credits_pending"],
        )
        for r in locked
    }  # fmt: skip
    entity_ids = {str(r["account_id"]): r["entity_id"] for r in locked}
    outcomes = await _already_decided(session, requests, stored)
    accepted: list[_Accepted] = []
    offset = 0
    for request in requests:
        if request.transaction_id in outcomes:
            continue
        # A missing account is simply absent: the domain refuses the posting that names it.
        touched = {p.account_id: states[p.account_id] for p in request.postings if p.account_id in states}
        try:
            after = domain.apply(touched, request.postings)
        except DomainError as refused:
            outcomes[request.transaction_id] = refused
            continue
        legs = []
        for posting in request.postings:
            touched[posting.account_id] = touched[posting.account_id].after(posting)
            legs.append((offset, touched[posting.account_id]))
            offset += 1
        states.update(after)
        accepted.append(_Accepted(request, legs))
    if accepted:
        for transaction in await _write(pg, accepted, entity_ids, entry_count=offset):
            outcomes[transaction.id] = (transaction, True)
    return [outcomes[r.transaction_id] for r in requests]


async def _driver(session: AsyncSession) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under the session, in the session's transaction."""
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    assert isinstance(driver, psycopg.AsyncConnection)
    return driver


# Balance rows in account-id order, so concurrent batches never deadlock.
_LOCK_BALANCES = (
    "SELECT b.account_id, a.account_type, a.entity_id, a.currency, b.debits, b.credits, "
    "b.debits_pending, b.credits_pending "
    "FROM account_balances b JOIN accounts a ON a.id = b.account_id "
    "WHERE b.account_id = ANY(%s::uuid[]) ORDER BY b.account_id FOR UPDATE OF b"
)
_STORED_ANSWERS = (
    "SELECT id, fingerprint, reverses_transaction_id, pending_transaction_id FROM ledger_transactions "
    "WHERE id = ANY(%s::text[]) OR reverses_transaction_id = ANY(%s::text[]) "
    "OR pending_transaction_id = ANY(%s::text[])"
)
# In id order (the arrays are sorted), so two batches that share a concurrent
# duplicate wait for each other in one order.
_CLAIM = (
    "INSERT INTO ledger_transactions (id, description, metadata, fingerprint, reverses_transaction_id, kind, "
    "pending_transaction_id) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::jsonb[], %s::text[], %s::text[], %s::text[], %s::text[]) "
    "ON CONFLICT (id) DO NOTHING RETURNING id, created_at"
)
_NUMBER = "UPDATE ledger_sequence SET last_seq = last_seq + %s WHERE id = 1 RETURNING last_seq"
_INSERT_ENTRY = (
    "INSERT INTO ledger_entries (id, transaction_id, account_id, entry_type, amount, currency, description, "
    "seq, debits_after, credits_after, balance_after, phase, debits_pending_after, credits_pending_after) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_UPDATE_BALANCE = (
    "UPDATE account_balances SET debits = %s, credits = %s, balance = %s, seq = %s, debits_pending = %s, "
    "credits_pending = %s, available = %s, updated_at = now() WHERE account_id = %s"
)
# A function scan returns the array's elements in order, so the NOTIFYs are sent in seq order.
_NOTIFY = "SELECT pg_notify(%s, payload) FROM unnest(%s::text[]) AS payload"


async def _already_decided(
    session: AsyncSession, requests: Sequence[PostRequest], stored: Sequence[dict[str, Any]]
) -> dict[str, PostOutcome]:
    """The requests the stored transactions already answer: replays (the
    original), an id reused with other entries, and reversals or resolutions
    of a transaction another one already reversed or resolved."""
    by_id = {r["id"]: r["fingerprint"] for r in stored}
    reversed_by = {r["reverses_transaction_id"]: r["id"] for r in stored if r["reverses_transaction_id"] is not None}
    resolved_by = {r["pending_transaction_id"]: r["id"] for r in stored if r["pending_transaction_id"] is not None}
    decided: dict[str, PostOutcome] = {}
    replays = []
    for r in requests:
        if r.transaction_id in by_id:
            if by_id[r.transaction_id] == r.fingerprint:
                replays.append(r.transaction_id)
            else:
                decided[r.transaction_id] = IdempotencyKeyReused(
                    f"transaction {r.transaction_id} was posted with different entries",
                    metadata={"transaction_id": r.transaction_id},
                )
        elif r.reverses is not None and r.reverses in reversed_by:
            decided[r.transaction_id] = domain.AlreadyReversed(
                f"transaction {r.reverses} is already reversed", metadata={"transaction_id": r.reverses}
            )
        elif r.resolves is not None and r.resolves in resolved_by:
            decided[r.transaction_id] = domain.PendingAlreadyResolved(
                f"transaction {r.resolves} was posted or voided by another transaction",
                metadata={"transaction_id": r.resolves},
            )
    for original in await _transactions(session, replays) if replays else ():
        decided[original.id] = (original, False)
    return decided


async def _write(
    pg: psycopg.AsyncConnection[Any], accepted: Sequence[_Accepted], entity_ids: dict[str, str], *, entry_count: int
) -> list[TransactionRow]:
    """Headers, seq range, entries, balances and notifications of the accepted requests."""
    requests = sorted((a.request for a in accepted), key=lambda r: r.transaction_id)
    # The "once" constraints (a transaction reversed, a reservation resolved, once)
    # are a backstop here: the reads under the locks decided those already, so a
    # violation is a bug, and it fails the batch with nothing written.
    async with pg.pipeline():
        claiming = pg.cursor(row_factory=dict_row)
        await claiming.execute(
            _CLAIM,
            (
                [r.transaction_id for r in requests],
                [r.description for r in requests],
                [json.dumps(r.metadata) for r in requests],
                [r.fingerprint for r in requests],
                [r.reverses for r in requests],
                [r.kind.value for r in requests],
                [r.resolves for r in requests],
            ),
        )
        numbering = pg.cursor()
        await numbering.execute(_NUMBER, (entry_count,))
    claimed = await claiming.fetchall()
    if len(claimed) < len(requests):
        raise RetryBatch
    created = claimed[0]["created_at"]  # now(): the transaction's start, as the entries' default
    numbered = await numbering.fetchone()
    assert numbered is not None
    first_seq = numbered[0] - entry_count + 1

    entries: list[tuple[Any, ...]] = []
    final: dict[str, tuple[AccountState, int]] = {}  # account -> (state, seq) after the batch
    committed: list[list[BalanceChange]] = []
    transactions = []
    for item in accepted:
        request = item.request
        rows: list[EntryRow] = []
        changes: dict[str, BalanceChange] = {}
        for posting, (offset, state) in zip(request.postings, item.legs, strict=True):
            seq = first_seq + offset
            entry_id = uuid.uuid4()
            entries.append(
                (
                    entry_id, request.transaction_id, posting.account_id, posting.entry_type.value, posting.amount,
                    posting.currency, request.description, seq, state.debits, state.credits, state.balance,
                    posting.phase.value, state.debits_pending, state.credits_pending,
                )
            )  # fmt: skip
            rows.append(
                EntryRow(str(entry_id), posting.account_id, request.transaction_id, posting.entry_type,
                         posting.amount, posting.currency, request.description, seq, created, posting.phase)
            )  # fmt: skip
            final[posting.account_id] = (state, seq)
            # Watchers see each account once per transaction, at its committed state:
            # an account touched twice never shows the balance between its legs.
            changes.pop(posting.account_id, None)
            changes[posting.account_id] = BalanceChange(
                state.account_id, state.account_type, entity_ids[state.account_id], state.currency,
                state.balance, state.debits, state.credits, seq, request.transaction_id,
                state.debits_pending, state.credits_pending,
            )  # fmt: skip
        committed.append(list(changes.values()))
        transaction = TransactionRow(
            request.transaction_id, request.description, request.metadata, request.reverses, created,
            tuple(rows), request.kind, request.resolves, None,
        )  # fmt: skip
        transactions.append(transaction)
    async with pg.pipeline(), pg.cursor() as cursor:
        await cursor.executemany(_INSERT_ENTRY, entries)
        await cursor.executemany(
            _UPDATE_BALANCE,
            [
                (s.debits, s.credits, s.balance, seq, s.debits_pending, s.credits_pending, s.available, account)
                for account, (s, seq) in final.items()
            ],
        )
        await cursor.execute(_NOTIFY, (NOTIFY_CHANNEL, notifications(committed)))
    return transactions


def notifications(transactions: Sequence[Sequence[BalanceChange]]) -> list[str]:
    """The transactions' changes as few NOTIFY payloads as fit PostgreSQL's
    limit, in seq order. A transaction too large for one payload is sent as its
    seq range; listeners read it back."""
    payloads: list[str] = []
    rows: list[str] = []
    size = 0
    for changes in transactions:
        encoded = [json.dumps(c.to_json(), separators=(",", ":")) for c in changes]
        length = sum(len(e) + 1 for e in encoded)
        if rows and (size + length > MAX_NOTIFY_PAYLOAD or length > MAX_NOTIFY_PAYLOAD):
            payloads.append("[" + ",".join(rows) + "]")
            rows, size = [], 0
        if length > MAX_NOTIFY_PAYLOAD:
            payloads.append(json.dumps({"from": changes[0].seq, "to": changes[-1].seq}))
            continue
        rows.extend(encoded)
        size += length
    if rows:
        payloads.append("[" + ",".join(rows) + "]")
    return payloads


# -- streams ----------------------------------------------------------------------
async def last_seq(connection: Executor) -> int:
    return int((await connection.execute(text("SELECT last_seq FROM ledger_sequence WHERE id = 1"))).scalar_one())


async def changes_after(
    connection: Executor,
    *,
    after_seq: int,
    up_to_seq: int | None,
    account_ids: Sequence[str] = (),
    account_types: Sequence[AccountType] = (),
    limit: int = 1000,
) -> list[BalanceChange]:
    """Entries with after_seq < seq <= up_to_seq matching the filter, as balance changes, in seq order."""
    # Each filter shape gets a predicate PostgreSQL can serve from an index:
    # (account_id, seq) for ids, the unique seq index for types.
    if account_ids and account_types:
        matches = "(e.account_id = ANY(CAST(:ids AS uuid[])) OR a.account_type = ANY(CAST(:types AS text[])))"
    elif account_ids:
        matches = "e.account_id = ANY(CAST(:ids AS uuid[]))"
    else:
        matches = "a.account_type = ANY(CAST(:types AS text[]))"
    rows = (
        await connection.execute(
            text(
                "SELECT e.account_id, a.account_type, a.entity_id, e.currency, e.balance_after, e.debits_after, "  # noqa: S608 (fixed predicates, no input)
                "e.credits_after, e.seq, e.transaction_id, e.debits_pending_after, e.credits_pending_after "
                "FROM ledger_entries e JOIN accounts a ON a.id = e.account_id "
                f"WHERE {matches} AND e.seq > :after AND (CAST(:upto AS bigint) IS NULL OR e.seq <= :upto) "
                # Only an account's last entry in each transaction: its committed state.
                "AND NOT EXISTS (SELECT 1 FROM ledger_entries later WHERE later.transaction_id = e.transaction_id "
                "AND later.account_id = e.account_id AND later.seq > e.seq) "
                "ORDER BY e.seq LIMIT :limit"
            ),
            {
                "after": after_seq,
                "upto": up_to_seq,
                "ids": list(account_ids),
                "types": [t.value for t in account_types],
                "limit": limit,
            },
        )
    ).all()
    return [
        BalanceChange(
            str(r.account_id), AccountType(r.account_type), r.entity_id, r.currency, r.balance_after,
            r.debits_after, r.credits_after, r.seq, r.transaction_id, r.debits_pending_after,
            r.credits_pending_after,
        )
        for r in rows
    ]  # fmt: skip


# -- audit ----------------------------------------------------------------------
async def reconcile(session: AsyncSession) -> tuple[list[Difference], int, int]:
    """Stored totals vs totals recomputed from every entry; (differences, accounts, entries).

    Posted totals are the sums of POSTED entries; pending ones the PENDING
    entries less the PENDING_RESOLVED ones that took them off.
    """
    rows = (
        await session.execute(
            text(
                "SELECT b.account_id, b.debits, b.credits, b.balance, b.debits_pending, b.credits_pending, "
                "b.available, a.account_type, "
                "COALESCE(s.debits, 0) AS computed_debits, COALESCE(s.credits, 0) AS computed_credits, "
                "COALESCE(s.debits_pending, 0) AS computed_debits_pending, "
                "COALESCE(s.credits_pending, 0) AS computed_credits_pending "
                "FROM account_balances b JOIN accounts a ON a.id = b.account_id LEFT JOIN ("
                "  SELECT account_id,"
                "    SUM(amount) FILTER (WHERE entry_type = 'DEBIT' AND phase = 'POSTED') AS debits,"
                "    SUM(amount) FILTER (WHERE entry_type = 'CREDIT' AND phase = 'POSTED') AS credits,"
                "    SUM(CASE phase WHEN 'PENDING' THEN amount WHEN 'PENDING_RESOLVED' THEN -amount END)"
                "      FILTER (WHERE entry_type = 'DEBIT') AS debits_pending,"
                "    SUM(CASE phase WHEN 'PENDING' THEN amount WHEN 'PENDING_RESOLVED' THEN -amount END)"
                "      FILTER (WHERE entry_type = 'CREDIT') AS credits_pending"
                "  FROM ledger_entries GROUP BY account_id"
                ") s ON s.account_id = b.account_id"
            )
        )
    ).all()
    entries = int((await session.execute(text("SELECT count(*) FROM ledger_entries"))).scalar_one())
    differences = []
    for r in rows:
        account_type = AccountType(r.account_type)
        computed = (int(r.computed_debits), int(r.computed_credits))
        computed_pending = (int(r.computed_debits_pending), int(r.computed_credits_pending))
        if (
            (r.debits, r.credits) != computed
            or (r.debits_pending, r.credits_pending) != computed_pending
            or r.balance != domain.normal_balance(account_type, r.debits, r.credits)
            or r.available != domain.available(account_type, r.debits, r.credits, *computed_pending)
        ):
            differences.append(
                Difference(
                    str(r.account_id), r.debits, computed[0], r.credits, computed[1],
                    (r.debits_pending, r.credits_pending), computed_pending,
                )
            )  # fmt: skip
    return differences, len(rows), entries
