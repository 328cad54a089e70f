"""The follower batches what arrived while it applied the last batch, and a stream's end or
error comes after the messages before it."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from services.goals.follower import batches


@dataclass(frozen=True)
class Message:
    seq: int


class Broken(Exception):
    pass


async def stream(count: int, error: Exception | None = None) -> AsyncIterator[Message]:
    for seq in range(1, count + 1):
        yield Message(seq)
    if error is not None:
        raise error


async def collect(messages: AsyncIterator[Message], most: int) -> list[list[int]]:
    seen = []
    async for batch in batches(messages, most):
        seen.append([m.seq for m in batch])
        await asyncio.sleep(0.01)  # applying it: the reader fills the next batch meanwhile
    return seen


def test_messages_that_arrive_while_a_batch_is_applied_make_the_next_batch_in_order() -> None:
    seen = asyncio.run(collect(stream(10), most=4))
    assert [seq for batch in seen for seq in batch] == list(range(1, 11))
    assert max(len(batch) for batch in seen) == 4
    assert len(seen) < 10


def test_a_broken_stream_raises_after_the_messages_before_the_break() -> None:
    seen: list[int] = []

    async def run() -> None:
        async for batch in batches(stream(5, Broken("stream broke")), 100):
            seen.extend(m.seq for m in batch)

    with pytest.raises(Broken):
        asyncio.run(run())
    assert seen == [1, 2, 3, 4, 5]
