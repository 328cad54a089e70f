"""Property test: any sequence of valid and invalid postings, reservations and their
resolutions keeps the ledger's invariants.

After every step, on real PostgreSQL: debits equal credits per currency, no
account has less than nothing available (its balance less what is reserved to
leave it), every stored total equals the sum of its entries, and the totals equal
a plain Python model of the steps that should have succeeded (a refused step
changes nothing; a reservation is posted or voided once, never twice).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from services.common.db import Database
from services.common.errors import DomainError
from services.ledger import domain
from services.ledger.domain import AccountType, EntryType, Posting, TransactionKind
from services.ledger.streams import Broadcaster
from services.ledger.use_cases import Ledger
from tests.conftest import migrated_database

CURRENCIES = ("NGN", "USD")
# Per example: the platform escrow per currency and three fresh credit-normal accounts per currency.
ACCOUNT_KINDS = (AccountType.GOAL, AccountType.USER, AccountType.GOAL)


@dataclass(frozen=True)
class Step:
    source: int  # index into the example's accounts of that currency (0 = escrow)
    target: int  # ... or, to resolve, which reservation (modulo how many there are)
    amount: int
    currency: str
    twist: str  # "none", "unbalanced", "wrong_currency"
    action: str  # "post", "reserve", "settle" / "void" a reservation, "again" (resolve one twice)


steps = st.lists(
    st.builds(
        Step,
        source=st.integers(0, 3),
        target=st.integers(0, 3),
        amount=st.integers(1, 2_000),
        currency=st.sampled_from(CURRENCIES),
        twist=st.sampled_from(("none",) * 6 + ("unbalanced", "wrong_currency")),
        action=st.sampled_from(("post", "post", "post", "reserve", "reserve", "settle", "void", "again")),
    ),
    min_size=1,
    max_size=20,
)

# Per account: posted debits, posted credits, pending debits, pending credits.
Totals = tuple[int, int, int, int]


def model_available(kind: AccountType, totals: Totals) -> int:
    """Written out here rather than taken from the domain, so the test checks the domain."""
    debits, credits, debits_pending, credits_pending = totals
    if kind is AccountType.ESCROW:
        return debits - credits - credits_pending
    return credits - debits - debits_pending


def with_postings(model: dict[str, Totals], postings: list[Posting], phase: str) -> dict[str, Totals]:
    """The model after `postings` in `phase`: posted, pending, or a pending amount taken off (resolved)."""
    after = dict(model)
    for p in postings:
        debits, credits, debits_pending, credits_pending = after.get(p.account_id, (0, 0, 0, 0))
        debit, credit = (p.amount, 0) if p.entry_type is EntryType.DEBIT else (0, p.amount)
        if phase == "posted":
            after[p.account_id] = (debits + debit, credits + credit, debits_pending, credits_pending)
        elif phase == "pending":
            after[p.account_id] = (debits, credits, debits_pending + debit, credits_pending + credit)
        else:
            after[p.account_id] = (debits, credits, debits_pending - debit, credits_pending - credit)
    return after


@pytest.fixture(scope="module")
def ledger_url(postgres_port: int) -> str:
    return migrated_database(postgres_port, "ledger")


def postings_for(step: Step, accounts: dict[str, list[str]]) -> list[Posting]:
    """Money moves source -> target: always a debit of the source and a credit of the target.

    Escrow (index 0) is debit-normal, so as the source it is funding (cash arrives and
    is owed to the target); as the target it is money leaving the platform (the
    source's balance goes out through Paystack). Between the others it is a transfer.
    """
    chain = accounts[step.currency]
    source, target = chain[step.source], chain[step.target]
    amount_in = step.amount + (1 if step.twist == "unbalanced" else 0)
    currency_in = next(c for c in CURRENCIES if c != step.currency) if step.twist == "wrong_currency" else step.currency
    return [
        Posting(source, EntryType.DEBIT, step.amount, step.currency),
        Posting(target, EntryType.CREDIT, amount_in, currency_in),
    ]


async def run_example(url: str, example: list[Step]) -> None:
    database = Database("ledger", url, pool_size=2)
    ledger = Ledger(database, Broadcaster(database))
    try:
        accounts: dict[str, list[str]] = {}
        kinds: dict[str, AccountType] = {}
        for currency in CURRENCIES:
            escrow, _ = await ledger.open_account(AccountType.ESCROW, "platform", currency)
            chain = [escrow.id]
            kinds[escrow.id] = AccountType.ESCROW
            for kind in ACCOUNT_KINDS:
                account, _ = await ledger.open_account(kind, str(uuid.uuid4()), currency)
                chain.append(account.id)
                kinds[account.id] = kind
            accounts[currency] = chain
        mine = [a for chain in accounts.values() for a in chain]
        start = {
            b.account_id: (b.debits, b.credits, b.debits_pending, b.credits_pending)
            for b in await ledger.balances(mine)
        }
        model = dict(start)
        reserved: list[tuple[str, list[Posting]]] = []  # open reservations: (id, postings)
        resolved: list[str] = []
        for step in example:
            if step.action in ("settle", "void", "again"):
                model = await resolve_step(ledger, step, model, reserved, resolved)
            else:
                model = await post_step(ledger, step, accounts=accounts, kinds=kinds, model=model, reserved=reserved)
            await check_invariants(database, ledger, mine, model, kinds)
    finally:
        await database.dispose()


async def post_step(
    ledger: Ledger,
    step: Step,
    *,
    accounts: dict[str, list[str]],
    kinds: dict[str, AccountType],
    model: dict[str, Totals],
    reserved: list[tuple[str, list[Posting]]],
) -> dict[str, Totals]:
    postings = postings_for(step, accounts)
    pending = step.action == "reserve"
    transaction_id = f"prop-{uuid.uuid4()}"
    try:
        await ledger.post_transaction(transaction_id, postings, "property step", {}, pending=pending)
        applied = True
    except DomainError:
        applied = False
    expected = with_postings(model, postings, "pending" if pending else "posted")
    # Only well-formed steps that leave every touched account something available may apply.
    should_apply = step.twist == "none" and all(
        model_available(kinds[a], expected[a]) >= 0 for a in {p.account_id for p in postings}
    )
    event(
        f"{step.action} "
        + ("applied" if applied else f"refused ({step.twist if step.twist != 'none' else 'below zero'})")
    )
    assert applied == should_apply, (step, applied)
    if not applied:
        return model
    if pending:
        reserved.append((transaction_id, postings))
    return expected


async def resolve_step(
    ledger: Ledger, step: Step, model: dict[str, Totals], reserved: list[tuple[str, list[Posting]]], resolved: list[str]
) -> dict[str, Totals]:
    if step.action == "again":
        if not resolved:
            event("again: nothing resolved yet")
            return model
        kind = TransactionKind.POST_PENDING if step.amount % 2 else TransactionKind.VOID_PENDING
        with pytest.raises(domain.PendingAlreadyResolved):
            await ledger.resolve_pending(f"prop-{uuid.uuid4()}", resolved[step.target % len(resolved)], kind, "", {})
        event("again: refused")
        return model
    if not reserved:
        event(f"{step.action}: nothing reserved")
        return model
    transaction_id, postings = reserved.pop(step.target % len(reserved))
    kind = TransactionKind.POST_PENDING if step.action == "settle" else TransactionKind.VOID_PENDING
    await ledger.resolve_pending(f"prop-{uuid.uuid4()}", transaction_id, kind, "property step", {})
    resolved.append(transaction_id)
    event(f"{step.action} applied")
    expected = with_postings(model, postings, "resolved")
    return with_postings(expected, postings, "posted") if step.action == "settle" else expected


async def check_invariants(
    database: Database,
    ledger: Ledger,
    mine: list[str],
    model: dict[str, Totals],
    kinds: dict[str, AccountType],
) -> None:
    stored = {b.account_id: b for b in await ledger.balances(mine)}
    for account_id in mine:
        balance = stored[account_id]
        assert (balance.debits, balance.credits, balance.debits_pending, balance.credits_pending) == model[account_id]
        assert balance.balance == domain.normal_balance(kinds[account_id], balance.debits, balance.credits)
        assert balance.available == model_available(kinds[account_id], model[account_id]) >= 0
    async with database.transaction() as session:
        unbalanced = (
            await session.execute(
                text(
                    "SELECT currency FROM ledger_entries GROUP BY currency HAVING "
                    "sum(amount) FILTER (WHERE entry_type = 'DEBIT') "
                    "<> sum(amount) FILTER (WHERE entry_type = 'CREDIT')"
                )
            )
        ).all()
        assert unbalanced == []
        aggregated = (
            await session.execute(
                text(
                    "SELECT account_id, "
                    "coalesce(sum(amount) FILTER (WHERE entry_type = 'DEBIT' AND phase = 'POSTED'), 0), "
                    "coalesce(sum(amount) FILTER (WHERE entry_type = 'CREDIT' AND phase = 'POSTED'), 0), "
                    "coalesce(sum(CASE phase WHEN 'PENDING' THEN amount WHEN 'PENDING_RESOLVED' THEN -amount END) "
                    "FILTER (WHERE entry_type = 'DEBIT'), 0), "
                    "coalesce(sum(CASE phase WHEN 'PENDING' THEN amount WHEN 'PENDING_RESOLVED' THEN -amount END) "
                    "FILTER (WHERE entry_type = 'CREDIT'), 0) "
                    "FROM ledger_entries WHERE account_id = ANY(CAST(:ids AS uuid[])) GROUP BY account_id"
                ),
                {"ids": mine},
            )
        ).all()
    for account_id, debits, credits, debits_pending, credits_pending in aggregated:
        balance = stored[str(account_id)]
        assert (debits, credits, debits_pending, credits_pending) == (
            balance.debits, balance.credits, balance.debits_pending, balance.credits_pending,
        )  # fmt: skip


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(example=steps)
def test_random_postings_and_reservations_keep_the_ledger_invariants(ledger_url: str, example: list[Step]) -> None:
    asyncio.run(run_example(ledger_url, example))
