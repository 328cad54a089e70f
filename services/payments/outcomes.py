"""What became of payments, refunds and payouts, published for the goals service.

Payments never calls goals. The step that settles money (a capture posted, a
refund processed or failed, a payout settled) appends an outcome to payments'
own store after its ledger posting; goals follows them through
PaymentsInternalService.WatchOutcomes from the seq it stored, the way it
follows the ledger's balances. Each outcome has a stable id, so a step repeated
after a crash (the webhook processor, the janitor) publishes nothing twice, and
a gap-free seq, so a follower that resumes misses nothing.

A watcher is woken at once by an outcome published in this process, and polls
for those other payments replicas publish (the embedded Mongo-wire server's
change streams are not relied on; a short poll is the same on MongoDB).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

from gofund.payments.v1 import payments_pb2

from services.common.proto import timestamp
from services.payments.domain import PaymentStatus, PayoutStatus
from services.payments.store import Payment, PaymentsStore, Payout

# Outcomes read per query while catching up.
BATCH = 500
# How long an idle watcher waits before looking for another replica's outcomes.
POLL_S = 0.25
# How long a watcher waits for a seq it cannot see yet while a later one is
# visible: an append in flight (visibility follows commit order, so this is a
# moment), never skipped.
GAP_WAIT_S = 0.02

# The contract's value of each status (also used by the servicer: one mapping).
PAYMENT_STATUS = {s: payments_pb2.PaymentStatus.Value(f"PAYMENT_STATUS_{s}") for s in PaymentStatus}
PAYOUT_STATUS = {s: payments_pb2.PayoutStatus.Value(f"PAYOUT_STATUS_{s}") for s in PayoutStatus}


class Outcomes:
    def __init__(self, store: PaymentsStore) -> None:
        self._store = store
        self._published = asyncio.Event()

    # -- publishing (each once, by its stable id) -----------------------------------------------
    async def contribution_paid(self, payment: Payment) -> None:
        paid = payments_pb2.ContributionPaid(
            contribution_id=payment.contribution_id,
            payment_id=payment.payment_id,
            goal_id=payment.goal_id,
            amount=payment.amount,
            currency=payment.currency,
        )
        if payment.paid_at is not None:
            paid.paid_at.CopyFrom(timestamp(payment.paid_at))
        await self._publish(f"charge:{payment.payment_id}:paid", payments_pb2.PaymentOutcome(contribution_paid=paid))

    async def contribution_payment_failed(self, payment: Payment, reason: str) -> None:
        failed = payments_pb2.ContributionPaymentFailed(
            contribution_id=payment.contribution_id,
            payment_id=payment.payment_id,
            goal_id=payment.goal_id,
            status=PAYMENT_STATUS[payment.status],
            reason=reason[:500],
        )
        outcome = payments_pb2.PaymentOutcome(contribution_payment_failed=failed)
        await self._publish(f"charge:{payment.payment_id}:failed", outcome)

    async def contribution_refunded(self, payment: Payment, refund_id: str) -> None:
        refunded = payments_pb2.ContributionRefunded(
            contribution_id=payment.contribution_id,
            payment_id=payment.payment_id,
            goal_id=payment.goal_id,
            refund_id=refund_id,
        )
        outcome = payments_pb2.PaymentOutcome(contribution_refunded=refunded)
        await self._publish(f"refund:{refund_id}:processed", outcome)

    async def contribution_refund_failed(self, payment: Payment, refund_id: str, reason: str) -> None:
        failed = payments_pb2.ContributionRefundFailed(
            contribution_id=payment.contribution_id,
            payment_id=payment.payment_id,
            goal_id=payment.goal_id,
            refund_id=refund_id,
            reason=reason[:500],
        )
        outcome = payments_pb2.PaymentOutcome(contribution_refund_failed=failed)
        await self._publish(f"refund:{refund_id}:failed", outcome)

    async def payout_settled(self, payout: Payout) -> None:
        settled = payments_pb2.PayoutSettled(
            payout_id=payout.payout_id,
            goal_id=payout.goal_id,
            status=PAYOUT_STATUS[payout.status],
            reason=payout.failure_reason[:500],
        )
        outcome = payments_pb2.PaymentOutcome(payout_settled=settled)
        await self._publish(f"payout:{payout.payout_id}:{payout.status.lower()}", outcome)

    async def _publish(self, outcome_id: str, outcome: payments_pb2.PaymentOutcome) -> None:
        kind = outcome.WhichOneof("outcome") or ""
        outcome.outcome_id = outcome_id
        await self._store.append_outcome(outcome_id, kind, outcome.SerializeToString(deterministic=True))
        published, self._published = self._published, asyncio.Event()
        published.set()

    # -- following ----------------------------------------------------------------------------------
    async def after(self, after_seq: int) -> AsyncIterator[payments_pb2.PaymentOutcome]:
        """Every outcome after `after_seq`, in order, then each new one; runs until cancelled."""
        while True:
            published = self._published  # taken before reading, so nothing published after is missed
            batch = await self._store.outcomes_after(after_seq, BATCH)
            for seq, published_at, payload in batch:
                if seq != after_seq + 1:
                    break  # the next one is not visible yet: wait for it, never skip it
                yield _outcome(seq, published_at, payload)
                after_seq = seq
            else:
                if len(batch) == BATCH:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(published.wait(), POLL_S)
                continue
            await asyncio.sleep(GAP_WAIT_S)


def _outcome(seq: int, published_at: datetime, payload: bytes) -> payments_pb2.PaymentOutcome:
    outcome = payments_pb2.PaymentOutcome.FromString(payload)
    outcome.seq = seq
    outcome.published_at.CopyFrom(timestamp(published_at))
    return outcome
