"""Reservations (two-phase outflows) in the ledger, over real gRPC on real PostgreSQL.

Money that leaves the platform is reserved first: the reservation counts against
the floors at once, so a second outflow of the same money is refused before any
provider is asked; the provider's answer posts or voids it, once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2

from tests.helpers import reason, rejected
from tests.integration.fixtures.ledger import CREDIT, DEBIT, LedgerUnderTest, fund, new_id, open_account, posting

pytestmark = pytest.mark.asyncio

PENDING_KIND = ledger_pb2.TRANSACTION_KIND_PENDING


def reserve(transaction_id: str, goal: str, escrow: str, amount: int) -> Any:
    """A refund's reservation: GOAL -> ESCROW, pending."""
    return ledger_service_pb2.PostTransactionRequest(
        transaction_id=transaction_id,
        postings=[posting(goal, DEBIT, amount), posting(escrow, CREDIT, amount)],
        description="refund reserved",
        pending=True,
    )


def post_pending(transaction_id: str, pending_id: str) -> Any:
    return ledger_service_pb2.PostPendingTransactionRequest(
        transaction_id=transaction_id, pending_transaction_id=pending_id, description="refund processed"
    )


def void_pending(transaction_id: str, pending_id: str) -> Any:
    return ledger_service_pb2.VoidPendingTransactionRequest(
        transaction_id=transaction_id, pending_transaction_id=pending_id, description="refund failed"
    )


async def funded_goal(ledger: LedgerUnderTest, amount: int) -> tuple[str, str]:
    escrow = await open_account(ledger.internal, "ESCROW")
    goal = await open_account(ledger.internal, "GOAL")
    await fund(ledger.internal, escrow, goal, amount)
    return goal, escrow


def totals(balance: ledger_pb2.Balance) -> tuple[int, int, int, int]:
    return balance.balance, balance.available, balance.debits_pending, balance.credits_pending


async def test_a_reservation_lowers_what_is_available_not_the_balance(ledger: LedgerUnderTest) -> None:
    goal, escrow = await funded_goal(ledger, 10_000)
    escrow_before = await ledger.balance(escrow)
    answer = await ledger.internal.PostTransaction(reserve(f"hold:{new_id()}", goal, escrow, 6000))
    assert answer.transaction.kind == PENDING_KIND
    assert {e.phase for e in answer.transaction.entries} == {ledger_pb2.ENTRY_PHASE_PENDING}
    assert totals(await ledger.balance(goal)) == (10_000, 4000, 6000, 0)
    escrow_after = await ledger.balance(escrow)
    assert escrow_after.balance == escrow_before.balance
    assert escrow_after.available == escrow_before.available - 6000
    assert escrow_after.credits_pending == escrow_before.credits_pending + 6000


async def test_the_same_money_cannot_be_reserved_twice(ledger: LedgerUnderTest) -> None:
    goal, escrow = await funded_goal(ledger, 10_000)
    await ledger.internal.PostTransaction(reserve(f"refund:{new_id()}", goal, escrow, 10_000))
    # A payout of the same money, after a release posting that is refused too: nothing is left.
    error = await rejected(ledger.internal.PostTransaction(reserve(f"payout:{new_id()}", goal, escrow, 1)))
    assert (error.code(), reason(error)) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    owner = await open_account(ledger.internal, "USER")
    release = ledger_service_pb2.PostTransactionRequest(
        transaction_id=f"release:{new_id()}",
        postings=[posting(goal, DEBIT, 10_000), posting(owner, CREDIT, 10_000)],
        description="release",
    )
    error = await rejected(ledger.internal.PostTransaction(release))
    assert reason(error) == "INSUFFICIENT_FUNDS"
    assert totals(await ledger.balance(goal)) == (10_000, 0, 10_000, 0)
    # The funding and the one reservation: the refused calls wrote nothing.
    assert ledger.sql("SELECT count(*) FROM ledger_entries WHERE account_id = %s", goal) == [(2,)]


async def test_concurrent_reservations_of_one_goal_never_reserve_more_than_it_holds(ledger: LedgerUnderTest) -> None:
    goal, escrow = await funded_goal(ledger, 10_000)
    answers = await asyncio.gather(
        *(ledger.internal.PostTransaction(reserve(f"hold:{new_id()}", goal, escrow, 3000)) for _ in range(8)),
        return_exceptions=True,
    )
    accepted = [a for a in answers if not isinstance(a, BaseException)]
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert (len(accepted), len(refused)) == (3, 5)
    assert {reason(e) for e in refused} == {"INSUFFICIENT_FUNDS"}
    assert totals(await ledger.balance(goal)) == (10_000, 1000, 9000, 0)


