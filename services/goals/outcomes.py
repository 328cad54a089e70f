"""What payments reports, applied to goals: the outcome stream.

Every goals process follows PaymentsInternalService.WatchOutcomes with the
`follower` loop and the `payments_cursor` table; payments never calls goals.
Each outcome is applied under the row locks of what it changes (goal first,
then contribution, as everywhere), and is idempotent: a replay, or a second
replica applying it, finds it done and changes nothing. An outcome that
contradicts what goals recorded (another payment's id, another amount, a
contribution already failed) raises a domain error, which the follower logs
and steps over.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.common.ids import canonical_id
from services.goals import domain, lifecycle, store
from services.goals.domain import (
    ContributionPaid,
    ContributionPaymentFailed,
    ContributionRefunded,
    ContributionRefundFailed,
    ContributionStatus,
    GoalStatus,
    PaymentOutcome,
    PayoutOutcome,
    PayoutSettled,
    RefundState,
    ReleaseStep,
    UnknownOutcome,
)
from services.goals.follower import Stream
from services.goals.peers import PaymentsGateway
from services.goals.sagas import Sagas


def outcome_stream(payments: PaymentsGateway) -> Stream[PaymentOutcome]:
    return Stream("payment outcome stream", store.PaymentsCursor, payments.outcomes, apply_outcome)


async def apply_outcome(session: AsyncSession, outcome: PaymentOutcome, now: datetime) -> bool:
    """Apply one outcome; True when it gave the sagas work (a refund to start or to retry)."""
    if isinstance(outcome, ContributionPaid):
        return await _paid(session, outcome, now)
    if isinstance(outcome, ContributionPaymentFailed):
        await _payment_failed(session, outcome, now)
        return False
    if isinstance(outcome, ContributionRefunded):
        await _refunded(session, outcome, now)
        return False
    if isinstance(outcome, ContributionRefundFailed):
        return await _refund_failed(session, outcome, now)
    if isinstance(outcome, PayoutSettled):
        await _payout_settled(session, outcome, now)
        return False
    assert isinstance(outcome, UnknownOutcome)
    raise domain.OutcomeNotUnderstood(
        f"payments published an outcome of an unknown kind {outcome.kind!r}",
        metadata={"outcome_id": outcome.outcome_id},
    )


def _contribution_not_found(contribution_id: str) -> domain.ContributionNotFound:
    return domain.ContributionNotFound(
        f"contribution {contribution_id!r} does not exist", metadata={"contribution_id": contribution_id}
    )


async def _locked(session: AsyncSession, contribution_id: str) -> tuple[store.Goal, store.Contribution]:
    """The contribution and its goal, both locked (goal first, as everywhere) and read after the locks."""
    canonical = canonical_id(contribution_id)
    goal = await store.lock_goal_of_contribution(session, canonical) if canonical else None
    contribution = await store.get_contribution(session, canonical, lock=True) if goal and canonical else None
    if goal is None or contribution is None:
        raise _contribution_not_found(contribution_id)
    return goal, contribution


def _check_payment(contribution: store.Contribution, payment_id: str) -> None:
    if not payment_id or (contribution.payment_id is not None and contribution.payment_id != payment_id):
        raise domain.PaymentMismatch(
            "the payment is not this contribution's", metadata={"contribution_id": str(contribution.id)}
        )


async def _paid(session: AsyncSession, paid: ContributionPaid, now: datetime) -> bool:
    goal, contribution = await _locked(session, paid.contribution_id)
    _check_payment(contribution, paid.payment_id)
    if (paid.amount, paid.currency) != (contribution.amount, contribution.currency):
        raise domain.PaymentMismatch(
            f"the contribution is {contribution.amount} {contribution.currency}, the payment "
            f"{paid.amount} {paid.currency}",
            metadata={"contribution_id": str(contribution.id)},
        )
    step = domain.contribution_step(contribution.status, ContributionStatus.SUCCEEDED)
    if step == "refused":
        raise domain.ContributionAlreadyFailed("the contribution's payment was reported failed before")
    if step == "replay":
        return False
    contribution.status = ContributionStatus.SUCCEEDED
    contribution.payment_id = paid.payment_id
    contribution.paid_at = paid.paid_at
    store.touch(contribution, now)
    if domain.accepts_money(goal.status, goal.outflow):
        await store.count_contribution(session, goal, contribution)
        await session.flush()
        # Shown now if the balance stream brought its capture already, else with
        # that balance change: one progress change either way.
        await lifecycle.refresh_progress(session, goal, now)
        return False
    # The goal closed while the payer was paying: the money never counted and
    # goes back, whatever the goal's own outflow.
    contribution.refund_on_confirm = True
    await session.flush()
    await store.insert_refund(session, contribution, now, outflow=None)
    return True


async def _payment_failed(session: AsyncSession, failed: ContributionPaymentFailed, now: datetime) -> None:
    canonical = canonical_id(failed.contribution_id)
    contribution = await store.get_contribution(session, canonical, lock=True) if canonical else None
    if contribution is None:
        raise _contribution_not_found(failed.contribution_id)
    _check_payment(contribution, failed.payment_id)
    step = domain.contribution_step(contribution.status, ContributionStatus.FAILED)
    if step == "refused":
        raise domain.ContributionAlreadySucceeded("the contribution's payment was confirmed before")
    if step == "move":
        contribution.status = ContributionStatus.FAILED
        contribution.payment_id = failed.payment_id
        contribution.failure_reason = failed.reason[: domain.MAX_FAILURE_REASON]
        store.touch(contribution, now)


async def _refunded(session: AsyncSession, refunded: ContributionRefunded, now: datetime) -> None:
    goal, contribution = await _locked(session, refunded.contribution_id)
    if contribution.payment_id is not None:
        _check_payment(contribution, refunded.payment_id)
    step = domain.contribution_step(contribution.status, ContributionStatus.REFUNDED)
    if step == "replay":
        return
    if step == "refused":
        raise domain.ContributionNotSucceeded("the contribution never succeeded, so nothing was refunded")
    if not contribution.refund_on_confirm:
        # It counted (a succeeded contribution confirmed while the goal took money).
        await store.uncount_contribution(session, goal, contribution)
    contribution.status = ContributionStatus.REFUNDED
    store.touch(contribution, now)
    refund = await store.get_refund(session, contribution.id, lock=True)
    if refund is not None:
        refund.state = RefundState.DONE
        refund.last_error = ""
        store.touch(refund, now)
    await session.flush()
    await lifecycle.refresh_progress(session, goal, now)
    await lifecycle.finish_refund_if_done(session, goal, now)


async def _refund_failed(session: AsyncSession, failed: ContributionRefundFailed, now: datetime) -> bool:
    """Paystack failed the refund: the saga asks again at once under the next attempt's id.
    Only the current attempt's failure moves it (a replay, or a failure of an attempt already
    superseded, finds nothing to do)."""
    _, contribution = await _locked(session, failed.contribution_id)
    _check_payment(contribution, failed.payment_id)
    refund = await store.get_refund(session, contribution.id, lock=True)
    if refund is None or refund.state == RefundState.DONE:
        return False
    if failed.refund_id != domain.refund_id(str(contribution.id), refund.attempt):
        return False
    refund.attempt += 1
    refund.state = RefundState.PENDING
    refund.failures = 0
    refund.last_error = f"refund attempt {refund.attempt - 1} failed at Paystack: {failed.reason}"[:500]
    refund.next_attempt_at = now
    store.touch(refund, now)
    return True


async def _payout_settled(session: AsyncSession, settled: PayoutSettled, now: datetime) -> None:
    outcome = settled.outcome
    if outcome is None:
        raise domain.OutcomeNotUnderstood(
            "a payout outcome that is not an ending", metadata={"payout_id": settled.payout_id}
        )
    goal_id = canonical_id(settled.goal_id)
    mismatch = domain.PayoutMismatch(
        "the payout is not this goal's current payout", metadata={"goal_id": settled.goal_id}
    )
    goal = await store.get_goal(session, goal_id, lock=True) if goal_id else None
    if goal is None:
        raise domain.GoalNotFound(f"goal {settled.goal_id!r} does not exist", metadata={"goal_id": settled.goal_id})
    if goal.status not in (GoalStatus.RELEASED, GoalStatus.WITHDRAWN):
        raise domain.GoalNotReleased("the goal has not been released", metadata={"status": goal.status})
    release = await store.get_release(session, goal.id, lock=True)
    payout_uuid = canonical_id(settled.payout_id)
    payout = await store.get_payout(session, uuid.UUID(payout_uuid), lock=True) if payout_uuid else None
    if release is None or payout is None or payout.goal_id != goal.id:
        raise mismatch
    if payout.outcome == outcome:
        return  # a replay
    if payout.attempt != release.payout_attempt:
        raise mismatch
    payout.outcome = outcome
    payout.reason = settled.reason[: domain.MAX_FAILURE_REASON]
    store.touch(payout, now)
    store.touch(release, now)
    if outcome is PayoutOutcome.SUCCEEDED:
        release.step = ReleaseStep.DONE
        release.last_error = ""
    else:
        # The money is (again) in the owner's USER account: pay it out later
        # under a new payout id.
        release.step = ReleaseStep.PAYOUT
        release.payout_attempt += 1
        release.failures = 0
        release.last_error = f"payout {payout.attempt} {outcome.value.lower()}: {settled.reason}"[:500]
        release.next_attempt_at = Sagas.payout_retry_at(now, payout.attempt)
    await lifecycle.payout_settled(session, goal, paid=outcome is PayoutOutcome.SUCCEEDED, now=now)
