"""Group commit for postings: concurrent requests share one database transaction.

Every posting takes the balance rows of its accounts and the single
`ledger_sequence` row until it commits, so postings commit one at a time and
the ledger's throughput is one over a posting's time holding those locks —
round trips and the commit's flush included. Taking the requests that arrive
while a batch is in the database and writing them together as the next batch
(TigerBeetle's batching, PostgreSQL's own group commit) pays the round trips
and the flush once per batch instead of once per posting. There is no timer:
an idle ledger writes a lone request at once, a busy one writes bigger batches.

One writer per process runs the batches, one at a time; replicas still run
side by side, each writing its own batches (the store's lock order keeps them
apart). A request waits for its batch's outcome; a client going away does not
cancel the batch, whose other requests are someone else's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Batchable(Protocol):
    @property
    def exclusive_keys(self) -> Sequence[Hashable]: ...


Request = TypeVar("Request", bound=Batchable)
Result = TypeVar("Result")


@dataclass
class BatchStats:
    """What the writer has done since start (for tests and the benchmark)."""

    batches: int = 0
    requests: int = 0
    largest: int = 0


class Batcher(Generic[Request, Result]):
    """Runs `write(batch) -> an outcome per request` over the requests submitted
    while the previous batch ran. An outcome that is an exception is raised to
    its request alone; an exception raised by `write` goes to every request of
    the batch."""

    def __init__(
        self,
        write: Callable[[list[Request]], Awaitable[Sequence[Result | Exception]]],
        *,
        max_batch: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._write = write
        self._on_batch = on_batch
        self._max_batch = max_batch
        self._queue: list[tuple[Request, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    async def submit(self, request: Request) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if self._writer is None:
            # The writer runs only while there is work, so an idle ledger holds no task.
            self._writer = asyncio.create_task(self._drain(), name="ledger batch writer")
        return await asyncio.shield(future)

    def _take(self) -> list[tuple[Request, asyncio.Future[Result]]]:
        """The next batch in arrival order; a request sharing a key with one
        already taken waits for a later batch, so it sees that one's outcome."""
        taken: list[tuple[Request, asyncio.Future[Result]]] = []
        left: list[tuple[Request, asyncio.Future[Result]]] = []
        keys: set[Hashable] = set()
        for item in self._queue:
            item_keys = set(item[0].exclusive_keys)
            if len(taken) < self._max_batch and not keys & item_keys:
                taken.append(item)
            else:
                left.append(item)
            keys |= item_keys  # a later request never overtakes an earlier one it conflicts with
        self._queue = left
        return taken

    async def _drain(self) -> None:
        batch: list[tuple[Request, asyncio.Future[Result]]] = []
        try:
            while self._queue:
                batch = self._take()
                self.stats.batches += 1
                self.stats.requests += len(batch)
                self.stats.largest = max(self.stats.largest, len(batch))
                if self._on_batch is not None:
                    self._on_batch(len(batch))
                try:
                    outcomes = await self._write([request for request, _ in batch])
                except Exception as failed:  # handed to every request of the batch
                    outcomes = [failed] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._writer = None
            # Cancelled (the process is stopping): nobody will write what is still waiting.
            for _, future in (*batch, *self._queue):
                if not future.done():
                    future.cancel()
            self._queue = []
