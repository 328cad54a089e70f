"""Claiming a due webhook event on the real Mongo-wire server, from the due set or by the id
intake handed over: the lease is taken on the event as the claim read it, so a write that lands
between the claim's read and its lease (another replica arming the same outbox entry anew) is
never processed with the content read before it, even when that replica's clock makes the
event due already; and a claim by id takes that event only while it is due and nobody holds it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from services.payments import store
from services.payments.store import PaymentsStore

pytestmark = pytest.mark.asyncio

LEASE = timedelta(seconds=30)


class WrittenBetween:
    """The events collection, with `write` run after the claim's query has read its candidates."""

    def __init__(self, store: PaymentsStore, write: Any) -> None:
        self._events = store.events
        self._write = write

    async def find_one(self, *args: Any, **kwargs: Any) -> Any:
        doc = await self._events.find_one(*args, **kwargs)
        await self._write()
        return doc

    def find(self, *args: Any, **kwargs: Any) -> Any:
        cursor = self._events.find(*args, **kwargs)
        write = self._write

        class Read:
            def sort(self, *a: Any, **k: Any) -> Read:
                cursor.sort(*a, **k)
                return self

            def limit(self, count: int) -> Read:
                cursor.limit(count)
                return self

            async def to_list(self) -> list[Any]:
                docs = await cursor.to_list()
                await write()
                return docs

        return Read()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._events, name)


async def claim(payments_store: PaymentsStore, how: str) -> store.ClaimedEvent | None:
    if how == "due set":
        return await payments_store.claim_due_event(LEASE)
    return await payments_store.claim_event("check:1", LEASE)


@pytest.mark.parametrize("how", ["due set", "by id"])
async def test_an_event_rewritten_after_the_claim_read_it_is_not_leased_with_the_old_content(
    payments_store: PaymentsStore, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    await payments_store.arm_event("check:1", "gofund.check_payment", {"abandon_before": "first"})
    armed = (await payments_store.events.find_one({"eventId": "check:1"}))["nextAttemptAt"]  # type: ignore[index]
    await asyncio.sleep(0.05)  # the claim's own clock reading comes later

    async def arm_again() -> None:
        # Another replica arms it anew, its clock a little behind ours: the event is due
        # again at once, by our clock too, with other content.
        with monkeypatch.context() as patched:
            patched.setattr(store, "now", lambda: armed + timedelta(milliseconds=1))
            await payments_store.arm_event("check:1", "gofund.check_payment", {"abandon_before": "second"})

    events = payments_store.events
    payments_store.events = WrittenBetween(payments_store, arm_again)  # type: ignore[assignment]
    try:
        raced = await claim(payments_store, how)
    finally:
        payments_store.events = events
    claimed = await claim(payments_store, how)

    assert raced is None
    assert claimed is not None
    assert (claimed.event_id, dict(claimed.data)) == ("check:1", {"abandon_before": "second"})


async def test_a_claim_by_id_takes_that_event_and_leaves_older_due_ones_to_the_due_set(
    payments_store: PaymentsStore,
) -> None:
    await payments_store.arm_event("older", "gofund.check_payment", {"n": 1})
    await payments_store.arm_event("handed", "gofund.check_payment", {"n": 2})

    claimed = await payments_store.claim_event("handed", LEASE)
    oldest_due = await payments_store.claim_due_event(LEASE)

    assert claimed is not None
    assert (claimed.event_id, dict(claimed.data)) == ("handed", {"n": 2})
    assert oldest_due is not None
    assert oldest_due.event_id == "older"


async def test_a_claim_by_id_takes_nothing_held_waiting_done_or_unknown(payments_store: PaymentsStore) -> None:
    for event_id in ("held", "waiting", "done"):
        await payments_store.arm_event(event_id, "gofund.check_payment", {})
    held = await payments_store.claim_event("held", LEASE)
    waiting = await payments_store.claim_event("waiting", LEASE)
    done = await payments_store.claim_event("done", LEASE)
    assert held is not None
    assert waiting is not None
    assert done is not None
    await payments_store.event_failed(
        "waiting", waiting.token, "boom", store.now() + timedelta(minutes=5), count_failure=True
    )
    await payments_store.event_done("done", done.token, store.EventStatus.PROCESSED)

    again = [await payments_store.claim_event(event_id, LEASE) for event_id in ("held", "waiting", "done", "nobody")]

    assert again == [None, None, None, None]
