"""Following another service's stream with a stored cursor: one loop for both streams goals follows.

Goals follows the ledger's GOAL balances (`funding`) and payments' outcomes
(`outcomes`). Each is a resumable stream with a gap-free `seq`; a background
loop of every goals process reads it from the cursor it stored and applies the
messages that arrived while it applied the last ones together, in one
transaction with the cursor, so a restart resumes exactly after the last
message applied (and a busy stream costs one commit per batch, not per
message). A broken stream (the other service restarting or dropping a slow
watcher, a network fault) is normal: the loop reconnects with
backoff from the stored cursor. Every apply is idempotent (a replica, or a
replay, applying the same message again changes nothing), so several goals
replicas may follow the same stream.

A message that can never apply (the apply raises a domain error: it names
nothing goals knows, or contradicts what goals recorded) is logged as an ERROR
for an operator, with the message, and stepped over: holding the stream on it
would stop every later message, and reconciliation reports the drift it left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from services.common import outage
from services.common.db import Database
from services.common.errors import DomainError
from services.common.feed import Sequenced
from services.goals import lifecycle, store
from services.goals.peers import Refused

log = logging.getLogger("gofund.goals.follower")

BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0
# The most stream messages applied in one transaction.
BATCH_MAX = 100


M = TypeVar("M", bound=Sequenced)


@dataclass(frozen=True)
class Stream(Generic[M]):
    """What one followed stream is: its name in logs, its cursor, how to read and apply it."""

    name: str
    cursor: type[store.StreamCursor]
    # The stream after a seq; it ends with a DomainError or Refused when it breaks.
    read: Callable[[int], AsyncIterator[M]]
    # Apply one message in the session (the cursor is advanced in the same
    # transaction); True when the sagas have work to do once it commits.
    apply: Callable[[AsyncSession, M, datetime], Awaitable[bool]]
    # For a stream of states rather than events: what a message is the state of. Of a
    # batch's messages with one key only the newest is applied (the others are older
    # states of the same thing, which the stream itself may coalesce for a slow reader).
    key: Callable[[M], str] | None = None


@dataclass(frozen=True)
class _Ended:
    """The stream ended (error None) or broke (its error)."""

    error: Exception | None


async def batches(messages: AsyncIterator[M], most: int) -> AsyncIterator[list[M]]:
    """The stream's messages, each batch what arrived while the one before was applied
    (at most `most`), read ahead by a task of its own; the stream's end or error comes
    after the messages before it. (A queue and a task, written here: what is wanted is
    whatever has arrived so far, not the fixed-size chunks stream libraries batch into.)"""
    queue: asyncio.Queue[M | _Ended] = asyncio.Queue(maxsize=most)

    async def read() -> None:
        try:
            async for message in messages:
                await queue.put(message)
        except Exception as exc:
            await queue.put(_Ended(exc))
        else:
            await queue.put(_Ended(None))

    reader = asyncio.create_task(read())
    try:
        while True:
            batch: list[M] = []
            item = await queue.get()
            while not isinstance(item, _Ended):
                batch.append(item)
                if queue.empty() or len(batch) == most:
                    break
                item = queue.get_nowait()
            if batch:
                yield batch
            if isinstance(item, _Ended):
                if item.error is None:
                    return
                raise item.error
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


class Follower(Generic[M]):
    def __init__(
        self,
        database: Database,
        stream: Stream[M],
        clock: Callable[[], datetime],
        wake_sagas: Callable[[], None],
    ) -> None:
        self.database = database
        self.stream = stream
        self.clock = clock
        self.wake_sagas = wake_sagas
        self.connected = asyncio.Event()
        self._database_outage = outage.tracker(database, "goals database")

    async def run(self) -> None:
        attempt = 0  # reconnections since the last message applied
        interrupted = False
        while True:
            started = time.monotonic()
            try:
                async with self.database.transaction() as session:
                    after = await store.cursor(session, self.stream.cursor)
                self._database_outage.recovered()
                self.connected.set()
                async for batch in batches(self.stream.read(after), BATCH_MAX):
                    interrupted = False
                    await self.deliver_batch(batch)
                    attempt = 0
            except (DomainError, Refused) as exc:
                # A broken stream is normal: said once at INFO; reconnections failing
                # fast after it are DEBUG, since the other service being down is the
                # sagas' and scheduler's to report.
                quick = time.monotonic() - started < BACKOFF_MAX_S
                (log.debug if interrupted and quick else log.info)(
                    f"{self.stream.name} interrupted; resuming", extra={"error": str(exc)[:300]}
                )
                interrupted = True
            except Exception as exc:
                if not outage.dependency_down(exc):
                    log.exception(f"{self.stream.name} failed; resuming")
                else:
                    self._database_outage.failed(exc, waiting=self.stream.name)
            finally:
                self.connected.clear()
            attempt += 1
            await asyncio.sleep(outage.backoff_s(attempt, BACKOFF_START_S, BACKOFF_MAX_S, jitter=False))

    async def deliver_batch(self, batch: list[M]) -> None:
        """Apply the messages that arrived while the last batch was applied, in one transaction
        with the cursor: one commit, one cursor write and one progress change per goal for all
        of them (`lifecycle.progress_once`), and of several states of one thing only the newest
        (`Stream.key`). If one cannot apply, the transaction rolls back and they are applied
        one by one, so only that one is skipped."""
        if len(batch) == 1:
            await self.deliver(batch[0])
            return
        applied = batch
        if self.stream.key is not None:
            newest = {self.stream.key(message): message for message in batch}
            applied = sorted(newest.values(), key=lambda message: message.seq)
        try:
            async with self.database.transaction() as session:
                wake = False
                async with lifecycle.progress_once(session, self.clock):
                    for message in applied:
                        wake = await self.stream.apply(session, message, self.clock()) or wake
                await store.advance_cursor(session, self.stream.cursor, batch[-1].seq)
        except DomainError:
            for message in batch:
                await self.deliver(message)
            return
        if wake:
            self.wake_sagas()

    async def deliver(self, message: M) -> DomainError | None:
        """Apply one message with the cursor, as the stream hands it over; the refusal
        logged and stepped over, if the message could not apply."""
        try:
            async with self.database.transaction() as session:
                wake = await self.stream.apply(session, message, self.clock())
                await store.advance_cursor(session, self.stream.cursor, message.seq)
        except DomainError as exc:
            log.error(
                f"{self.stream.name}: a message that cannot apply was skipped",
                extra={
                    "seq": message.seq,
                    "payload": repr(message)[:500],
                    "rule": type(exc).__name__,
                    "error": str(exc),
                },
            )
            async with self.database.transaction() as session:
                await store.advance_cursor(session, self.stream.cursor, message.seq)
            return exc
        if wake:
            self.wake_sagas()
        return None
