"""Ledger rules without a database: validation, normal sides, floors, fingerprints, visibility."""

import hashlib
import json
import uuid

import pytest

from services.common.errors import ValidationFailed
from services.common.ids import canonical_id
from services.ledger import domain
from services.ledger.domain import AccountState, AccountType, EntryType, Posting

A, B, C = (str(uuid.uuid4()) for _ in range(3))


def state(account_id: str, kind: AccountType, debits: int = 0, credits: int = 0, currency: str = "NGN") -> AccountState:
    return AccountState(account_id, kind, currency, debits, credits)


def test_escrow_is_debit_normal_and_the_others_credit_normal() -> None:
    assert domain.normal_balance(AccountType.ESCROW, 100, 30) == 70
    for kind in (AccountType.USER, AccountType.GOAL, AccountType.REVENUE):
        assert domain.normal_balance(kind, 30, 100) == 70


def test_contribution_raises_escrow_and_goal_together() -> None:
    after = domain.apply(
        {A: state(A, AccountType.ESCROW), B: state(B, AccountType.GOAL)},
        [Posting(A, EntryType.DEBIT, 500, "NGN"), Posting(B, EntryType.CREDIT, 500, "NGN")],
    )
    assert (after[A].balance, after[B].balance) == (500, 500)


@pytest.mark.parametrize("kind", list(AccountType))
def test_no_account_may_go_below_zero_on_its_normal_side(kind: AccountType) -> None:
    other = AccountType.GOAL if kind is AccountType.ESCROW else AccountType.ESCROW
    accounts = {A: state(A, kind), B: state(B, other, debits=1_000, credits=1_000)}
    shrink = EntryType.CREDIT if kind.debit_normal else EntryType.DEBIT
    with pytest.raises(domain.InsufficientFunds) as raised:
        domain.apply(accounts, [Posting(A, shrink, 1, "NGN"), Posting(B, shrink.flipped(), 1, "NGN")])
    assert raised.value.metadata["account_id"] == A


def test_apply_checks_currency_and_existence() -> None:
    accounts = {A: state(A, AccountType.GOAL, credits=100), B: state(B, AccountType.USER)}
    with pytest.raises(domain.CurrencyMismatch):
        domain.apply(accounts, [Posting(A, EntryType.DEBIT, 10, "GHS"), Posting(B, EntryType.CREDIT, 10, "GHS")])
    with pytest.raises(domain.AccountNotFound):
        domain.apply(accounts, [Posting(A, EntryType.DEBIT, 10, "NGN"), Posting(C, EntryType.CREDIT, 10, "NGN")])


def test_validation_reports_every_problem_and_then_balance() -> None:
    with pytest.raises(ValidationFailed) as raised:
        domain.validate_transaction("has spaces", [Posting("x", EntryType.DEBIT, 0, "EUR")], "d" * 501)
    fields = {v.field for v in raised.value.violations}
    assert {"transaction_id", "description", "postings", "postings[0].account_id", "postings[0].amount"} <= fields
    with pytest.raises(ValidationFailed) as unbalanced:
        domain.validate_transaction(
            "t-1", [Posting(A, EntryType.DEBIT, 10, "NGN"), Posting(B, EntryType.CREDIT, 9, "NGN")], ""
        )
    assert unbalanced.value.reason == "UNBALANCED_TRANSACTION"


def test_balance_is_checked_per_currency() -> None:
    mixed = [
        Posting(A, EntryType.DEBIT, 10, "NGN"),
        Posting(B, EntryType.CREDIT, 10, "GHS"),
    ]
    with pytest.raises(ValidationFailed, match="NGN"):
        domain.validate_transaction("t-2", mixed, "")


def test_fingerprint_ignores_order_but_not_content() -> None:
    one = [Posting(A, EntryType.DEBIT, 10, "NGN"), Posting(B, EntryType.CREDIT, 10, "NGN")]
    assert domain.fingerprint(one) == domain.fingerprint(list(reversed(one)))
    assert domain.fingerprint(one) != domain.fingerprint([Posting(A, EntryType.DEBIT, 11, "NGN"), one[1]])


def test_fingerprint_covers_what_a_transaction_reverses() -> None:
    legs = [Posting(A, EntryType.CREDIT, 10, "NGN"), Posting(B, EntryType.DEBIT, 10, "NGN")]
    assert domain.fingerprint(legs, "t-1") != domain.fingerprint(legs, "t-2") != domain.fingerprint(legs)


def test_ids_are_compared_in_one_canonical_form() -> None:
    assert canonical_id(A.upper()) == A
    assert canonical_id("{" + A + "}") == A
    assert canonical_id(A.replace("-", "")) == A
    assert canonical_id("platform") is None


