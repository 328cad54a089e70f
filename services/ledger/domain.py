"""Ledger rules: double entry, normal sides, balance floors, two-phase outflows.
Pure: no SQL, no gRPC.

Every account has a normal side. ESCROW (the platform's cash at Paystack) is
debit-normal; USER, GOAL and REVENUE (what the platform owes or has earned) are
credit-normal. An account's balance is measured on its normal side and may never
go below zero: a GOAL or USER account cannot pay out more than it holds, and
ESCROW cannot hold less than nothing. (DESIGN.md names the floor for GOAL, USER
and ESCROW; REVENUE gets it too, since fees are only ever earned, never owed.)

Money that leaves the platform is reserved first (TigerBeetle's pending
transfers): a PENDING transaction's entries add to the accounts' pending totals
instead of their posted ones, and the floor applies to what is *available* —
the balance less the pending amounts on the account's outgoing side — so a
second outflow of money already reserved is refused as InsufficientFunds. One
POST_PENDING (the pending amounts become posted) or VOID_PENDING (they are
released) transaction resolves a reservation, once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from services.common.errors import DomainError, Validator
from services.common.ids import check_id
from services.common.money import SUPPORTED_CURRENCIES

PLATFORM_ENTITY = "platform"
MAX_AMOUNT = 10**15  # minor units; far above any real transfer, far below int64
MAX_TRANSACTION_ID = 200
MAX_DESCRIPTION = 500
MAX_POSTINGS = 100
_TRANSACTION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,200}$")


class AccountType(StrEnum):
    USER = "USER"
    GOAL = "GOAL"
    ESCROW = "ESCROW"
    REVENUE = "REVENUE"

    @property
    def debit_normal(self) -> bool:
        return self is AccountType.ESCROW

    @property
    def platform(self) -> bool:
        return self in (AccountType.ESCROW, AccountType.REVENUE)


class EntryType(StrEnum):
    DEBIT = "DEBIT"
    CREDIT = "CREDIT"

    def flipped(self) -> EntryType:
        return EntryType.CREDIT if self is EntryType.DEBIT else EntryType.DEBIT


class Phase(StrEnum):
    """What an entry does to its account's totals."""

    POSTED = "POSTED"  # adds to the posted debits or credits
    PENDING = "PENDING"  # adds to the pending debits or credits (a reservation)
    PENDING_RESOLVED = "PENDING_RESOLVED"  # takes a pending amount off (a reservation posted or voided)


class TransactionKind(StrEnum):
    POSTED = "POSTED"
    PENDING = "PENDING"
    POST_PENDING = "POST_PENDING"
    VOID_PENDING = "VOID_PENDING"

    @property
    def resolves(self) -> bool:
        return self in (TransactionKind.POST_PENDING, TransactionKind.VOID_PENDING)


# -- errors ---------------------------------------------------------------------
class AccountNotFound(DomainError):
    pass


class InvalidAccountId(DomainError):
    pass


class TransactionNotFound(DomainError):
    pass


class InsufficientFunds(DomainError):
    pass


class AlreadyReversed(DomainError):
    pass


class CurrencyMismatch(DomainError):
    pass


class NotPending(DomainError):
    """Only a reservation (a PENDING transaction) can be posted or voided."""


class PendingAlreadyResolved(DomainError):
    """The reservation was posted or voided by another transaction."""


class NotReversible(DomainError):
    """A reservation or its resolution is not reversed: a reservation is voided instead."""


# -- values ---------------------------------------------------------------------
@dataclass(frozen=True)
class Posting:
    account_id: str
    entry_type: EntryType
    amount: int
    currency: str
    phase: Phase = Phase.POSTED


