"""A watcher coalesces a slow consumer to the latest balance per account, in seq order."""

import asyncio

import pytest

from services.ledger.domain import AccountType
from services.ledger.store import BalanceChange
from services.ledger.streams import Watcher, WatcherClosed


def change(account: str, seq: int, balance: int) -> BalanceChange:
    return BalanceChange(account, AccountType.GOAL, account, "NGN", balance, 0, balance, seq, f"t{seq}")


def test_changes_wait_in_seq_order() -> None:
    watcher = Watcher(["a", "b"], [], capacity=10)
    for c in (change("a", 1, 10), change("b", 2, 5)):
        watcher.offer(c)
    batch = asyncio.run(watcher.next_batch())
    assert [c.seq for c in batch] == [1, 2]


def test_a_slow_watcher_keeps_only_the_latest_balance_per_account() -> None:
    watcher = Watcher(["a", "b"], [], capacity=10)
    for seq, (account, balance) in enumerate([("a", 1), ("b", 7), ("a", 2), ("a", 3)], start=1):
        watcher.offer(change(account, seq, balance))
    batch = asyncio.run(watcher.next_batch())
    assert [(c.account_id, c.balance, c.seq) for c in batch] == [("b", 7, 2), ("a", 3, 4)]


def test_a_watcher_behind_on_too_many_accounts_is_closed() -> None:
    watcher = Watcher([], [AccountType.GOAL], capacity=3)
    for seq in range(1, 5):
        watcher.offer(change(f"acct-{seq}", seq, 1))
    with pytest.raises(WatcherClosed, match="behind"):
        asyncio.run(watcher.next_batch())


def test_offering_never_blocks_even_when_nobody_reads() -> None:
    watcher = Watcher(["a"], [], capacity=1)
    for seq in range(100_000):
        watcher.offer(change("a", seq, seq))
    assert [c.seq for c in asyncio.run(watcher.next_batch())] == [99_999]
