"""Revocation fan-out: one LISTEN connection per identity process, one queue per subscriber.

Logout, DeleteSession and role changes record a row in `revocations` and
NOTIFY `identity_revocations` in the same transaction (services.identity.store),
so PostgreSQL tells every listening identity replica at commit, whichever
replica made the change. `RevocationFeed` holds this process's listening
connection, evicts identity's own token cache, and hands each revocation to
the WatchRevocations streams of the services that cache Authenticate answers.

The call that revoked waits (briefly) until its replica's subscribers have been
sent the revocation, so when logout returns the other services' caches have
already been told. If the listening connection drops, every stream is ended:
its subscriber falls back to its short cache TTL, reconnects and resumes from
the last seq it saw, replayed from the table. The listener itself catches up
from the table when it reconnects, so its own cache misses nothing either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.common.db import Database
from services.common.errors import DomainError
from services.common.listen import Listener
from services.identity import store

log = logging.getLogger("gofund.identity.revocations")

# How long a revoking call waits for its subscribers to have been sent the revocation.
DELIVERY_WAIT_S = 1.0
# A subscriber further behind than this is ended; it resumes from its seq.
SUBSCRIBER_CAPACITY = 10_000
BACKLOG_BATCH = 500
PRUNE_INTERVAL_S = 300.0


class RevocationFeedUnavailable(DomainError):
    """This replica is not receiving revocations from the database right now."""


class SubscriberClosed(DomainError):
    """The stream can no longer promise completeness; the subscriber resumes from its seq."""


@dataclass(frozen=True)
class RevocationEvent:
    seq: int
    user_id: str
    # Empty: the user's roles changed (every session of the user).
    session_id: str
    revoked_at: datetime

    @classmethod
    def of(cls, row: store.Revocation) -> RevocationEvent:
        return cls(row.seq, str(row.user_id), "" if row.session_id is None else str(row.session_id), row.revoked_at)


class Subscriber:
    def __init__(self) -> None:
        self._pending: list[RevocationEvent] = []
        self._wakeup = asyncio.Event()
        self._closed: str | None = None
        # The newest seq written to this subscriber's stream; None until its
        # first message (the backlog, or the head) is written.
        self.sent_seq: int | None = None

    def offer(self, event: RevocationEvent) -> None:
        if self._closed is not None:
            return
        self._pending.append(event)
        if len(self._pending) > SUBSCRIBER_CAPACITY:
            self.close("the subscriber fell too far behind; resume from your last seq")
        self._wakeup.set()

    def close(self, reason: str) -> None:
        self._closed = reason
        self._pending.clear()
        self._wakeup.set()

    async def next_batch(self) -> list[RevocationEvent]:
        """The revocations waiting, oldest first; waits for at least one."""
        while not self._pending:
            if self._closed is not None:
                raise SubscriberClosed(self._closed)
            self._wakeup.clear()
            await self._wakeup.wait()
        batch, self._pending = self._pending, []
        return batch


class RevocationFeed:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._subscribers: set[Subscriber] = set()
        self._progress = asyncio.Event()
        # The newest seq this process has dispatched (to its cache and its subscribers).
        self._dispatched_seq = 0
        # Whether it has caught up once: until then nothing cached can predate a revocation.
        # (Not `_dispatched_seq == 0`: on an empty table every reconnect would look like a start.)
        self._caught_up = False
        self._evictors: list[Callable[[RevocationEvent], None]] = []
        self._listener = Listener(
            database,
            store.REVOCATIONS_CHANNEL,
            name="revocation listener",
            dependency="identity database",
            on_connect=self._catch_up,
            dispatch=self._dispatch_payload,
            on_disconnect=lambda: self._close_all("identity lost its revocation feed; resume from your last seq"),
            wake_every_s=PRUNE_INTERVAL_S,
            housekeeping=self._prune,
            logger=log,
        )

    def on_revocation(self, evict: Callable[[RevocationEvent], None]) -> None:
        """Call `evict` for every revocation this process learns of (identity's own token cache)."""
        self._evictors.append(evict)

    async def run(self) -> None:
        """Keep one LISTEN connection open for the life of the process (a background loop)."""
        await self._listener.run()

    async def _catch_up(self) -> None:
        """Dispatch what was committed while this process was not listening."""
        if not self._caught_up:
            # Starting up: nothing is cached yet that an older revocation could concern.
            async with self._database.transaction() as session:
                self._dispatched_seq = (await store.revocation_bounds(session))[1]
            self._caught_up = True
            return
        while True:
            async with self._database.transaction() as session:
                rows = await store.revocations_after(session, self._dispatched_seq, BACKLOG_BATCH)
            for row in rows:
                self._dispatch(RevocationEvent.of(row))
            if len(rows) < BACKLOG_BATCH:
                return

    async def _prune(self) -> None:
        try:
            async with self._database.transaction() as session:
                await store.prune(session)
        except Exception as exc:  # pruning is housekeeping; the next round tries again
            log.warning("could not prune revocations and counters", extra={"error": str(exc)[:300]})

    async def _dispatch_payload(self, payload: str) -> None:
        try:
            decoded = json.loads(payload)
            event = RevocationEvent(
                seq=int(decoded["seq"]),
                user_id=str(uuid.UUID(decoded["user_id"])),
                session_id=str(uuid.UUID(decoded["session_id"])) if decoded["session_id"] else "",
                revoked_at=datetime.fromisoformat(decoded["revoked_at"]),
            )
        except (ValueError, TypeError, KeyError):
            # Not written by identity (someone else NOTIFYing on our channel): skip it.
            log.error("ignored a malformed revocation notification", extra={"payload": payload[:200]})
            return
        self._dispatch(event)

    def _dispatch(self, event: RevocationEvent) -> None:
        if event.seq <= self._dispatched_seq:
            return  # seen already (caught up from the table, then notified)
        self._dispatched_seq = event.seq
        for evict in self._evictors:
            evict(event)
        for subscriber in self._subscribers:
            subscriber.offer(event)
        self._signal_progress()

    def _signal_progress(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def sent(self, subscriber: Subscriber, seq: int) -> None:
        """A stream wrote everything up to `seq` to its subscriber."""
        subscriber.sent_seq = seq if subscriber.sent_seq is None else max(subscriber.sent_seq, seq)
        self._signal_progress()

    async def delivered(self, seq: int, timeout_s: float = DELIVERY_WAIT_S) -> bool:
        """Wait until this process dispatched `seq` and its subscribers' streams carried it.

        Bounded: a stuck subscriber (or listener) must not hold up logout; its
        service's cache TTL covers it. A subscriber still being sent its
        backlog gets `seq` from its queue next. True if everything was delivered."""
        if not self._listener.listening.is_set():
            # The feed is down (and said so once): nobody can be told now, so do not make
            # every logout wait for it; the services' cache TTL bounds what they trust.
            return False
        deadline = time.monotonic() + timeout_s
        while not (
            self._dispatched_seq >= seq and all(s.sent_seq >= seq for s in self._subscribers if s.sent_seq is not None)
        ):
            progress = self._progress
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("a revocation was not delivered to every subscriber in time", extra={"seq": seq})
                return False
            try:
                async with asyncio.timeout(remaining):
                    await progress.wait()
            except TimeoutError:
                continue
        return True

    @property
    def dispatched_seq(self) -> int:
        return self._dispatched_seq

    async def subscribe(self, timeout_s: float = 5.0) -> Subscriber:
        """A subscriber that receives every revocation dispatched from now on."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._listener.listening.wait()
        except TimeoutError:
            raise RevocationFeedUnavailable("identity is not receiving revocations right now; retry") from None
        subscriber = Subscriber()
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        self._signal_progress()

    def _close_all(self, reason: str) -> None:
        for subscriber in self._subscribers:
            subscriber.close(reason)
