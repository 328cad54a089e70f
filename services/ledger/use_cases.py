"""Ledger use cases: each runs in one unit of work and applies the domain rules.

The servicer calls these with plain values and gets plain values back; no
gRPC here, and SQL only through `store`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from services.common import context
from services.common.db import Database
from services.ledger import domain, store
from services.ledger.batcher import Batcher
from services.ledger.domain import AccountType, Posting, TransactionKind
from services.ledger.store import PostRequest, TransactionRow
from services.ledger.streams import Broadcaster, WatcherClosed

REPLAY_PAGE = 1000
# Requests per database transaction: enough to pay a commit's flush and round
# trips once for a crowd, small enough that one batch's locks are short.
MAX_BATCH = 64
# A batch whose ids another ledger committed meanwhile runs again and sees them.
BATCH_ATTEMPTS = 3


class Ledger:
    def __init__(
        self,
        database: Database,
        broadcaster: Broadcaster,
        *,
        max_batch: int = MAX_BATCH,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.database = database
        self.broadcaster = broadcaster
        self.batcher: Batcher[PostRequest, tuple[TransactionRow, bool]] = Batcher(
            self._write, max_batch=max_batch, on_batch=on_batch
        )

    # -- writes ---------------------------------------------------------------
    async def open_account(
        self, account_type: AccountType | None, entity_id: str, currency: str
    ) -> tuple[store.AccountRow, bool]:
        domain.validate_account_key(account_type, entity_id, currency)
        assert account_type is not None
        async with self.database.transaction() as session:
            return await store.open_account(session, account_type, entity_id, currency)

    async def post_transaction(
        self,
        transaction_id: str,
        postings: Sequence[Posting],
        description: str,
        metadata: dict[str, str],
        *,
        pending: bool = False,
    ) -> tuple[store.TransactionRow, bool]:
        domain.validate_transaction(transaction_id, postings, description)
        kind = TransactionKind.PENDING if pending else TransactionKind.POSTED
        if pending:
            postings = domain.pending(postings)
        return await self.batcher.submit(PostRequest(transaction_id, tuple(postings), description, metadata, kind))

    async def resolve_pending(
        self,
        transaction_id: str,
        pending_id: str,
        kind: TransactionKind,
        description: str,
        metadata: dict[str, str],
    ) -> tuple[store.TransactionRow, bool]:
        """Post or void a reservation, once; a replay of the same resolution returns it."""
        assert kind.resolves
        async with self.database.transaction() as session:
            reservation = await store.get_transaction(session, pending_id)
        if reservation.kind is not TransactionKind.PENDING:
            raise domain.NotPending(
                f"transaction {pending_id} is not a reservation", metadata={"transaction_id": pending_id}
            )
        if reservation.resolved_by not in (None, transaction_id):
            raise domain.PendingAlreadyResolved(
                f"transaction {pending_id} was resolved by {reservation.resolved_by}",
                metadata={"transaction_id": pending_id, "resolved_by": str(reservation.resolved_by)},
            )
        postings = domain.resolution((e.posting() for e in reservation.entries), kind)
        domain.validate_transaction(transaction_id, postings, description)
        # Two resolutions racing past the check above are decided under the
        # batch's locks: the second is PendingAlreadyResolved.
        return await self.batcher.submit(
            PostRequest(transaction_id, tuple(postings), description, metadata, kind, resolves=pending_id)
        )

    async def reverse_transaction(
        self, transaction_id: str, original_id: str, description: str
    ) -> tuple[store.TransactionRow, bool]:
        async with self.database.transaction() as session:
            original = await store.get_transaction(session, original_id)
        if original.kind is not TransactionKind.POSTED:
            raise domain.NotReversible(
                f"transaction {original_id} is a {original.kind.lower().replace('_', ' ')}; void a reservation instead",
                metadata={"transaction_id": original_id},
            )
        postings = domain.reversal(e.posting() for e in original.entries)
        domain.validate_transaction(transaction_id, postings, description)
        # A second reversal under another id is AlreadyReversed; a replay of this one returns it.
        return await self.batcher.submit(
            PostRequest(transaction_id, tuple(postings), description, {"reverses": original_id}, reverses=original_id)
        )

    async def _write(self, requests: list[PostRequest]) -> list[tuple[TransactionRow, bool] | Exception]:
        """One batch in one database transaction (the batcher's writer)."""
        for _ in range(BATCH_ATTEMPTS - 1):
            try:
                async with self.database.transaction() as session:
                    return list(await store.post_batch(session, requests))
            except store.RetryBatch:
                continue
        async with self.database.transaction() as session:
            return list(await store.post_batch(session, requests))

    # -- reads ----------------------------------------------------------------
    async def visible_account(self, account_id: str) -> store.AccountRow:
        """The account if the caller may see it; otherwise the same NOT_FOUND as a missing one."""
        async with self.database.transaction() as session:
            return await self._visible(session, account_id)

    async def visible_balance(self, account_id: str) -> store.BalanceRow:
        async with self.database.transaction() as session:
            await self._visible(session, account_id)
            (balance,) = await store.get_balances(session, [account_id])
        return balance

    async def visible_entries(self, account_id: str, before_seq: int | None, limit: int) -> list[store.EntryRow]:
        async with self.database.transaction() as session:
            await self._visible(session, account_id)
            return await store.list_entries(session, account_id, before_seq, limit)

    @staticmethod
    async def _visible(session: store.Executor, account_id: str) -> store.AccountRow:
        account = await store.get_account(session, account_id)
        caller = context.caller_or_none()
        if not domain.can_view(
            account.account_type,
            account.entity_id,
            caller.user_id if caller else None,
            caller.permissions if caller else (),
        ):
            raise domain.AccountNotFound(f"account {account_id} does not exist", metadata={"account_id": account_id})
        return account

    async def balances(self, account_ids: Sequence[str]) -> list[store.BalanceRow]:
        async with self.database.transaction() as session:
            return await store.get_balances(session, account_ids)

    async def transaction(self, transaction_id: str) -> store.TransactionRow:
        async with self.database.transaction() as session:
            return await store.get_transaction(session, transaction_id)

    async def transactions(self, after_seq: int, limit: int) -> list[store.TransactionRow]:
        async with self.database.transaction() as session:
            return await store.list_transactions(session, after_seq, limit)

    async def reconcile(self) -> tuple[list[store.Difference], int, int]:
        async with self.database.transaction() as session:
            return await store.reconcile(session)

    # -- streams --------------------------------------------------------------
    async def watch(
        self, *, account_ids: Sequence[str], account_types: Sequence[AccountType], after_seq: int
    ) -> AsyncIterator[store.BalanceChange]:
        """Every change after `after_seq` in seq order: the missed ones from the entries, then
        live ones (of an account a slow watcher falls behind on, only the newest).

        The watcher is registered before the database is read, so a commit
        lands either in what is read or in the watcher (or both: then seq
        decides).
        """
        watcher = await self.broadcaster.subscribe(account_ids, account_types)
        try:
            sent = after_seq
            async for change in self._catch_up(account_ids, account_types, after_seq, current_of=None):
                sent = max(sent, change.seq)
                yield change
            while True:
                for change in await watcher.next_batch():
                    if change.seq > sent:
                        sent = change.seq
                        yield change
        finally:
            self.broadcaster.unsubscribe(watcher)

    async def watch_account(
        self, account: store.AccountRow, *, after_seq: int
    ) -> AsyncIterator[tuple[store.BalanceChange, bool]]:
        """(change, heartbeat): one account's changes after `after_seq` (after_seq 0: its
        balance now, instead of its history), then what its feed publishes: live changes
        paced to the feed's rate (the ones in between coalesced to the newest; the last
        one always arrives), and the latest balance again, flagged as a heartbeat, when
        the account has been quiet (see services.common.feed). `account` as the caller
        read it (its visibility checked), so it is not read again.
        """
        feed = await self.broadcaster.follow(account.id)
        handled = feed.frame
        try:
            last: store.BalanceChange | None = None
            sent = after_seq
            current_of = account if after_seq == 0 else None
            async for change in self._catch_up([account.id], [], after_seq, current_of=current_of):
                sent = max(sent, change.seq)
                last = change
                yield change, False
            while True:
                await feed.wait(handled)
                if feed.ended is not None:
                    raise WatcherClosed(feed.ended)
                heartbeat = feed.heartbeat_frame > handled
                handled = feed.frame
                published = feed.published
                if published is not None and published.seq > sent:
                    sent, last = published.seq, published
                    yield published, False
                elif heartbeat:
                    if last is None:
                        # Nothing sent since the client's after_seq: its latest state is the
                        # balance now (no change to the account after balance.seq).
                        async with self.database.engine.connect() as connection:
                            last = await self._current(connection, account)
                        if last.seq > sent:  # committed, not yet delivered: a change, not a repeat
                            sent = last.seq
                            yield last, False
                            continue
                    yield last, True
        finally:
            self.broadcaster.unfollow(feed)

    async def _catch_up(
        self,
        account_ids: Sequence[str],
        account_types: Sequence[AccountType],
        after_seq: int,
        *,
        current_of: store.AccountRow | None,
    ) -> AsyncIterator[store.BalanceChange]:
        """What a new watcher sends before live changes: the balance of `current_of` now, or
        the changes after `after_seq` up to the last committed seq, from the entries. What
        commits after that is live; a live change at or below the highest seq sent was in
        what was read (an account's balance carries the seq of its latest change), and is
        not sent again."""
        # Each read takes a pooled connection only for the query, never while
        # the client is being written to: a slow client must not hold the pool.
        if current_of is not None:
            async with self.database.engine.connect() as connection:
                current = await self._current(connection, current_of)
            yield current
            return
        async with self.database.engine.connect() as connection:
            snapshot = await store.last_seq(connection)
        async for change in self._missed(account_ids, account_types, after_seq, snapshot):
            yield change

    async def _missed(
        self, account_ids: Sequence[str], account_types: Sequence[AccountType], after_seq: int, snapshot: int
    ) -> AsyncIterator[store.BalanceChange]:
        """The changes after `after_seq` up to `snapshot`, read from the entries page by page."""
        sent = after_seq
        while sent < snapshot:
            async with self.database.engine.connect() as connection:
                page = await store.changes_after(
                    connection, after_seq=sent, up_to_seq=snapshot, account_ids=account_ids,
                    account_types=account_types, limit=REPLAY_PAGE,
                )  # fmt: skip
            for change in page:
                yield change
            sent = page[-1].seq if len(page) == REPLAY_PAGE else snapshot

    @staticmethod
    async def _current(connection: store.Executor, account: store.AccountRow) -> store.BalanceChange:
        """The account's balance now, as a change with no transaction."""
        (balance,) = await store.get_balances(connection, [account.id])
        return store.BalanceChange(
            account.id, account.account_type, account.entity_id, account.currency,
            balance.balance, balance.debits, balance.credits, balance.seq, "",
            balance.debits_pending, balance.credits_pending,
        )  # fmt: skip
