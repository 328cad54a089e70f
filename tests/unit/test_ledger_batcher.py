"""The batch writer, on its own: which requests share a batch and who gets which outcome."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from services.ledger.batcher import Batcher

pytestmark = pytest.mark.asyncio


@dataclass(frozen=True)
class Request:
    name: str
    keys: tuple[str, ...] = ()

    @property
    def exclusive_keys(self) -> tuple[str, ...]:
        return self.keys or (self.name,)


class Refused(Exception):
    pass


class Writer:
    """Records each batch; a request named "refused" is refused alone, a batch with "broken" fails whole."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, requests: list[Request]) -> list[str | Exception]:
        self.batches.append([r.name for r in requests])
        await self.release.wait()
        if any(r.name == "broken" for r in requests):
            raise RuntimeError("the database went away")
        return [Refused(r.name) if r.name == "refused" else f"wrote {r.name}" for r in requests]


async def test_requests_arriving_while_a_batch_runs_form_the_next_batch() -> None:
    writer = Writer()
    batcher = Batcher(writer, max_batch=3)
    writer.release.clear()
    first = asyncio.create_task(batcher.submit(Request("a")))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the writer has taken "a" and waits in the database
    rest = [asyncio.create_task(batcher.submit(Request(n))) for n in "bcde"]
    await asyncio.sleep(0)
    writer.release.set()
    assert await asyncio.gather(first, *rest) == [f"wrote {n}" for n in "abcde"]
    assert writer.batches == [["a"], ["b", "c", "d"], ["e"]]
    assert (batcher.stats.batches, batcher.stats.requests, batcher.stats.largest) == (3, 5, 3)


async def test_a_refused_request_gets_its_error_and_the_others_their_results() -> None:
    batcher = Batcher(Writer(), max_batch=10)
    outcomes = await asyncio.gather(
        *(batcher.submit(Request(n)) for n in ("a", "refused", "b")), return_exceptions=True
    )
    assert outcomes[0] == "wrote a"
    assert isinstance(outcomes[1], Refused)
    assert outcomes[2] == "wrote b"


async def test_a_failed_batch_fails_each_of_its_requests_and_the_writer_goes_on() -> None:
    writer = Writer()
    batcher = Batcher(writer, max_batch=10)
    outcomes = await asyncio.gather(*(batcher.submit(Request(n)) for n in ("a", "broken")), return_exceptions=True)
    assert [type(o) for o in outcomes] == [RuntimeError, RuntimeError]
    assert await batcher.submit(Request("c")) == "wrote c"


async def test_requests_sharing_a_key_go_in_separate_batches_in_arrival_order() -> None:
    writer = Writer()
    batcher = Batcher(writer, max_batch=10)
    await asyncio.gather(
        batcher.submit(Request("a", ("k",))),
        batcher.submit(Request("b", ("k",))),
        batcher.submit(Request("c", ("j",))),
        batcher.submit(Request("d", ("j", "k"))),
        batcher.submit(Request("e", ("m",))),
    )
    # A request never overtakes an earlier one it shares a key with: "d" waits behind "b".
    assert writer.batches == [["a", "c", "e"], ["b"], ["d"]]


async def test_a_caller_that_goes_away_does_not_cancel_its_batch() -> None:
    writer = Writer()
    batcher = Batcher(writer, max_batch=10)
    writer.release.clear()
    leaving = asyncio.create_task(batcher.submit(Request("a")))
    staying = asyncio.create_task(batcher.submit(Request("b")))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    leaving.cancel()
    writer.release.set()
    assert await staying == "wrote b"
    assert leaving.cancelled()
    assert writer.batches == [["a", "b"]]
