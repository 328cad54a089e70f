"""Balance streams: first message, live changes in seq order, resume, replicas, many watchers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import pytest_asyncio
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

from services.common.db import psycopg_dsn
from services.common.server import ServiceRunner
from services.ledger.main import build
from services.stack import embedded
from tests.conftest import service_channel, settings_with
from tests.helpers import eventually, reason
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
    # One posting at a time, each read before the next: a client that keeps up gets
    # every change (a slow one may be coalesced to the latest, as the contract allows,
    # which made a burst of three flaky under load).
    posted, changes = [], []
    for amount in (10, 20, 30):
        posted.append(await fund(ledger.internal, escrow, goal, amount))
        changes.extend(await take(stream, 1))
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
    await eventually(lambda: asyncio.sleep(0, broadcaster.watcher_count == before), 5, "the watcher to be freed")


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


async def test_a_watcher_on_one_replica_sees_the_changes_posted_through_another_in_order(
    ledger: LedgerUnderTest, second_ledger_process: int
) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    stream = ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal))
    await take(stream, 1)
    async with service_channel(f"127.0.0.1:{second_ledger_process}") as channel:
        replica_b = ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)
        posted = [await fund(replica_b, escrow, goal, amount) for amount in range(1, 51)]
    balance_at = {p.transaction.entries[1].seq: sum(range(1, n + 1)) for n, p in enumerate(posted, 1)}
    received = []
    async with asyncio.timeout(30):
        async for change in stream:
            received.append(change)
            if change.balance == balance_at[max(balance_at)]:
                break
    stream.cancel()
    # A watcher that falls behind (a loaded machine) is coalesced to later balances, never reordered.
    assert [r.seq for r in received] == sorted({r.seq for r in received})
    assert all(balance_at.get(r.seq) == r.balance for r in received)


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


async def test_an_sse_clients_last_event_id_resumes_the_balance_stream(ledger: LedgerUnderTest) -> None:
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    seen = await fund(ledger.internal, escrow, goal, 5)
    for amount in (6, 7):
        await fund(ledger.internal, escrow, goal, amount)
    stream = ledger.public.WatchBalance(
        ledger_service_pb2.WatchBalanceRequest(account_id=goal),
        metadata=(("last-event-id", str(seen.transaction.entries[1].seq)),),
    )
    missed = await take(stream, 2)
    stream.cancel()
    assert [m.balance for m in missed] == [11, 18]  # the changes after it, not the current balance first
    # The request's own after_seq, when given, is the position; the header is not read.
    explicit = ledger.public.WatchBalance(
        ledger_service_pb2.WatchBalanceRequest(account_id=goal, after_seq=missed[0].seq),
        metadata=(("last-event-id", "not a seq"),),
    )
    (rest,) = await take(explicit, 1)
    explicit.cancel()
    assert rest.balance == 18


@pytest.mark.parametrize("header", ["abc", "-1", "1e3", "1.5", "99999999999999999999"])
async def test_a_malformed_last_event_id_is_refused(ledger: LedgerUnderTest, header: str) -> None:
    goal = await open_account(ledger.internal, "GOAL")
    stream = ledger.public.WatchBalance(
        ledger_service_pb2.WatchBalanceRequest(account_id=goal), metadata=(("last-event-id", header),)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await take(stream, 1)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason(raised.value, "ledger.gofund") == "INVALID_LAST_EVENT_ID"


@pytest_asyncio.fixture
async def quick_heartbeats(
    ledger: LedgerUnderTest, postgres_port: int, mongodb_port: int, tmp_path: Path
) -> AsyncIterator[tuple[ledger_service_pb2_grpc.LedgerServiceStub, Any]]:
    """A ledger replica on the same database whose streams beat after 50 ms of quiet.

    Yields its public stub and its broadcaster."""
    settings = settings_with(
        postgres_port, mongodb_port, tmp_path, ledger_database_url=ledger.url, stream_heartbeat_ms=50
    )
    runner = ServiceRunner(build, settings, port=0)
    port = await runner.start()
    assert runner.service is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield ledger_service_pb2_grpc.LedgerServiceStub(channel), runner.service.background[0].__self__  # type: ignore[attr-defined]
    await runner.stop()


async def next_message(stream: Any, *, heartbeat: bool) -> Any:
    """The stream's next heartbeat, or its next change (skipping heartbeats)."""
    async with asyncio.timeout(10):
        async for message in stream:
            if message.heartbeat is heartbeat:
                return message
    raise AssertionError("the stream ended")