async def test_posting_a_reservation_moves_the_money_once(ledger: LedgerUnderTest) -> None:
    goal, escrow = await funded_goal(ledger, 10_000)
    escrow_before = await ledger.balance(escrow)
    hold = f"hold:{new_id()}"
    await ledger.internal.PostTransaction(reserve(hold, goal, escrow, 4000))
    settle = f"settle:{new_id()}"
    posted = await ledger.internal.PostPendingTransaction(post_pending(settle, hold))
    assert posted.created is True
    assert posted.transaction.kind == ledger_pb2.TRANSACTION_KIND_POST_PENDING
    assert posted.transaction.pending_transaction_id == hold
    assert sorted((e.phase, e.entry_type, e.amount) for e in posted.transaction.entries) == sorted(
        [
            (ledger_pb2.ENTRY_PHASE_PENDING_RESOLVED, DEBIT, 4000),
            (ledger_pb2.ENTRY_PHASE_POSTED, DEBIT, 4000),
            (ledger_pb2.ENTRY_PHASE_PENDING_RESOLVED, CREDIT, 4000),
            (ledger_pb2.ENTRY_PHASE_POSTED, CREDIT, 4000),
        ]
    )
    assert totals(await ledger.balance(goal)) == (6000, 6000, 0, 0)
    escrow_after = await ledger.balance(escrow)
    # The cash left: the balance is lower, and the reservation no longer counts against it.
    assert (escrow_after.balance, escrow_after.available) == (
        escrow_before.balance - 4000,
        escrow_before.available - 4000,
    )
    assert escrow_after.credits_pending == escrow_before.credits_pending
    replay = await ledger.internal.PostPendingTransaction(post_pending(settle, hold))
    assert (replay.created, replay.transaction.id) == (False, settle)
    reservation = await ledger.internal.GetTransaction(ledger_service_pb2.GetTransactionRequest(transaction_id=hold))
    assert reservation.transaction.resolved_by_transaction_id == settle
    for second in (
        ledger.internal.PostPendingTransaction(post_pending(f"settle:{new_id()}", hold)),
        ledger.internal.VoidPendingTransaction(void_pending(f"void:{new_id()}", hold)),
    ):
        error = await rejected(second)
        assert (error.code(), reason(error)) == (grpc.StatusCode.FAILED_PRECONDITION, "PENDING_ALREADY_RESOLVED")
    assert totals(await ledger.balance(goal)) == (6000, 6000, 0, 0)


async def test_voiding_a_reservation_gives_the_money_back_and_posts_nothing(ledger: LedgerUnderTest) -> None:
    goal, escrow = await funded_goal(ledger, 10_000)
    hold = f"hold:{new_id()}"
    await ledger.internal.PostTransaction(reserve(hold, goal, escrow, 10_000))
    voided = await ledger.internal.VoidPendingTransaction(void_pending(f"void:{new_id()}", hold))
    assert voided.transaction.kind == ledger_pb2.TRANSACTION_KIND_VOID_PENDING
    assert {e.phase for e in voided.transaction.entries} == {ledger_pb2.ENTRY_PHASE_PENDING_RESOLVED}
    assert totals(await ledger.balance(goal)) == (10_000, 10_000, 0, 0)
    # The money can now be reserved again (the next refund attempt).
    await ledger.internal.PostTransaction(reserve(f"hold:{new_id()}", goal, escrow, 10_000))
    assert totals(await ledger.balance(goal)) == (10_000, 0, 10_000, 0)


async def test_posts_and_voids_of_one_reservation_at_once_resolve_it_once(ledger: LedgerUnderTest) -> None:
    for _ in range(5):
        goal, escrow = await funded_goal(ledger, 5000)
        hold = f"hold:{new_id()}"
        await ledger.internal.PostTransaction(reserve(hold, goal, escrow, 5000))
        calls = [ledger.internal.PostPendingTransaction(post_pending(f"settle:{new_id()}", hold)) for _ in range(4)]
        calls += [ledger.internal.VoidPendingTransaction(void_pending(f"void:{new_id()}", hold)) for _ in range(4)]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        won = [a for a in answers if not isinstance(a, BaseException)]
        lost = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
        assert len(won) == 1
        assert {reason(e) for e in lost} == {"PENDING_ALREADY_RESOLVED"}
        posted = won[0].transaction.kind == ledger_pb2.TRANSACTION_KIND_POST_PENDING
        assert totals(await ledger.balance(goal)) == ((0, 0, 0, 0) if posted else (5000, 5000, 0, 0))


