"""The ledger service over real gRPC on real PostgreSQL."""

from __future__ import annotations

import asyncio
import random

import grpc
import psycopg
import pytest
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

from tests.conftest import service_channel
from tests.helpers import reason, rejected
from tests.integration.fixtures.ledger import (
    CREDIT,
    DEBIT,
    LedgerUnderTest,
    fund,
    new_id,
    open_account,
    posting,
    transfer,
)

pytestmark = pytest.mark.asyncio


# -- accounts ---------------------------------------------------------------------
async def test_open_account_is_get_or_create(ledger: LedgerUnderTest) -> None:
    owner = new_id()
    first = await open_account(ledger.internal, "USER", entity_id=owner)
    again = await ledger.internal.OpenAccount(
        ledger_service_pb2.OpenAccountRequest(
            account_type=ledger_pb2.ACCOUNT_TYPE_USER, entity_id=owner, currency="NGN"
        )
    )
    assert again.account.id == first
    assert again.created is False


async def test_concurrent_opens_of_one_account_give_one_account(ledger: LedgerUnderTest) -> None:
    owner = new_id()
    ids = await asyncio.gather(*(open_account(ledger.internal, "GOAL", entity_id=owner) for _ in range(20)))
    assert len(set(ids)) == 1
    assert ledger.sql("SELECT count(*) FROM accounts WHERE entity_id = %s", owner) == [(1,)]


