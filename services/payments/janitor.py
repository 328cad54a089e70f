"""The janitor: closes, with no client call, what no event will.

Paystack can lose a webhook (and sends none for a declined card), a payer can
leave checkout, a refund's or a transfer's event can never come. Every
`janitor_interval_ms` each payments process looks for open records whose next
check is due and hands each to the processor as an outbox entry (so a check
that fails part-way, the ledger being down, say, is retried like any
event until it is done); the processor settles them as Paystack reports them,
with the same idempotent steps a webhook runs (`Webhooks.check_payment`,
`Webhooks.check_payout`):
- PENDING payments: the charge is verified. Paid: captured, and its outcome
  published (a goal that has closed meanwhile refunds it, once). Declined: FAILED.
  Still `abandoned` once the idempotency window (`abandon_after_ms`) is over:
  ABANDONED. The contribution follows.
- REFUND_PENDING payments: a refund not yet reserved or requested is carried
  on; a requested one is reviewed against Paystack's refunds of the charge.
- PENDING payouts: a transfer not yet requested is carried on; a requested
  one is checked with Verify Transfer.
A record's first check is `janitor_first_check_ms` after it was created, then
the waits double up to `janitor_max_backoff_ms`. Each check is claimed by a
compare-and-set of the record's `checkAt` (moving it to the next check), so
with several replicas each check is made once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from services.common import outage
from services.payments import domain
from services.payments.processor import raise_if_cancelling, report_recovered, report_transient, transient
from services.payments.store import now
from services.payments.use_cases import Payments

log = logging.getLogger("gofund.payments.janitor")

BATCH = 50


class Janitor:
    def __init__(
        self,
        payments: Payments,
        *,
        interval: timedelta,
        first_check: timedelta,
        max_backoff: timedelta,
        abandon_after: timedelta,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self._payments = payments
        self._records = payments.records
        self._interval_s = interval.total_seconds()
        self._first_check = first_check
        self._max_backoff = max_backoff
        self._abandon_after = abandon_after
        self._clock = clock

    async def run(self) -> None:
        """Sweep every interval until cancelled (the server cancels it on shutdown)."""
        try:
            await self._records.backfill_checks(self._clock())
        except Exception:
            raise_if_cancelling()  # a store that is away: the sweeps below cope
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                raise_if_cancelling()
                if transient(exc):
                    report_transient(self._payments, exc)
                else:
                    log.exception("janitor sweep failed; next one soon")
            else:
                report_recovered(self._payments)
            await asyncio.sleep(self._interval_s)

    def next_check(self, at: datetime, checks: int) -> datetime:
        """After `checks` checks: the first wait, doubled each time, at most the cap."""
        # Exact, without jitter: the time is stored on the record and shown to operators.
        first_s = max(self._first_check, timedelta(seconds=1)).total_seconds()
        return at + timedelta(
            seconds=outage.backoff_s(checks + 1, first_s, self._max_backoff.total_seconds(), jitter=False)
        )

    async def sweep(self) -> int:
        """One look at everything due: each check claimed is handed to the processor; how many."""
        at = self._clock()
        abandon_before = (at - self._abandon_after).isoformat()
        made = 0
        for kind, event, field in (
            ("payments", domain.CHECK_PAYMENT, "payment_id"),
            ("payouts", domain.CHECK_PAYOUT, "payout_id"),
        ):
            for due in await self._records.due_checks(kind, at, BATCH):
                if not await self._records.claim_check(due, self.next_check(at, due.checks)):
                    continue  # another replica took this round's check
                made += 1
                data = {field: due.record_id}
                if kind == "payments":
                    data["abandon_before"] = abandon_before
                await self._records.arm_event(f"{event}:{due.record_id}", event, data)
        if made:
            self._payments.wake_processor(None)
        return made