async def test_a_quiet_balance_stream_sends_heartbeats_repeating_the_latest_balance(
    ledger: LedgerUnderTest, quick_heartbeats: tuple[ledger_service_pb2_grpc.LedgerServiceStub, Any]
) -> None:
    public, broadcaster = quick_heartbeats
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    await fund(ledger.internal, escrow, goal, 40)
    stream = public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal))
    first, beat = await take(stream, 2)
    assert not first.heartbeat
    assert (beat.heartbeat, beat.seq, beat.balance) == (True, first.seq, 40)

    posted = await fund(ledger.internal, escrow, goal, 2)
    change = await next_message(stream, heartbeat=False)
    later = await next_message(stream, heartbeat=True)
    assert (change.balance, change.transaction_id) == (42, posted.transaction.id)
    assert (later.seq, later.balance, later.transaction_id) == (change.seq, 42, posted.transaction.id)

    # Resumed with nothing missed, the first thing it hears is a heartbeat with the balance it has.
    caught_up = public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal, after_seq=change.seq))
    (beat,) = await take(caught_up, 1)
    assert (beat.heartbeat, beat.seq, beat.balance) == (True, change.seq, 42)

    # Clients that go away between heartbeats are forgotten.
    stream.cancel()
    caught_up.cancel()
    await eventually(lambda: asyncio.sleep(0, broadcaster.watcher_count == 0), 5, "the watchers to be forgotten")


async def test_a_busy_balance_stream_is_coalesced_to_its_rate_and_ends_on_the_last_change(
    ledger: LedgerUnderTest, postgres_port: int, mongodb_port: int, tmp_path: Path
) -> None:
    # One message per 2 s: ten postings made one after another fall in one pause.
    settings = settings_with(
        postgres_port, mongodb_port, tmp_path, ledger_database_url=ledger.url, stream_max_updates_per_s=0.5
    )
    runner = ServiceRunner(build, settings, port=0)
    port = await runner.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            public = ledger_service_pb2_grpc.LedgerServiceStub(channel)
            escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
            stream = public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal))
            (current,) = await take(stream, 1)
            posted = [await fund(ledger.internal, escrow, goal, 1) for _ in range(10)]
            last_seq = posted[-1].transaction.entries[-1].seq
            changes = []
            while not changes or changes[-1].seq < last_seq:
                changes.append(await next_message(stream, heartbeat=False))
            stream.cancel()
    finally:
        await runner.stop()
    assert current.balance == 0
    # The first change goes out at once, the nine after it as one: the newest.
    assert len(changes) == 2
    assert (changes[-1].balance, changes[-1].transaction_id) == (10, posted[-1].transaction.id)


async def test_a_ledger_that_loses_its_change_feed_ends_every_balance_stream_and_a_resume_misses_nothing(
    ledger: LedgerUnderTest, quick_heartbeats: tuple[ledger_service_pb2_grpc.LedgerServiceStub, Any]
) -> None:
    public, broadcaster = quick_heartbeats
    escrow, goal = await open_account(ledger.internal, "ESCROW"), await open_account(ledger.internal, "GOAL")
    await fund(ledger.internal, escrow, goal, 10)
    stream = public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal))
    (first,) = await take(stream, 1)
    # Every LISTEN connection on the ledger's database is cut: notifications sent
    # before the listeners are back are lost, so no stream may go on as if complete.
    async with await psycopg.AsyncConnection.connect(psycopg_dsn(ledger.url), autocommit=True) as sql:
        await sql.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await take(stream, 100)
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
    assert reason(ended.value, "ledger.gofund") == "WATCH_INTERRUPTED"
    posted = await fund(ledger.internal, escrow, goal, 5)  # perhaps while nobody listened
    resumed = public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=goal, after_seq=first.seq))
    change = await next_message(resumed, heartbeat=False)
    resumed.cancel()
    assert (change.balance, change.transaction_id) == (15, posted.transaction.id)
    await eventually(lambda: asyncio.sleep(0, broadcaster.watcher_count == 0), 5, "the watchers to be forgotten")