@dataclass(frozen=True)
class AccountState:
    """What posting needs to know about an account: its side and its totals."""

    account_id: str
    account_type: AccountType
    currency: str
    debits: int
    credits: int
    debits_pending: int = 0
    credits_pending: int = 0

    @property
    def balance(self) -> int:
        return normal_balance(self.account_type, self.debits, self.credits)

    @property
    def available(self) -> int:
        return available(self.account_type, self.debits, self.credits, self.debits_pending, self.credits_pending)

    def after(self, posting: Posting) -> AccountState:
        """The state once `posting` is applied."""
        debit = posting.amount if posting.entry_type is EntryType.DEBIT else 0
        credit = posting.amount - debit
        debits, credits = self.debits, self.credits
        debits_pending, credits_pending = self.debits_pending, self.credits_pending
        if posting.phase is Phase.POSTED:
            debits, credits = debits + debit, credits + credit
        elif posting.phase is Phase.PENDING:
            debits_pending, credits_pending = debits_pending + debit, credits_pending + credit
        else:
            debits_pending, credits_pending = debits_pending - debit, credits_pending - credit
        return AccountState(
            self.account_id, self.account_type, self.currency, debits, credits, debits_pending, credits_pending
        )


def normal_balance(account_type: AccountType, debits: int, credits: int) -> int:
    """The balance on the account's normal side."""
    return debits - credits if account_type.debit_normal else credits - debits


def available(account_type: AccountType, debits: int, credits: int, debits_pending: int, credits_pending: int) -> int:
    """The balance less what is reserved to leave the account: pending debits of a
    credit-normal account, pending credits of a debit-normal one. Money reserved
    to arrive is not available until it is posted."""
    outgoing = credits_pending if account_type.debit_normal else debits_pending
    return normal_balance(account_type, debits, credits) - outgoing


# -- validation -----------------------------------------------------------------
def validate_account_key(account_type: AccountType | None, entity_id: str, currency: str) -> None:
    check = Validator()
    check.require(
        account_type is not None,
        "account_type",
        "must be USER, GOAL, ESCROW or REVENUE",
        "INVALID_ACCOUNT_TYPE",
    )
    if account_type is not None:
        if account_type.platform:
            check.require(
                entity_id == PLATFORM_ENTITY, "entity_id", f'must be "{PLATFORM_ENTITY}"', "INVALID_ENTITY_ID"
            )
        else:
            check_id(check, entity_id, "entity_id", "INVALID_ENTITY_ID")
    check.require(
        currency in SUPPORTED_CURRENCIES,
        "currency",
        f"must be one of {', '.join(sorted(SUPPORTED_CURRENCIES))}",
        "UNSUPPORTED_CURRENCY",
    )
    check.raise_if_invalid()


def validate_transaction(transaction_id: str, postings: Sequence[Posting], description: str) -> None:
    """Shape rules checked before touching the database; all violations reported at once."""
    check = Validator()
    check.require(
        bool(_TRANSACTION_ID.match(transaction_id)),
        "transaction_id",
        f"must be 1 to {MAX_TRANSACTION_ID} characters of letters, digits and ._:-",
        "INVALID_TRANSACTION_ID",
    )
    check.require(
        len(description) <= MAX_DESCRIPTION,
        "description",
        f"at most {MAX_DESCRIPTION} characters",
        "INVALID_DESCRIPTION",
    )
    check.require(
        2 <= len(postings) <= MAX_POSTINGS,
        "postings",
        f"must have 2 to {MAX_POSTINGS} postings",
        "TOO_FEW_POSTINGS",
    )
    for index, posting in enumerate(postings):
        field = f"postings[{index}]"
        check_id(check, posting.account_id, f"{field}.account_id", "INVALID_ACCOUNT_ID")
        check.require(
            0 < posting.amount <= MAX_AMOUNT,
            f"{field}.amount",
            "must be positive (minor units)",
            "INVALID_AMOUNT",
        )
        check.require(
            posting.currency in SUPPORTED_CURRENCIES,
            f"{field}.currency",
            "unsupported currency",
            "UNSUPPORTED_CURRENCY",
        )
    check.raise_if_invalid()
    totals: dict[str, int] = defaultdict(int)
    for posting in postings:
        totals[posting.currency] += posting.amount if posting.entry_type is EntryType.DEBIT else -posting.amount
    unbalanced = sorted(currency for currency, total in totals.items() if total != 0)
    if unbalanced:
        check.require(
            False,
            "postings",
            f"debits must equal credits in {', '.join(unbalanced)}",
            "UNBALANCED_TRANSACTION",
        )
        check.raise_if_invalid()


