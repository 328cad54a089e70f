"""Balance fan-out: one LISTEN connection per process, one small queue per watcher.

Every posting commits one NOTIFY on `ledger_balances` with the balance changes
it made (or, for a very large transaction, just its seq range). PostgreSQL
delivers notifications in commit order to every listening connection, so every
ledger replica sees every commit. `Broadcaster` holds this process's single
listening connection and hands each change to the watchers whose filter
matches.

A watcher never slows posting: posting does not wait for it, and its queue
keeps only the latest change per account (a slow watcher is coalesced to the
latest balance, still in seq order). If it falls behind on more accounts than
its capacity, it is closed and its client resumes from the last seq it saw,
replaying from the entries. If the listening connection drops, every watcher is
closed the same way, because notifications sent meanwhile are lost.

The public WatchBalance (one account, paced to a rate, with heartbeats) does
not get a watcher of its own: each watched account has one `Feed`
(services.common.feed), which paces its changes once for all its watchers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Iterable

from services.common.db import Database
from services.common.errors import DomainError
from services.common.feed import Feed, Feeds
from services.common.listen import Listener
from services.ledger.domain import AccountType
from services.ledger.store import NOTIFY_CHANNEL, BalanceChange, changes_after

log = logging.getLogger("gofund.ledger.streams")

DEFAULT_CAPACITY = 10_000


class WatcherClosed(DomainError):
    """The watcher can no longer promise completeness; the client must resume from its last seq."""


class ChangeFeedUnavailable(DomainError):
    """This process is not listening to the database's change feed right now."""


class Watcher:
    def __init__(self, account_ids: Iterable[str], account_types: Iterable[AccountType], capacity: int) -> None:
        self.account_ids = frozenset(account_ids)
        self.account_types = frozenset(account_types)
        self.capacity = capacity
        self._pending: OrderedDict[str, BalanceChange] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._closed: str | None = None

    def offer(self, change: BalanceChange) -> None:
        if self._closed is not None:
            return
        # Keep only the newest change per account; re-inserting at the end keeps seq order.
        self._pending.pop(change.account_id, None)
        self._pending[change.account_id] = change
        if len(self._pending) > self.capacity:
            self.close("watcher fell too far behind")
        self._wakeup.set()

    def close(self, reason: str) -> None:
        self._closed = reason
        self._pending.clear()
        self._wakeup.set()

    async def next_batch(self) -> list[BalanceChange]:
        """The changes waiting, oldest first; waits for at least one."""
        while not self._pending:
            if self._closed is not None:
                raise WatcherClosed(self._closed)
            self._wakeup.clear()
            await self._wakeup.wait()
        batch = list(self._pending.values())
        self._pending.clear()
        return batch


class Broadcaster:
    def __init__(
        self,
        database: Database,
        *,
        capacity: int = DEFAULT_CAPACITY,
        min_interval_s: float = 0.0,
        heartbeat_s: float | None = None,
    ) -> None:
        self._database = database
        self._capacity = capacity
        # One paced feed per account watched by the public WatchBalance (services.common.feed).
        self._feeds: Feeds[BalanceChange] = Feeds(min_interval_s=min_interval_s, heartbeat_s=heartbeat_s)
        self._by_account: dict[str, set[Watcher]] = defaultdict(set)
        self._by_type: dict[AccountType, set[Watcher]] = defaultdict(set)
        self._listener = Listener(
            database,
            NOTIFY_CHANNEL,
            name="balance listener",
            dependency="ledger database",
            dispatch=self._dispatch,
            # Notifications sent while nobody listens are lost: watchers resume from their seq.
            on_disconnect=lambda: self._close_all("the ledger lost its change feed; resume from your last seq"),
            logger=log,
        )

    @property
    def watcher_count(self) -> int:
        watchers = len({w for ws in (*self._by_account.values(), *self._by_type.values()) for w in ws})
        return watchers + self._feeds.watcher_count

    async def run(self) -> None:
        """Keep one LISTEN connection open for the life of the process (a background loop)."""
        await self._listener.run()

    async def subscribe(
        self, account_ids: Iterable[str], account_types: Iterable[AccountType], timeout_s: float = 5.0
    ) -> Watcher:
        """A watcher that receives every change committed from now on."""
        await self._wait_listening(timeout_s)
        watcher = Watcher(account_ids, account_types, self._capacity)
        for account_id in watcher.account_ids:
            self._by_account[account_id].add(watcher)
        for account_type in watcher.account_types:
            self._by_type[account_type].add(watcher)
        return watcher

    async def follow(self, account_id: str, timeout_s: float = 5.0) -> Feed[BalanceChange]:
        """The account's feed, which publishes its balance changes committed from now on, paced."""
        await self._wait_listening(timeout_s)
        return self._feeds.join(account_id)

    def unfollow(self, feed: Feed[BalanceChange]) -> None:
        self._feeds.leave(feed)

    async def _wait_listening(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._listener.listening.wait()
        except TimeoutError:
            raise ChangeFeedUnavailable("the ledger is not receiving changes right now; try again") from None

    def unsubscribe(self, watcher: Watcher) -> None:
        for account_id in watcher.account_ids:
            watchers = self._by_account.get(account_id)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._by_account[account_id]
        for account_type in watcher.account_types:
            self._by_type[account_type].discard(watcher)

    async def _dispatch(self, payload: str) -> None:
        try:
            decoded = json.loads(payload)
            if isinstance(decoded, dict):  # a large transaction: its seq range only
                first, last = int(decoded["from"]), int(decoded["to"])
            else:
                changes = [BalanceChange.from_json(row) for row in decoded]
        except (ValueError, TypeError, KeyError):
            # Not written by a ledger (someone else NOTIFYing on our channel): skip it.
            log.error("ignored a malformed notification", extra={"payload": payload[:200]})
            return
        if isinstance(decoded, dict):
            async with self._database.engine.connect() as connection:
                changes = await changes_after(
                    connection,
                    after_seq=first - 1,
                    up_to_seq=last,
                    account_types=list(AccountType),
                    limit=last - first + 1,
                )
        for change in changes:
            self._feeds.offer(change.account_id, change)
            for watcher in self._by_account.get(change.account_id, ()):
                watcher.offer(change)
            for watcher in self._by_type.get(change.account_type, ()):
                if change.account_id not in watcher.account_ids:  # already offered above
                    watcher.offer(change)

    def _close_all(self, reason: str) -> None:
        self._feeds.end_all(reason)
        for watchers in (*self._by_account.values(), *self._by_type.values()):
            for watcher in watchers:
                watcher.close(reason)
