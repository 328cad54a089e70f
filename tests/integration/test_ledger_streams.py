"""Balance streams: first message, live changes in seq order, resume, replicas, many watchers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

from services.stack import embedded
from tests.conftest import service_channel
from tests.integration.conftest import LedgerUnderTest
from tests.integration.ledger_helpers import CREDIT, DEBIT, fund, new_id, open_account, posting, transfer

pytestmark = pytest.mark.asyncio


async def take(stream: Any, count: int, timeout_s: float = 10.0) -> list[Any]:
    received = []
    async with asyncio.timeout(timeout_s):
        async for message in stream:
            received.append(message)
            if len(received) == count:
                break
    return received


async def test_watch_balance_starts_with_the_current_balance_then_follows_changes(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    await fund(ledger.internal, escrow, goal, 100)
    stream = ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal))
    (first,) = await take(stream, 1)
    assert (first.balance, first.transaction_id, first.currency) == (100, "", "NGN")
    posted = [await fund(ledger.internal, escrow, goal, amount) for amount in (10, 20, 30)]
    changes = await take(stream, 3)
    stream.cancel()
    assert [c.balance for c in changes] == [110, 130, 160]
    assert [c.transaction_id for c in changes] == [p.transaction.id for p in posted]
    assert [c.seq for c in changes] == [p.transaction.entries[1].seq for p in posted]


async def test_resuming_with_after_seq_replays_exactly_what_was_missed(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    stream = ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal))
    await take(stream, 1)
    await fund(ledger.internal, escrow, goal, 1)
    (seen,) = await take(stream, 1)
    stream.cancel()  # the client goes away
    for amount in (2, 3, 4):
        await fund(ledger.internal, escrow, goal, amount)
    resumed = ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal, after_seq=seen.seq))
    missed = await take(resumed, 3)
    await fund(ledger.internal, escrow, goal, 5)
    (live,) = await take(resumed, 1)
    resumed.cancel()
    assert [m.balance for m in missed] == [3, 6, 10]
    assert live.balance == 15
    assert [m.seq for m in [*missed, live]] == sorted({m.seq for m in [*missed, live]})


async def test_watch_balances_by_type_replays_history_then_goes_live(ledger: LedgerUnderTest) -> None:
    escrow = await open_account(ledger.internal, "ESCROW", "GHS")
    goals = [await open_account(ledger.internal, "GOAL", "GHS") for _ in range(3)]
    ((start,),) = ledger.sql("SELECT last_seq FROM ledger_sequence")
    for goal in goals:
        await fund(ledger.internal, escrow, goal, 50, "GHS")
    stream = ledger.internal.WatchBalances(
        ledger_service_pb2.WatchBalancesRequest(account_types=[ledger_pb2.ACCOUNT_TYPE_GOAL], after_seq=start)
    )
    replayed = await take(stream, 3)
    await ledger.internal.PostTransaction(transfer(new_id(), goals[0], goals[1], 20, "GHS"))
    live = await take(stream, 2)
    stream.cancel()
    assert [(r.account_id, r.balance) for r in replayed] == [(g, 50) for g in goals]
    assert all(r.account_type == ledger_pb2.ACCOUNT_TYPE_GOAL and r.entity_id for r in replayed)
    assert [(c.account_id, c.balance) for c in live] == [(goals[0], 30), (goals[1], 70)]
    assert all(c.seq > replayed[-1].seq for c in live)


async def test_watch_balances_needs_a_filter(ledger: LedgerUnderTest) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await take(ledger.internal.WatchBalances(ledger_service_pb2.WatchBalancesRequest()), 1)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_client_that_goes_away_frees_its_watcher(ledger: LedgerUnderTest) -> None:
    goal = await open_account(ledger.internal, "GOAL")
    broadcaster = ledger.runner.service.background[0].__self__  # type: ignore[union-attr,attr-defined]
    before = broadcaster.watcher_count
    stream = ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal))
    await take(stream, 1)
    assert broadcaster.watcher_count == before + 1
    stream.cancel()
    async with asyncio.timeout(5):
        while broadcaster.watcher_count != before:  # noqa: ASYNC110 - polling a count the server owns
            await asyncio.sleep(0.02)


async def test_a_thousand_watchers_all_receive_the_final_balance(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    streams = [ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal)) for _ in range(1000)]
    await asyncio.gather(*(take(s, 1, 60) for s in streams))
    for amount in range(1, 21):
        await fund(ledger.internal, escrow, goal, amount)
    final = sum(range(1, 21))

    async def last_balance(stream: Any) -> int:
        async with asyncio.timeout(60):
            async for message in stream:
                if message.balance == final:
                    return int(message.balance)
        raise AssertionError("stream ended before the final balance")

    results = await asyncio.gather(*(last_balance(s) for s in streams))
    for stream in streams:
        stream.cancel()
    assert results == [final] * 1000


@pytest.fixture
def second_ledger_process(ledger: LedgerUnderTest, postgres_port: int, tmp_path: Path) -> Iterator[int]:
    """Another ledger replica, a separate process on the same database."""
    port = embedded.free_port()
    env = {
        **os.environ,
        "GOFUND_LEDGER_DATABASE_URL": ledger.url,
        "GOFUND_LEDGER_PORT": str(port),
        "GOFUND_POSTGRES_PORT": str(postgres_port),
    }
    process = embedded.gofund_service("ledger", port, env, tmp_path / "ledger-b.log")
    process.start()
    yield port
    process.stop()


async def test_a_watcher_on_one_replica_sees_every_change_posted_through_another(
    ledger: LedgerUnderTest, second_ledger_process: int
) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    stream = ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal))
    await take(stream, 1)
    async with service_channel(f"127.0.0.1:{second_ledger_process}") as channel:
        replica_b = ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)
        posted = [await fund(replica_b, escrow, goal, amount) for amount in range(1, 51)]
    received = await take(stream, 50, timeout_s=30)
    stream.cancel()
    assert [r.seq for r in received] == [p.transaction.entries[1].seq for p in posted]
    assert [r.balance for r in received] == [sum(range(1, n + 1)) for n in range(1, 51)]


async def test_a_foreign_notification_on_the_channel_does_not_stop_the_feed(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    stream = ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal))
    await take(stream, 1)
    for payload in ("not json", "[[1, 2]]", '{"unexpected": true}'):
        ledger.sql("SELECT pg_notify('ledger_balances', %s)", payload)
    await fund(ledger.internal, escrow, goal, 9)
    (change,) = await take(stream, 1)
    stream.cancel()
    assert change.balance == 9


async def test_a_transaction_too_large_for_one_notification_still_reaches_watchers(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    stream = ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal))
    await take(stream, 1)
    legs = [posting(escrow, DEBIT, 1) for _ in range(40)] + [posting(goal, CREDIT, 1) for _ in range(40)]
    await ledger.internal.PostTransaction(
        ledger_service_pb2.PostTransactionRequest(transaction_id=new_id(), postings=legs)  # ~12 kB of changes
    )
    final = None
    async with asyncio.timeout(10):
        async for change in stream:
            if change.balance == 40:
                final = change
                break
    stream.cancel()
    assert final is not None


async def test_watchers_see_an_account_once_per_transaction_at_its_committed_balance(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    await fund(ledger.internal, escrow, goal, 100)
    stream = ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal))
    (first,) = await take(stream, 1)
    # The goal is touched twice in one transaction: debit 100 (a transient 0), then credit 30.
    sink = await open_account(ledger.internal, "USER")
    legs = [posting(goal, DEBIT, 100), posting(sink, CREDIT, 100), posting(sink, DEBIT, 30), posting(goal, CREDIT, 30)]
    posted = await ledger.internal.PostTransaction(
        ledger_service_pb2.PostTransactionRequest(transaction_id=new_id(), postings=legs)
    )
    await fund(ledger.internal, escrow, goal, 1)  # a later change, so we know nothing else came between
    changes = await take(stream, 2)
    stream.cancel()
    assert [c.balance for c in changes] == [30, 31]
    assert changes[0].transaction_id == posted.transaction.id
    replay = ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal, after_seq=first.seq))
    replayed = await take(replay, 2)
    replay.cancel()
    assert [c.balance for c in replayed] == [30, 31]
