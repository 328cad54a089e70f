"""State changes shared by the RPCs, the balance stream and the scheduler.

Each runs inside the caller's transaction with the goal row already locked
(`SELECT ... FOR UPDATE`), and records every change of progress through
`store.progress_changed`. Starting a saga here only writes its state rows;
the money moves later, in `sagas`, under ids derived from those rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.goals import domain, store
from services.goals.domain import GoalStatus, ProofStatus, RefundCause, ReleaseStep

log = logging.getLogger("gofund.goals.lifecycle")


@dataclass(frozen=True)
class Rules:
    """The configurable rules (services.common.config), in the units the domain uses."""

    platform_fee_bps: int = 500
    voting_window: timedelta = timedelta(days=7)
    approval_threshold_bps: int = 5000
    quorum_bps: int = 2000


async def apply_balance(session: AsyncSession, goal: store.Goal, balance: int, seq: int, now: datetime) -> None:
    """Apply the GOAL account's balance as of ledger `seq` (from the stream or a direct read).

    While the goal takes money its raised amount follows the balance, and it is
    FUNDED, once, when the balance reaches the target. A change at or below the
    last applied seq is stale and ignored, so replays and several appliers agree.
    """
    if seq <= goal.ledger_seq:
        return
    goal.ledger_seq = seq
    status = GoalStatus(goal.status)
    releasing = status is GoalStatus.FUNDED and await store.is_releasing(session, goal.id)
    if not domain.accepts_money(status, releasing):
        return  # closed: raised_amount keeps its last value
    changed = goal.raised_amount != balance
    goal.raised_amount = balance
    if status is GoalStatus.OPEN and balance >= goal.target_amount:
        goal.status = GoalStatus.FUNDED.value
        goal.funded_at = now
        changed = True
    if changed:
        await store.progress_changed(session, goal, now)


async def recount_contributors(session: AsyncSession, goal: store.Goal, now: datetime) -> None:
    count = await store.contributor_count(session, goal.id)
    if count != goal.contributor_count:
        goal.contributor_count = count
        await store.progress_changed(session, goal, now)


async def start_refund(session: AsyncSession, goal: store.Goal, cause: RefundCause, now: datetime) -> None:
    """Close the goal and queue a refund for every succeeded contribution.

    Expiry and cancellation pass through their own status first (watchers see
    it); with nothing to refund the goal is REFUNDED at once.
    """
    if cause is RefundCause.EXPIRED:
        goal.status = GoalStatus.EXPIRED.value
        await store.progress_changed(session, goal, now)
    elif cause is RefundCause.CANCELLED:
        goal.status = GoalStatus.CANCELLED.value
        await store.progress_changed(session, goal, now)
    goal.refund_cause = cause.value
    goal.status = GoalStatus.REFUNDING.value
    contributions = await store.succeeded_contributions(session, goal.id)
    for contribution in contributions:
        await store.insert_refund(session, contribution, now)
    await store.progress_changed(session, goal, now)
    if not contributions:
        goal.status = GoalStatus.REFUNDED.value
        await store.progress_changed(session, goal, now)


async def finish_refund_if_done(session: AsyncSession, goal: store.Goal, now: datetime) -> None:
    if goal.status == GoalStatus.REFUNDING.value and not await store.any_succeeded(session, goal.id):
        goal.status = GoalStatus.REFUNDED.value
        await store.progress_changed(session, goal, now)


async def tally(session: AsyncSession, goal: store.Goal, proof: store.Proof) -> domain.Tally:
    return domain.Tally(
        approve=proof.approve_weight,
        reject=proof.reject_weight,
        uncast=await store.uncast_weight(session, goal.id, goal.owner_id, proof.id),
        raised=await store.counted_total(session, goal.id),
    )


async def settle_proof(
    session: AsyncSession, goal: store.Goal, proof: store.Proof, decision: ProofStatus, *, rules: Rules, now: datetime
) -> None:
    """Record the vote's outcome: approval starts the release saga; a third rejection the refund saga."""
    proof.status = decision.value
    proof.decided_at = now
    store.touch(proof, now)
    await session.flush()
    if decision is ProofStatus.APPROVED:
        amount = await store.counted_total(session, goal.id)
        if amount <= 0:
            log.error("approved proof on a goal with nothing to release", extra={"goal_id": str(goal.id)})
            return
        session.add(
            store.Release(
                goal_id=goal.id, proof_id=proof.id, amount=amount,
                fee=domain.platform_fee(amount, rules.platform_fee_bps), step=ReleaseStep.POST.value,
                payout_attempt=1, failures=0, next_attempt_at=now, last_error="", created_at=now, updated_at=now,
            )
        )  # fmt: skip
        await session.flush()
        return
    rejected = (
        await session.execute(
            select(func.count()).where(store.Proof.goal_id == goal.id, store.Proof.status == ProofStatus.REJECTED.value)
        )
    ).scalar_one()
    if rejected >= domain.MAX_PROOFS and goal.status == GoalStatus.FUNDED.value:
        await start_refund(session, goal, RefundCause.REJECTED, now)
