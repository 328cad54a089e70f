"""Batched posting on real PostgreSQL: requests that arrive together share one
database transaction, and each still gets its own outcome.

The requests of one `asyncio.gather` are all queued before the batch writer
first runs, so they form one batch; each test checks the writer's counters to
be sure of it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.common.db import Database
from services.common.errors import IdempotencyKeyReused
from services.ledger import domain
from services.ledger.domain import AccountType, EntryType, Posting, TransactionKind
from services.ledger.store import BalanceChange, TransactionRow
from services.ledger.streams import Broadcaster
from services.ledger.use_cases import Ledger
from tests.conftest import migrated_database

pytestmark = pytest.mark.asyncio

Outcome = tuple[TransactionRow, bool] | BaseException


@pytest_asyncio.fixture(scope="module")
async def ledger(postgres_port: int) -> AsyncIterator[Ledger]:
    database = Database("ledger", migrated_database(postgres_port, "ledger"), pool_size=4)
    broadcaster = Broadcaster(database)
    listening = asyncio.create_task(broadcaster.run())
    try:
        yield Ledger(database, broadcaster)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await database.dispose()


async def account(ledger: Ledger, kind: AccountType) -> str:
    entity = "platform" if kind.platform else str(uuid.uuid4())
    opened, _ = await ledger.open_account(kind, entity, "NGN")
    return opened.id


def move(source: str, target: str, amount: int) -> list[Posting]:
    return [Posting(source, EntryType.DEBIT, amount, "NGN"), Posting(target, EntryType.CREDIT, amount, "NGN")]


async def one_batch(ledger: Ledger, *requests: tuple[str, list[Posting]]) -> list[Outcome]:
    """Post the requests together and check they were written as one batch."""
    before = ledger.batcher.stats.batches
    outcomes = await asyncio.gather(
        *(ledger.post_transaction(transaction_id, postings, "batch test", {}) for transaction_id, postings in requests),
        return_exceptions=True,
    )
    assert ledger.batcher.stats.batches == before + 1
    return outcomes


def new_id(name: str) -> str:
    return f"{name}:{uuid.uuid4()}"


async def test_a_refused_posting_never_fails_its_batch_mates(ledger: Ledger) -> None:
    escrow, goal, empty, owner = (
        await account(ledger, AccountType.ESCROW),
        await account(ledger, AccountType.GOAL),
        await account(ledger, AccountType.GOAL),
        await account(ledger, AccountType.USER),
    )
    watcher = await ledger.broadcaster.subscribe([goal, empty, owner], [])
    contributions = [(new_id("contribution"), move(escrow, goal, 1_000 + i)) for i in range(7)]
    overdraft = (new_id("overdraft"), move(empty, owner, 1))
    requests = [*contributions[:3], overdraft, *contributions[3:]]

    outcomes = await one_batch(ledger, *requests)

    refused = outcomes[3]
    assert isinstance(refused, domain.InsufficientFunds)
    written = [o for i, o in enumerate(outcomes) if i != 3]
    assert all(isinstance(o, tuple) and o[1] is True for o in written)
    transactions = [o[0] for o in written if isinstance(o, tuple)]
    # Gap-free: the batch's 14 entries are one unbroken seq range, in request order.
    seqs = [e.seq for t in transactions for e in t.entries]
    assert seqs == list(range(seqs[0], seqs[0] + 14))
    (goal_balance,) = await ledger.balances([goal])
    assert goal_balance.balance == sum(1_000 + i for i in range(7))
    assert goal_balance.seq == seqs[-1]
    empty_balance, owner_balance = await ledger.balances([empty, owner])
    assert (empty_balance.balance, empty_balance.seq, owner_balance.balance) == (0, 0, 0)
    # The refused request wrote nothing, not even its id: it can be posted later.
    with pytest.raises(domain.TransactionNotFound):
        await ledger.transaction(overdraft[0])
    differences, _, _ = await ledger.reconcile()
    assert differences == []
    # A watcher sees the written transactions' states in seq order, ending at the
    # last (a watcher keeps only the newest change per account), and nothing of the refused one.
    committed = [(goal, sum(1_000 + j for j in range(i + 1)), t.entries[1].seq) for i, t in enumerate(transactions)]
    seen: list[BalanceChange] = []
    while not seen or seen[-1].seq < seqs[-1]:
        async with asyncio.timeout(5):
            seen.extend(await watcher.next_batch())
    ledger.broadcaster.unsubscribe(watcher)
    states = [(c.account_id, c.balance, c.seq) for c in seen]
    assert states[-1] == committed[-1]
    assert set(states) <= set(committed)
    assert [s[2] for s in states] == sorted({s[2] for s in states})


async def test_each_request_is_checked_against_the_balances_its_batch_mates_left(ledger: Ledger) -> None:
    escrow, goal, owner = (
        await account(ledger, AccountType.ESCROW),
        await account(ledger, AccountType.GOAL),
        await account(ledger, AccountType.USER),
    )
    early, fund, spend, too_much = (new_id(n) for n in ("early", "fund", "spend", "too-much"))

    outcomes = await one_batch(
        ledger,
        (early, move(goal, owner, 500)),  # before the money arrives
        (fund, move(escrow, goal, 1_000)),
        (spend, move(goal, owner, 500)),
        (too_much, move(goal, owner, 600)),  # more than the 500 left
    )

    assert isinstance(outcomes[0], domain.InsufficientFunds)
    assert [o[1] for o in outcomes[1:3] if isinstance(o, tuple)] == [True, True]
    assert isinstance(outcomes[3], domain.InsufficientFunds)
    goal_balance, owner_balance = await ledger.balances([goal, owner])
    assert (goal_balance.balance, owner_balance.balance) == (500, 500)


async def test_replays_and_reused_ids_in_a_batch_answer_from_the_original(ledger: Ledger) -> None:
    escrow, goal, other = (
        await account(ledger, AccountType.ESCROW),
        await account(ledger, AccountType.GOAL),
        await account(ledger, AccountType.GOAL),
    )
    original_id = new_id("original")
    original, _ = await ledger.post_transaction(original_id, move(escrow, goal, 700), "batch test", {})
    fresh = new_id("fresh")

    outcomes = await one_batch(
        ledger,
        (original_id, move(escrow, goal, 700)),  # a replay
        (fresh, move(escrow, other, 5)),
        (original_id + ":x", move(escrow, goal, 1)),  # unrelated, written
    )
    replay = outcomes[0]
    assert isinstance(replay, tuple)
    assert replay == (original, False)
    assert [isinstance(o, tuple) and o[1] for o in outcomes[1:]] == [True, True]

    # The same id twice at once: the second waits for the next batch and replays the first,
    # and the same id with other postings is refused.
    before = ledger.batcher.stats.batches
    twice = new_id("twice")
    first, second, reused = await asyncio.gather(
        ledger.post_transaction(twice, move(escrow, other, 9), "batch test", {}),
        ledger.post_transaction(twice, move(escrow, other, 9), "batch test", {}),
        ledger.post_transaction(twice, move(escrow, other, 10), "batch test", {}),
        return_exceptions=True,
    )
    assert ledger.batcher.stats.batches == before + 3
    assert isinstance(first, tuple)
    assert isinstance(second, tuple)
    assert (first[1], second) == (True, (first[0], False))
    assert isinstance(reused, IdempotencyKeyReused)
    (other_balance,) = await ledger.balances([other])
    assert other_balance.balance == 5 + 9


async def test_a_post_and_a_void_of_one_reservation_at_once_resolve_it_once(ledger: Ledger) -> None:
    escrow, goal, owner = (
        await account(ledger, AccountType.ESCROW),
        await account(ledger, AccountType.GOAL),
        await account(ledger, AccountType.USER),
    )
    await ledger.post_transaction(new_id("fund"), move(escrow, goal, 1_000), "batch test", {})
    reservation = new_id("reserve")
    await ledger.post_transaction(reservation, move(goal, owner, 800), "batch test", {}, pending=True)

    posted, voided = await asyncio.gather(
        ledger.resolve_pending(new_id("post"), reservation, TransactionKind.POST_PENDING, "batch test", {}),
        ledger.resolve_pending(new_id("void"), reservation, TransactionKind.VOID_PENDING, "batch test", {}),
        return_exceptions=True,
    )

    assert isinstance(posted, tuple)
    assert isinstance(voided, domain.PendingAlreadyResolved)
    goal_balance, owner_balance = await ledger.balances([goal, owner])
    assert (goal_balance.balance, goal_balance.available, owner_balance.balance) == (200, 200, 800)
    differences, _, _ = await ledger.reconcile()
    assert differences == []


async def test_two_ledger_processes_posting_at_once_keep_ids_once_and_seqs_gap_free(ledger: Ledger) -> None:
    """Two batch writers on one database (two replicas) post to the same accounts at once; the same
    id reaches both, with the same postings (one writes, the other replays) and with other postings
    on other accounts (one writes, the other is refused as a reused id)."""
    other = Ledger(Database("ledger", ledger.database.url, pool_size=4), ledger.broadcaster)
    try:
        escrow, goal, elsewhere = (
            await account(ledger, AccountType.ESCROW),
            await account(ledger, AccountType.GOAL),
            await account(ledger, AccountType.GOAL),
        )
        same, reused = new_id("same"), new_id("reused")
        requests = [
            (replica, new_id(f"replica-{n}"), move(escrow, goal, 10)) for n in range(20) for replica in (ledger, other)
        ]
        requests += [(ledger, same, move(escrow, goal, 7)), (other, same, move(escrow, goal, 7))]
        requests += [(ledger, reused, move(escrow, goal, 5)), (other, reused, move(escrow, elsewhere, 5))]
        outcomes = await asyncio.gather(
            *(replica.post_transaction(tid, postings, "batch test", {}) for replica, tid, postings in requests),
            return_exceptions=True,
        )
    finally:
        await other.database.dispose()
    written = [o for o in outcomes[:40] if isinstance(o, tuple) and o[1] is True]
    assert len(written) == 40
    same_first, same_second = outcomes[40], outcomes[41]
    assert isinstance(same_first, tuple)
    assert isinstance(same_second, tuple)
    assert sorted([same_first[1], same_second[1]]) == [False, True]
    assert same_first[0].entries == same_second[0].entries
    reused_outcomes = outcomes[42:]
    assert sum(isinstance(o, tuple) and o[1] is True for o in reused_outcomes) == 1
    assert sum(isinstance(o, IdempotencyKeyReused) for o in reused_outcomes) == 1
    (goal_balance,) = await ledger.balances([goal])
    kept = next(o for o in reused_outcomes if isinstance(o, tuple))
    assert goal_balance.balance == 40 * 10 + 7 + (5 if kept[0].entries[1].account_id == goal else 0)
    # The entries written are one unbroken seq range (nothing refused took one), and each
    # transaction's entries are consecutive.
    transactions = [o[0] for o in (*written, same_first, kept)]
    seqs = sorted(e.seq for t in transactions for e in t.entries)
    assert seqs == list(range(seqs[0], seqs[0] + 2 * len(transactions)))
    assert all(t.entries[1].seq == t.entries[0].seq + 1 for t in transactions)
    differences, _, _ = await ledger.reconcile()
    assert differences == []