async def test_only_a_reservation_is_posted_or_voided_and_only_posted_ones_are_reversed(
    ledger: LedgerUnderTest,
) -> None:
    goal, escrow = await funded_goal(ledger, 1000)
    missing = await rejected(ledger.internal.PostPendingTransaction(post_pending(f"s:{new_id()}", f"x:{new_id()}")))
    assert (missing.code(), reason(missing)) == (grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND")
    plain = (await fund(ledger.internal, escrow, goal, 10)).transaction.id
    not_pending = await rejected(ledger.internal.VoidPendingTransaction(void_pending(f"v:{new_id()}", plain)))
    assert (not_pending.code(), reason(not_pending)) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_PENDING")
    hold = f"hold:{new_id()}"
    await ledger.internal.PostTransaction(reserve(hold, goal, escrow, 500))
    reversing = await rejected(
        ledger.internal.ReverseTransaction(
            ledger_service_pb2.ReverseTransactionRequest(
                transaction_id=f"r:{new_id()}", original_transaction_id=hold, description="undo"
            )
        )
    )
    assert (reversing.code(), reason(reversing)) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_REVERSIBLE")
    # The same id as a posted transaction is another transaction: refused, nothing written.
    reused = await rejected(
        ledger.internal.PostTransaction(
            ledger_service_pb2.PostTransactionRequest(
                transaction_id=hold,
                postings=[posting(goal, DEBIT, 500), posting(escrow, CREDIT, 500)],
                description="refund reserved",
            )
        )
    )
    assert (reused.code(), reason(reused)) == (grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED")
    replay = await ledger.internal.PostTransaction(reserve(hold, goal, escrow, 500))
    assert replay.created is False
    assert totals(await ledger.balance(goal)) == (1010, 510, 500, 0)


async def test_balance_streams_show_what_is_available_as_reservations_come_and_go(ledger: LedgerUnderTest) -> None:
    goal, escrow = await funded_goal(ledger, 8000)
    stream = ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal))
    messages = stream.__aiter__()
    received: list[Any] = [await anext(messages)]  # the current balance: the stream is live from here
    hold, second = f"hold:{new_id()}", f"hold:{new_id()}"
    # One at a time, each seen before the next: a public stream coalesces changes
    # that come faster than its rate to the newest.
    for change in (
        lambda: ledger.internal.PostTransaction(reserve(hold, goal, escrow, 3000)),
        lambda: ledger.internal.PostTransaction(reserve(second, goal, escrow, 5000)),
        lambda: ledger.internal.VoidPendingTransaction(void_pending(f"void:{new_id()}", hold)),
    ):
        await change()
        async with asyncio.timeout(10):
            received.append(await anext(messages))
    stream.cancel()
    assert [(m.balance, m.available, m.debits_pending) for m in received] == [
        (8000, 8000, 0),
        (8000, 5000, 3000),
        (8000, 0, 8000),
        (8000, 3000, 5000),
    ]


async def test_reconciliation_recomputes_pending_totals_and_transactions_list_in_commit_order(
    ledger: LedgerUnderTest,
) -> None:
    goal, escrow = await funded_goal(ledger, 2000)
    hold = f"hold:{new_id()}"
    await ledger.internal.PostTransaction(reserve(hold, goal, escrow, 2000))
    clean = await ledger.internal.Reconcile(ledger_service_pb2.ReconcileRequest())
    assert list(clean.differences) == []
    listed: list[Any] = []
    token = ""
    while True:
        page = await ledger.internal.ListTransactions(
            ledger_service_pb2.ListTransactionsRequest(page_size=7, page_token=token)
        )
        listed.extend(page.transactions)
        token = page.next_page_token
        if not token:
            break
    firsts = [t.entries[0].seq for t in listed]
    assert firsts == sorted(firsts)
    assert len({t.id for t in listed}) == len(listed) == ledger.sql("SELECT count(*) FROM ledger_transactions")[0][0]
    assert next(t for t in listed if t.id == hold).kind == PENDING_KIND
    # A pending total changed behind the ledger's back (the balance table is not append-only).
    ledger.sql("UPDATE account_balances SET debits_pending = 0, available = balance WHERE account_id = %s", goal)
    drift = await ledger.internal.Reconcile(ledger_service_pb2.ReconcileRequest())
    assert [d.account_id for d in drift.differences] == [goal]
    ledger.sql("UPDATE account_balances SET debits_pending = 2000, available = 0 WHERE account_id = %s", goal)
    bad_token = await rejected(
        ledger.internal.ListTransactions(
            ledger_service_pb2.ListTransactionsRequest(page_token="eyJhZnRlcl9zZXEiOnRydWV9")
        )
    )
    assert reason(bad_token) == "INVALID_PAGE_TOKEN"
