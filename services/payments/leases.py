"""Asking Paystack once under a lease: the one loop initialize, refund and transfer share.

Work that must happen once at Paystack is done by whoever takes the record's
lease (one conditional update, see store.Lease); of 20 concurrent retries one
asks and the others wait for its answer. The Paystack call runs to its end even
if its caller goes away, so its answer is stored within its lease and a retry
finds it instead of asking again.

Deadline budgets: a Paystack call takes at most GOFUND_PAYSTACK_TIMEOUT_MS and
ends PROVIDER_MARGIN_S before the incoming call's deadline; the lease that
covers it outlives it by LEASE_MARGIN_S, so nobody overtakes a call in flight
and a retry after a cut-off call takes over as soon as the caller's deadline
has passed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from services.common import context
from services.payments import domain
from services.payments.store import Lease, PaymentsStore

R = TypeVar("R")

# How long a waiting caller polls for the lease holder's answer between looks.
LEASE_POLL_S = 0.05
# A Paystack call ends this long before the incoming call's deadline, so its
# answer is stored and returned in time.
PROVIDER_MARGIN_S = 0.5
# A lease outlives the Paystack call it covers by this much.
LEASE_MARGIN_S = 0.25
# Less than this left of the deadline: do not start a Paystack call.
MIN_PROVIDER_BUDGET_S = 0.2


class Leases:
    def __init__(self, records: PaymentsStore, *, paystack_timeout_s: float) -> None:
        self._records = records
        self._paystack_timeout_s = paystack_timeout_s
        # Paystack calls whose caller went away, finishing on their own.
        self._detached: set[asyncio.Future[Any]] = set()

    def budget(self) -> float:
        """Seconds one Paystack call may take: the configured timeout, or less when the
        incoming call's deadline is nearer (it then ends PROVIDER_MARGIN_S before it)."""
        budget = self._paystack_timeout_s
        remaining = context.remaining_seconds()
        if remaining is not None:
            budget = min(budget, remaining - PROVIDER_MARGIN_S)
        if budget < MIN_PROVIDER_BUDGET_S:
            raise domain.PaystackUnavailable("too little of the call's deadline is left to ask Paystack")
        return budget

    async def ask_once(
        self,
        lease: Lease,
        *,
        reload: Callable[[], Awaitable[R]],
        ask: Callable[[R, Lease, float], Awaitable[R]],
        answered: Callable[[R], object],
    ) -> R:
        """One turn of "ask Paystack once": take `lease` and `ask` under it (with the record
        as it stands once the lease is ours, and the call's budget), or, while another
        caller holds it, wait until that caller has `answered` or its lease is free. The
        caller loops until the record shows the answer."""
        budget = self.budget()
        held = await self._records.take(lease, timedelta(seconds=budget + LEASE_MARGIN_S))
        if held is None:
            return await self._wait(lease, reload, answered)
        task: asyncio.Future[R] = asyncio.ensure_future(self._ask(held, reload, ask, budget))
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)
        return await asyncio.shield(task)

    @staticmethod
    async def _ask(
        held: Lease, reload: Callable[[], Awaitable[R]], ask: Callable[[R, Lease, float], Awaitable[R]], budget: float
    ) -> R:
        # Read after the lease is taken: what a holder before us stored is seen.
        return await ask(await reload(), held, budget)

    async def _wait(self, lease: Lease, reload: Callable[[], Awaitable[R]], answered: Callable[[R], object]) -> R:
        """Poll until the holder has answered, or its lease is free (the caller then takes it
        over). If this call's own deadline comes first, it answers in time with
        PaystackCallInProgress, and a retry finds the holder's answer."""
        remaining = context.remaining_seconds()
        answer_by = None if remaining is None else time.monotonic() + remaining - PROVIDER_MARGIN_S
        while True:
            await asyncio.sleep(LEASE_POLL_S)
            current = await reload()
            if answered(current) or await self._records.lease_free(lease):
                return current
            if answer_by is not None and time.monotonic() >= answer_by:
                raise domain.PaystackCallInProgress(
                    "another call is asking Paystack for this and has not answered yet; retry",
                    metadata={"id": lease.record_id},
                )