def test_reversal_flips_every_side() -> None:
    original = [Posting(A, EntryType.DEBIT, 10, "NGN"), Posting(B, EntryType.CREDIT, 10, "NGN")]
    assert [p.entry_type for p in domain.reversal(original)] == [EntryType.CREDIT, EntryType.DEBIT]


def test_platform_accounts_belong_to_platform_and_others_to_a_uuid() -> None:
    domain.validate_account_key(AccountType.ESCROW, "platform", "NGN")
    domain.validate_account_key(AccountType.USER, A, "USD")
    for args in ((AccountType.ESCROW, A, "NGN"), (AccountType.GOAL, "platform", "NGN"), (None, A, "NGN")):
        with pytest.raises(ValidationFailed):
            domain.validate_account_key(*args)


def test_visibility_follows_the_api_rules() -> None:
    assert domain.can_view(AccountType.GOAL, A, None, ())
    assert domain.can_view(AccountType.USER, A, A, ())
    assert not domain.can_view(AccountType.USER, A, B, ())
    assert not domain.can_view(AccountType.ESCROW, "platform", A, ())
    assert domain.can_view(AccountType.REVENUE, "platform", A, {"ledger:read_any"})
    assert domain.can_view(AccountType.USER, A, B, {"admin:*"})


# -- reservations -------------------------------------------------------------------
def reservation_of(amount: int) -> list[Posting]:
    return domain.pending(
        [Posting(GOAL_ID, EntryType.DEBIT, amount, "NGN"), Posting(ESCROW_ID, EntryType.CREDIT, amount, "NGN")]
    )


GOAL_ID = "00000000-0000-0000-0000-0000000000a1"
ESCROW_ID = "00000000-0000-0000-0000-0000000000e1"


def funded(amount: int) -> dict[str, AccountState]:
    return {
        GOAL_ID: AccountState(GOAL_ID, AccountType.GOAL, "NGN", 0, amount),
        ESCROW_ID: AccountState(ESCROW_ID, AccountType.ESCROW, "NGN", amount, 0),
    }


def test_a_reservation_counts_against_what_is_available_not_the_balance() -> None:
    after = domain.apply(funded(10_000), reservation_of(6000))
    goal, escrow = after[GOAL_ID], after[ESCROW_ID]
    assert (goal.balance, goal.available, goal.debits_pending) == (10_000, 4000, 6000)
    assert (escrow.balance, escrow.available, escrow.credits_pending) == (10_000, 4000, 6000)
    with pytest.raises(domain.InsufficientFunds):
        domain.apply(after, reservation_of(4001))


def test_posting_a_reservation_moves_the_money_and_voiding_it_gives_it_back() -> None:
    held = domain.apply(funded(10_000), reservation_of(6000))
    posted = domain.apply(held, domain.resolution(reservation_of(6000), domain.TransactionKind.POST_PENDING))
    assert (posted[GOAL_ID].balance, posted[GOAL_ID].available, posted[GOAL_ID].debits_pending) == (4000, 4000, 0)
    assert (posted[ESCROW_ID].balance, posted[ESCROW_ID].credits_pending) == (4000, 0)
    voided = domain.apply(held, domain.resolution(reservation_of(6000), domain.TransactionKind.VOID_PENDING))
    assert (voided[GOAL_ID].balance, voided[GOAL_ID].available, voided[GOAL_ID].debits_pending) == (10_000, 10_000, 0)


def test_money_reserved_to_arrive_is_not_available_until_posted() -> None:
    incoming = domain.pending(
        [Posting(ESCROW_ID, EntryType.DEBIT, 500, "NGN"), Posting(GOAL_ID, EntryType.CREDIT, 500, "NGN")]
    )
    after = domain.apply(funded(0), incoming)
    assert (after[GOAL_ID].available, after[GOAL_ID].credits_pending) == (0, 500)


def test_a_posted_transaction_prints_as_it_did_before_reservations_existed() -> None:
    postings = [Posting(GOAL_ID, EntryType.DEBIT, 700, "NGN"), Posting(ESCROW_ID, EntryType.CREDIT, 700, "NGN")]
    canonical = sorted((p.account_id, p.entry_type.value, p.amount, p.currency) for p in postings)
    before = hashlib.sha256(
        json.dumps({"postings": canonical, "reverses": None}, separators=(",", ":")).encode()
    ).hexdigest()
    assert domain.fingerprint(postings) == before
    # The same postings as a reservation, or as its resolution, are other transactions.
    assert domain.fingerprint(domain.pending(postings), kind=domain.TransactionKind.PENDING) != before
