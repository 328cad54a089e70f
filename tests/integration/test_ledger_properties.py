"""Property test: any sequence of valid and invalid postings keeps the ledger's invariants.

After every step, on real PostgreSQL: debits equal credits per currency, no
account is below zero on its normal side, every stored balance equals the sum
of its entries, and the balances equal a plain Python model of the steps that
should have succeeded (a refused step changes nothing).
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
from services.ledger.domain import AccountType, EntryType, Posting
from services.ledger.service import Ledger
from services.ledger.streams import Broadcaster
from tests.conftest import migrated_database

CURRENCIES = ("NGN", "USD")
# Per example: the platform escrow per currency and three fresh credit-normal accounts per currency.
ACCOUNT_KINDS = (AccountType.GOAL, AccountType.USER, AccountType.GOAL)


@dataclass(frozen=True)
class Step:
    source: int  # index into the example's accounts of that currency (0 = escrow)
    target: int
    amount: int
    currency: str
    twist: str  # "none", "unbalanced", "wrong_currency"


steps = st.lists(
    st.builds(
        Step,
        source=st.integers(0, 3),
        target=st.integers(0, 3),
        amount=st.integers(1, 2_000),
        currency=st.sampled_from(CURRENCIES),
        twist=st.sampled_from(("none", "none", "none", "unbalanced", "wrong_currency")),
    ),
    min_size=1,
    max_size=12,
)


@pytest.fixture(scope="module")
def ledger_url(postgres_port: int) -> str:
    return migrated_database(postgres_port, "ledger")


def postings_for(step: Step, accounts: dict[str, list[str]]) -> list[Posting]:
    """Money moves source -> target. Escrow (index 0) is debit-normal: funding debits it."""
    chain = accounts[step.currency]
    source, target = chain[step.source], chain[step.target]
    # Taking from a credit-normal account is a debit; from escrow (money leaving the platform) a credit.
    out_side = EntryType.CREDIT if step.source == 0 else EntryType.DEBIT
    in_side = EntryType.DEBIT if step.target == 0 else EntryType.CREDIT
    amount_in = step.amount + (1 if step.twist == "unbalanced" else 0)
    currency_in = next(c for c in CURRENCIES if c != step.currency) if step.twist == "wrong_currency" else step.currency
    return [Posting(source, out_side, step.amount, step.currency), Posting(target, in_side, amount_in, currency_in)]


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
        start = {b.account_id: (b.debits, b.credits) for b in await ledger.balances(mine)}
        model = dict(start)
        for step in example:
            postings = postings_for(step, accounts)
            try:
                await ledger.post_transaction(f"prop-{uuid.uuid4()}", postings, "property step", {})
                applied = True
            except DomainError:
                applied = False
            expected = dict(model)
            for p in postings:
                debits, credits = expected.get(p.account_id, (0, 0))
                expected[p.account_id] = (
                    (debits + p.amount, credits) if p.entry_type is EntryType.DEBIT else (debits, credits + p.amount)
                )
            # Only well-formed steps that keep every touched account at or above zero may apply.
            should_apply = step.twist == "none" and all(
                domain.normal_balance(kinds[a], *expected[a]) >= 0 for a in {p.account_id for p in postings}
            )
            event("applied" if applied else f"refused ({step.twist if step.twist != 'none' else 'below zero'})")
            assert applied == should_apply, (step, applied)
            if applied:
                model = expected
            await check_invariants(database, ledger, mine, model, kinds)
    finally:
        await database.dispose()


async def check_invariants(
    database: Database,
    ledger: Ledger,
    mine: list[str],
    model: dict[str, tuple[int, int]],
    kinds: dict[str, AccountType],
) -> None:
    stored = {b.account_id: b for b in await ledger.balances(mine)}
    for account_id in mine:
        balance = stored[account_id]
        assert (balance.debits, balance.credits) == model[account_id]
        assert balance.balance == domain.normal_balance(kinds[account_id], balance.debits, balance.credits)
        assert balance.balance >= 0
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
                    "SELECT account_id, coalesce(sum(amount) FILTER (WHERE entry_type = 'DEBIT'), 0), "
                    "coalesce(sum(amount) FILTER (WHERE entry_type = 'CREDIT'), 0) FROM ledger_entries "
                    "WHERE account_id = ANY(CAST(:ids AS uuid[])) GROUP BY account_id"
                ),
                {"ids": mine},
            )
        ).all()
    for account_id, debits, credits in aggregated:
        assert (debits, credits) == (stored[str(account_id)].debits, stored[str(account_id)].credits)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(example=steps)
def test_random_postings_keep_the_ledger_invariants(ledger_url: str, example: list[Step]) -> None:
    asyncio.run(run_example(ledger_url, example))