def fingerprint(
    postings: Iterable[Posting],
    reverses: str | None = None,
    *,
    kind: TransactionKind = TransactionKind.POSTED,
    resolves: str | None = None,
) -> str:
    """Identity of a transaction's content for idempotency: same postings (in any order),
    same kind and same reversed or resolved transaction, same print. A posted
    transaction prints as it always has, so replays of ones written before
    reservations existed still match."""
    canonical = sorted(
        (p.account_id, p.entry_type.value, p.amount, p.currency) + (() if p.phase is Phase.POSTED else (p.phase.value,))
        for p in postings
    )
    content: dict[str, object] = {"postings": canonical, "reverses": reverses}
    if kind is not TransactionKind.POSTED:
        content.update(kind=kind.value, resolves=resolves)
    return hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()


def apply(accounts: Mapping[str, AccountState], postings: Sequence[Posting]) -> dict[str, AccountState]:
    """The accounts' states after the postings, or InsufficientFunds / CurrencyMismatch.

    `accounts` must hold every account the postings name (a missing one is
    AccountNotFound). Nothing is changed when an error is raised.
    """
    after = dict(accounts)
    for posting in postings:
        state = after.get(posting.account_id)
        if state is None:
            raise AccountNotFound(
                f"account {posting.account_id} does not exist", metadata={"account_id": posting.account_id}
            )
        if state.currency != posting.currency:
            raise CurrencyMismatch(
                f"account {state.account_id} is in {state.currency}, the posting in {posting.currency}",
                metadata={"account_id": state.account_id},
            )
        after[posting.account_id] = state.after(posting)
    for account_id, state in after.items():
        if min(state.debits_pending, state.credits_pending) < 0:
            # Only a resolution takes pending amounts off, and only its own: a bug, never input.
            raise AssertionError(f"account {account_id}: pending totals would go below zero")
        if state.available < 0:
            raise InsufficientFunds(
                f"account {account_id} ({state.account_type.value}) would go below zero",
                metadata={
                    "account_id": account_id,
                    "balance": str(accounts[account_id].balance),
                    "available": str(accounts[account_id].available),
                },
            )
    return after


def reversal(postings: Iterable[Posting]) -> list[Posting]:
    """The postings that undo `postings`."""
    return [Posting(p.account_id, p.entry_type.flipped(), p.amount, p.currency) for p in postings]


def pending(postings: Iterable[Posting]) -> list[Posting]:
    """`postings` as a reservation."""
    return [Posting(p.account_id, p.entry_type, p.amount, p.currency, Phase.PENDING) for p in postings]


def resolution(reserved: Iterable[Posting], kind: TransactionKind) -> list[Posting]:
    """The postings that resolve a reservation's entries: each pending amount taken
    off, and for a post, the same amount posted on the same side."""
    postings: list[Posting] = []
    for p in reserved:
        postings.append(Posting(p.account_id, p.entry_type, p.amount, p.currency, Phase.PENDING_RESOLVED))
        if kind is TransactionKind.POST_PENDING:
            postings.append(Posting(p.account_id, p.entry_type, p.amount, p.currency, Phase.POSTED))
    return postings


def can_view(account_type: AccountType, entity_id: str, user_id: str | None, permissions: Iterable[str]) -> bool:
    """Visibility (API.md): GOAL public, USER to its user, ESCROW/REVENUE with ledger:read_any."""
    if account_type is AccountType.GOAL:
        return True
    granted = set(permissions)
    if "admin:*" in granted or "ledger:read_any" in granted:
        return True
    return account_type is AccountType.USER and user_id is not None and user_id == entity_id