async def test_open_account_validates_its_key(ledger: LedgerUnderTest) -> None:
    error = await rejected(
        ledger.internal.OpenAccount(
            ledger_service_pb2.OpenAccountRequest(
                account_type=ledger_pb2.ACCOUNT_TYPE_USER, entity_id="bob", currency="XYZ"
            )
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason(error) == "INVALID_ENTITY_ID"
    assert "currency" in (error.details() or "")


# -- posting ----------------------------------------------------------------------
async def test_balanced_posting_moves_balances_and_numbers_entries_in_order(ledger: LedgerUnderTest) -> None:
    escrow = await open_account(ledger.internal, "ESCROW")
    goal = await open_account(ledger.internal, "GOAL")
    escrow_before = await ledger.balance(escrow)
    response = await fund(ledger.internal, escrow, goal, 250_000)
    assert response.created is True
    seqs = [e.seq for e in response.transaction.entries]
    assert seqs == [seqs[0], seqs[0] + 1]
    goal_balance = await ledger.balance(goal)
    assert (goal_balance.balance, goal_balance.credits, goal_balance.debits) == (250_000, 250_000, 0)
    assert goal_balance.seq == seqs[1]
    escrow_after = await ledger.balance(escrow)
    assert escrow_after.balance == escrow_before.balance + 250_000


async def test_overdraft_is_refused_and_writes_nothing(ledger: LedgerUnderTest) -> None:
    escrow = await open_account(ledger.internal, "ESCROW")
    goal, owner = await open_account(ledger.internal, "GOAL"), await open_account(ledger.internal, "USER")
    await fund(ledger.internal, escrow, goal, 1_000)
    transaction_id = f"release:{new_id()}"
    error = await rejected(ledger.internal.PostTransaction(transfer(transaction_id, goal, owner, 1_001)))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason(error) == "INSUFFICIENT_FUNDS"
    assert (await ledger.balance(goal)).balance == 1_000
    assert ledger.sql("SELECT count(*) FROM ledger_transactions WHERE id = %s", transaction_id) == [(0,)]
    # The id was not used up: once the money is there, the same id posts.
    await fund(ledger.internal, escrow, goal, 1)
    assert (await ledger.internal.PostTransaction(transfer(transaction_id, goal, owner, 1_001))).created is True


@pytest.mark.parametrize(
    ("postings", "expected_reason"),
    [
        ([("a", DEBIT, 100), ("b", CREDIT, 99)], "UNBALANCED_TRANSACTION"),
        ([("a", DEBIT, 100)], "TOO_FEW_POSTINGS"),
        ([("a", DEBIT, 0), ("b", CREDIT, 0)], "INVALID_AMOUNT"),
        ([("a", ledger_pb2.ENTRY_TYPE_UNSPECIFIED, 5), ("b", CREDIT, 5)], "INVALID_ENTRY_TYPE"),
    ],
)
async def test_malformed_transactions_are_invalid_argument(
    ledger: LedgerUnderTest, postings: list[tuple[str, int, int]], expected_reason: str
) -> None:
    accounts = {"a": await open_account(ledger.internal, "GOAL"), "b": await open_account(ledger.internal, "GOAL")}
    request = ledger_service_pb2.PostTransactionRequest(
        transaction_id=new_id(), postings=[posting(accounts[a], side, amount) for a, side, amount in postings]
    )
    error = await rejected(ledger.internal.PostTransaction(request))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason(error) == expected_reason


async def test_posting_in_another_currency_than_the_account_is_refused(ledger: LedgerUnderTest) -> None:
    naira_goal = await open_account(ledger.internal, "GOAL", "NGN")
    cedi_escrow = await open_account(ledger.internal, "ESCROW", "GHS")
    request = ledger_service_pb2.PostTransactionRequest(
        transaction_id=new_id(),
        postings=[posting(cedi_escrow, DEBIT, 10, "GHS"), posting(naira_goal, CREDIT, 10, "GHS")],
    )
    error = await rejected(ledger.internal.PostTransaction(request))
    assert reason(error) == "CURRENCY_MISMATCH"


async def test_posting_to_an_unknown_account_is_not_found(ledger: LedgerUnderTest) -> None:
    escrow = await open_account(ledger.internal, "ESCROW")
    error = await rejected(ledger.internal.PostTransaction(transfer(new_id(), escrow, new_id(), 5)))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert reason(error) == "ACCOUNT_NOT_FOUND"


# -- idempotency ------------------------------------------------------------------
async def test_replay_returns_the_original_and_different_postings_are_refused(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    request = ledger_service_pb2.PostTransactionRequest(
        transaction_id=f"payment:{new_id()}:capture",
        postings=[posting(escrow, DEBIT, 700), posting(goal, CREDIT, 700)],
    )
    first = await ledger.internal.PostTransaction(request)
    replay = await ledger.internal.PostTransaction(request)
    assert (first.created, replay.created) == (True, False)
    assert [e.id for e in replay.transaction.entries] == [e.id for e in first.transaction.entries]
    assert (await ledger.balance(goal)).balance == 700
    changed = ledger_service_pb2.PostTransactionRequest(
        transaction_id=request.transaction_id, postings=[posting(escrow, DEBIT, 701), posting(goal, CREDIT, 701)]
    )
    error = await rejected(ledger.internal.PostTransaction(changed))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason(error) == "IDEMPOTENCY_KEY_REUSED"


async def test_twenty_concurrent_replays_write_exactly_one_transaction(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    request = ledger_service_pb2.PostTransactionRequest(
        transaction_id=f"payment:{new_id()}:capture",
        postings=[posting(escrow, DEBIT, 1_234), posting(goal, CREDIT, 1_234)],
    )
    responses = await asyncio.gather(*(ledger.internal.PostTransaction(request) for _ in range(20)))
    assert sum(r.created for r in responses) == 1
    assert len({r.transaction.entries[0].id for r in responses}) == 1
    assert ledger.sql("SELECT count(*) FROM ledger_entries WHERE transaction_id = %s", request.transaction_id) == [(2,)]
    assert (await ledger.balance(goal)).balance == 1_234


# -- immutability and corrections -------------------------------------------------
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount = amount + 1",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries CASCADE",
        "UPDATE ledger_transactions SET description = 'rewritten'",
    ],
)
async def test_the_database_itself_refuses_to_change_history(ledger: LedgerUnderTest, statement: str) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    await fund(ledger.internal, escrow, goal, 10)
    with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
        ledger.sql(statement)


async def test_reversal_undoes_a_transaction_once(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    original = await fund(ledger.internal, escrow, goal, 5_000)
    request = ledger_service_pb2.ReverseTransactionRequest(
        transaction_id=f"reverse:{new_id()}", original_transaction_id=original.transaction.id, description="mistake"
    )
    reversed_ = await ledger.internal.ReverseTransaction(request)
    assert reversed_.transaction.reverses_transaction_id == original.transaction.id
    assert [e.entry_type for e in reversed_.transaction.entries] == [CREDIT, DEBIT]
    assert (await ledger.balance(goal)).balance == 0
    assert (await ledger.internal.ReverseTransaction(request)).created is False
    second = ledger_service_pb2.ReverseTransactionRequest(
        transaction_id=f"reverse:{new_id()}", original_transaction_id=original.transaction.id
    )
    assert reason(await rejected(ledger.internal.ReverseTransaction(second))) == "ALREADY_REVERSED"


async def test_reconcile_is_clean_and_finds_a_tampered_balance(ledger: LedgerUnderTest) -> None:
    clean = await ledger.internal.Reconcile(ledger_service_pb2.ReconcileRequest())
    assert list(clean.differences) == []
    assert clean.accounts_checked > 0
    escrow, goal = (
        await open_account(ledger.internal, "ESCROW", "KES"),
        await open_account(ledger.internal, "GOAL", "KES"),
    )
    await fund(ledger.internal, escrow, goal, 300, "KES")
    ledger.sql("UPDATE account_balances SET credits = credits + 1, balance = balance + 1 WHERE account_id = %s", goal)
    try:
        report = await ledger.internal.Reconcile(ledger_service_pb2.ReconcileRequest())
        (difference,) = report.differences
        assert difference.account_id == goal
        assert (difference.stored_credits, difference.computed_credits) == (301, 300)
    finally:
        ledger.sql(
            "UPDATE account_balances SET credits = credits - 1, balance = balance - 1 WHERE account_id = %s", goal
        )


# -- public reads -----------------------------------------------------------------
async def test_goal_accounts_are_public_and_others_hidden_from_anonymous_callers(ledger: LedgerUnderTest) -> None:
    goal, user = await open_account(ledger.internal, "GOAL"), await open_account(ledger.internal, "USER")
    escrow = await open_account(ledger.internal, "ESCROW")
    seen = await ledger.public.GetAccount(ledger_service_pb2.GetAccountRequest(account_id=goal))
    assert seen.account.account_type == ledger_pb2.ACCOUNT_TYPE_GOAL
    for hidden in (user, escrow, new_id()):
        error = await rejected(ledger.public.GetBalance(ledger_service_pb2.GetBalanceRequest(account_id=hidden)))
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert reason(error) == "ACCOUNT_NOT_FOUND"
    error = await rejected(ledger.public.GetAccount(ledger_service_pb2.GetAccountRequest(account_id="not-a-uuid")))
    assert reason(error) == "INVALID_ACCOUNT_ID"


async def test_entries_page_newest_first(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    for amount in range(1, 6):
        await fund(ledger.internal, escrow, goal, amount)
    first = await ledger.public.ListEntries(ledger_service_pb2.ListEntriesRequest(account_id=goal, page_size=3))
    second = await ledger.public.ListEntries(
        ledger_service_pb2.ListEntriesRequest(account_id=goal, page_size=3, page_token=first.next_page_token)
    )
    assert [e.amount for e in first.entries] == [5, 4, 3]
    assert [e.amount for e in second.entries] == [2, 1]
    assert second.next_page_token == ""
    error = await rejected(
        ledger.public.ListEntries(ledger_service_pb2.ListEntriesRequest(account_id=goal, page_token="garbage!"))
    )
    assert reason(error) == "INVALID_PAGE_TOKEN"


# -- concurrency ------------------------------------------------------------------
async def test_eight_clients_times_500_random_transfers_keep_every_invariant(ledger: LedgerUnderTest) -> None:
    escrow = await open_account(ledger.internal, "ESCROW", "ZAR")
    accounts = [await open_account(ledger.internal, "GOAL", "ZAR") for _ in range(20)]
    hot = accounts[0]
    for account in accounts:
        await fund(ledger.internal, escrow, account, 5_000, "ZAR")
    outcomes = {"ok": 0, "insufficient": 0}
    other_failures: list[str] = []

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        async with service_channel(f"127.0.0.1:{ledger.port}") as channel:
            internal = ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)
            for _ in range(500):
                source, target = rng.sample(accounts, 2)
                if rng.random() < 0.5:  # half of all transfers touch the hot account
                    source, target = (hot, target) if target != hot else (source, hot)
                try:
                    await internal.PostTransaction(transfer(new_id(), source, target, rng.randint(1, 900), "ZAR"))
                    outcomes["ok"] += 1
                except grpc.aio.AioRpcError as error:
                    if reason(error) == "INSUFFICIENT_FUNDS":
                        outcomes["insufficient"] += 1
                    else:
                        other_failures.append(reason(error))

    await asyncio.gather(*(client(seed) for seed in range(8)))
    assert other_failures == []
    assert outcomes["ok"] + outcomes["insufficient"] == 4000
    assert outcomes["ok"] > 0
    balances = await ledger.internal.BatchGetBalances(ledger_service_pb2.BatchGetBalancesRequest(account_ids=accounts))
    assert sum(b.balance for b in balances.balances) == 20 * 5_000  # transfers move money, never make it
    assert all(b.balance >= 0 for b in balances.balances)
    debits = "sum(amount) FILTER (WHERE entry_type = 'DEBIT')"
    credits = "sum(amount) FILTER (WHERE entry_type = 'CREDIT')"
    unbalanced = f"SELECT currency FROM ledger_entries GROUP BY currency HAVING {debits} <> {credits}"  # noqa: S608
    assert ledger.sql(unbalanced) == []
    seqs = [row[0] for row in ledger.sql("SELECT seq FROM ledger_entries ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))  # gap-free
    report = await ledger.internal.Reconcile(ledger_service_pb2.ReconcileRequest())
    assert list(report.differences) == []


async def test_concurrent_reversals_under_different_ids_reverse_once(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    original = await fund(ledger.internal, escrow, goal, 900)
    requests = [
        ledger_service_pb2.ReverseTransactionRequest(
            transaction_id=f"reverse:{new_id()}", original_transaction_id=original.transaction.id
        )
        for _ in range(10)
    ]
    outcomes = await asyncio.gather(*(ledger.internal.ReverseTransaction(r) for r in requests), return_exceptions=True)
    succeeded = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [reason(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(succeeded) == 1
    assert refused == ["ALREADY_REVERSED"] * 9
    assert (await ledger.balance(goal)).balance == 0


async def test_ids_in_any_uuid_spelling_are_the_same_account(ledger: LedgerUnderTest) -> None:
    escrow = await open_account(ledger.internal, "ESCROW")
    owner = new_id()
    goal = await open_account(ledger.internal, "GOAL", entity_id=owner.upper())
    assert goal == await open_account(ledger.internal, "GOAL", entity_id=owner)
    request = ledger_service_pb2.PostTransactionRequest(
        transaction_id=new_id(),
        postings=[posting(escrow.upper(), DEBIT, 40), posting("{" + goal + "}", CREDIT, 40)],
    )
    await ledger.internal.PostTransaction(request)
    assert (await ledger.internal.PostTransaction(request)).created is False
    balance = await ledger.public.GetBalance(ledger_service_pb2.GetBalanceRequest(account_id=goal.replace("-", "")))
    assert balance.balance.balance == 40


async def test_a_reversal_replayed_against_another_original_is_refused(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    first, second = await fund(ledger.internal, escrow, goal, 50), await fund(ledger.internal, escrow, goal, 50)
    reversal_id = f"reverse:{new_id()}"
    await ledger.internal.ReverseTransaction(
        ledger_service_pb2.ReverseTransactionRequest(
            transaction_id=reversal_id, original_transaction_id=first.transaction.id
        )
    )
    # Same id, same postings (equal contributions), but another original: not a replay.
    error = await rejected(
        ledger.internal.ReverseTransaction(
            ledger_service_pb2.ReverseTransactionRequest(
                transaction_id=reversal_id, original_transaction_id=second.transaction.id
            )
        )
    )
    assert reason(error) == "IDEMPOTENCY_KEY_REUSED"
    assert (await ledger.balance(goal)).balance == 50
