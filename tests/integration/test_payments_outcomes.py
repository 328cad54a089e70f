"""Payments' outbox of outcomes on the real Mongo-wire server: what WatchOutcomes streams.

Many steps publishing at the same instant (different payments, refunds and payouts:
different actors, not one request repeated) get seqs 1..n with no gap and no
duplicate; a step repeated after a crash publishes nothing new; a follower that
resumes after any seq sees exactly the rest, in order, and a live follower gets
each new outcome as it is published (whether woken or by its poll is not what is checked).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import grpc
import pytest
from gofund.payments.v1 import payments_pb2, payments_service_pb2

from services.payments.domain import PaymentStatus, PayoutStatus
from services.payments.outcomes import Outcomes
from services.payments.store import Payment, PaymentsStore, Payout
from tests.helpers import reason, rejected
from tests.integration.fixtures.goals import Platform
from tests.integration.fixtures.payments import paid_contribution

pytestmark = pytest.mark.asyncio


NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def outcomes(payments_store: PaymentsStore) -> Outcomes:
    return Outcomes(payments_store)


def a_payment(status: PaymentStatus = PaymentStatus.SUCCESS) -> Payment:
    payment_id = str(uuid.uuid4())
    return Payment(
        payment_id=payment_id, reference=f"ref-{payment_id}", user_id=str(uuid.uuid4()),
        goal_id=str(uuid.uuid4()), contribution_id=str(uuid.uuid4()), amount=2500, currency="NGN",
        status=status, fingerprint="", authorization_url="", access_code="", reference_attempt=0,
        flagged=False, flag_reason="", paid_at=NOW, refund=None, failed_refund_ids=(),
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def a_payout(status: PayoutStatus) -> Payout:
    payout_id = str(uuid.uuid4())
    return Payout(
        payout_id=payout_id, goal_id=str(uuid.uuid4()), user_id=str(uuid.uuid4()), recipient_id=str(uuid.uuid4()),
        recipient_code="RCP_1", amount=9500, currency="NGN", reason="release", fingerprint="", status=status,
        reference=f"payout-{payout_id}", transfer_code="TRF_1", requested=True,
        failure_reason="" if status is PayoutStatus.SUCCESS else "account closed",
        created_at=NOW, updated_at=NOW, reserved=True,
    )  # fmt: skip


async def read(outcomes: Outcomes, after_seq: int, count: int) -> list[payments_pb2.PaymentOutcome]:
    stream = outcomes.after(after_seq)
    try:
        return [await asyncio.wait_for(anext(stream), 10) for _ in range(count)]
    finally:
        await stream.aclose()


async def test_steps_publishing_at_once_get_every_seq_once_in_order(outcomes: Outcomes) -> None:
    payments = [a_payment() for _ in range(12)]
    declined = [replace(p, status=PaymentStatus.FAILED) for p in payments[6:9]]
    steps = [
        *(outcomes.contribution_paid(p) for p in payments[:6]),
        *(outcomes.contribution_payment_failed(p, "declined") for p in declined),
        *(outcomes.contribution_refunded(p, f"refund-{p.payment_id}") for p in payments[9:]),
        outcomes.payout_settled(a_payout(PayoutStatus.SUCCESS)),
        outcomes.payout_settled(a_payout(PayoutStatus.REVERSED)),
    ]  # fmt: skip
    await asyncio.gather(*steps)

    seen = await read(outcomes, 0, len(steps))

    assert [o.seq for o in seen] == list(range(1, len(steps) + 1))
    assert len({o.outcome_id for o in seen}) == len(steps)
    kinds = [o.WhichOneof("outcome") for o in seen]
    assert kinds.count("contribution_paid") == 6
    assert kinds.count("contribution_payment_failed") == 3
    assert kinds.count("contribution_refunded") == 3
    assert kinds.count("payout_settled") == 2


async def test_two_replicas_publishing_at_once_get_every_seq_once(outcomes: Outcomes) -> None:
    # Each process serializes its own appends; two processes' appends conflict in the store.
    replica = Outcomes(PaymentsStore(outcomes._store.database))
    payments = [a_payment() for _ in range(10)]
    await asyncio.gather(
        *(outcomes.contribution_paid(p) for p in payments[:5]),
        *(replica.contribution_paid(p) for p in payments[5:]),
        *(replica.contribution_paid(p) for p in payments[:5]),  # the same steps, repeated over there
    )
    seen = await read(outcomes, 0, len(payments))
    assert [o.seq for o in seen] == list(range(1, len(payments) + 1))
    assert {o.contribution_paid.payment_id for o in seen} == {p.payment_id for p in payments}


async def test_a_repeated_step_publishes_nothing_new(outcomes: Outcomes) -> None:
    paid = a_payment()
    await asyncio.gather(*(outcomes.contribution_paid(paid) for _ in range(5)))
    await outcomes.contribution_paid(paid)  # the processor again, after a crash
    other = a_payment()
    await outcomes.contribution_paid(other)

    first, second = await read(outcomes, 0, 2)

    assert (first.seq, first.outcome_id) == (1, f"charge:{paid.payment_id}:paid")
    assert (second.seq, second.contribution_paid.payment_id) == (2, other.payment_id)
    assert first.contribution_paid.contribution_id == paid.contribution_id
    assert first.contribution_paid.amount == 2500
    assert first.contribution_paid.paid_at.ToDatetime(UTC) == NOW


async def test_a_follower_resuming_after_a_seq_gets_exactly_the_rest(outcomes: Outcomes) -> None:
    published = [a_payment() for _ in range(5)]
    for payment in published:
        await outcomes.contribution_paid(payment)

    rest = await read(outcomes, 3, 2)

    assert [o.seq for o in rest] == [4, 5]
    assert [o.contribution_paid.payment_id for o in rest] == [p.payment_id for p in published[3:]]


async def test_a_live_follower_gets_each_new_outcome_including_a_refused_refund(outcomes: Outcomes) -> None:
    stream = outcomes.after(0)
    waiting = asyncio.ensure_future(anext(stream))
    payment = a_payment()
    try:
        await outcomes.contribution_refund_failed(payment, "refund-1", "bank rejected the refund")
        outcome = await asyncio.wait_for(waiting, 10)
    finally:
        await stream.aclose()

    assert outcome.seq == 1
    failed = outcome.contribution_refund_failed
    assert (failed.contribution_id, failed.refund_id, failed.reason) == (
        payment.contribution_id,
        "refund-1",
        "bank rejected the refund",
    )


async def test_a_payout_outcome_carries_how_it_settled(outcomes: Outcomes) -> None:
    failed = a_payout(PayoutStatus.FAILED)
    await outcomes.payout_settled(failed)

    (outcome,) = await read(outcomes, 0, 1)

    assert outcome.outcome_id == f"payout:{failed.payout_id}:failed"
    assert outcome.payout_settled.status == payments_pb2.PAYOUT_STATUS_FAILED
    assert outcome.payout_settled.reason == "account closed"
    assert outcome.payout_settled.goal_id == failed.goal_id


async def test_a_paid_webhook_reaches_watch_outcomes_once_with_the_contribution(paying_platform: Platform) -> None:
    platform = paying_platform
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner)
    paid = await paid_contribution(platform, payer, goal, 3000)

    seen: list[payments_pb2.PaymentOutcome] = []
    stream = platform.payments_internal.WatchOutcomes(
        payments_service_pb2.WatchOutcomesRequest(after_seq=0), timeout=15
    )
    async for message in stream:
        seen.append(message.outcome)
        if message.outcome.contribution_paid.contribution_id == paid.id:
            break
    stream.cancel()

    ours = [o for o in seen if o.contribution_paid.contribution_id == paid.id]
    assert len(ours) == 1
    assert (ours[0].contribution_paid.goal_id, ours[0].contribution_paid.amount) == (goal.id, 3000)
    assert [o.seq for o in seen] == list(range(1, len(seen) + 1))


async def test_watch_outcomes_refuses_a_negative_after_seq(paying_platform: Platform) -> None:
    stream = paying_platform.payments_internal.WatchOutcomes(
        payments_service_pb2.WatchOutcomesRequest(after_seq=-1), timeout=15
    )
    refused = await rejected(anext(aiter(stream)))
    assert (refused.code(), reason(refused, "payments.gofund")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_AFTER_SEQ",
    )
