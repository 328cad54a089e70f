"""The goal state machine: every change of a goal's status happens here.

Each function runs inside the caller's transaction with the goal row already
locked (`store.get_goal(..., lock=True)`, which reads it fresh), checks the
state it needs and refuses or does nothing otherwise, and records every change
of progress through `store.progress_changed`. The moves themselves are the
table `domain.GOAL_MOVES`; `move` refuses any other. Where the money goes is
decided once (`domain.Outflow`): an approved proof claims RELEASE, expiry,
cancellation and the third rejection claim REFUND, and a goal that has one can
never take the other (`claim_outflow`, backed by the database). Starting a saga
here only writes its rows; the money moves later, in `sagas`, under ids derived
from those rows. The raised amount and contributor count change in
`refresh_progress`: one change per contribution, once both its signals (the
ledger's balance, payments' confirmation) are in.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.goals import domain, store
from services.goals.domain import GoalStatus, Outflow, ProofStatus, RefundCause, ReleaseStep

log = logging.getLogger("gofund.goals.lifecycle")


@dataclass(frozen=True)
class Rules:
    """The configurable rules (services.common.config), in the units the domain uses."""

    platform_fee_bps: int = 500
    voting_window: timedelta = timedelta(days=7)
    approval_threshold_bps: int = 5000
    quorum_bps: int = 2000


async def move(session: AsyncSession, goal: store.Goal, target: GoalStatus, now: datetime) -> None:
    """The one place a goal's status changes: only along `domain.GOAL_MOVES`."""
    current = goal.status
    if not domain.can_move(current, target):
        raise domain.IllegalGoalMove(
            f"a {current.lower()} goal cannot become {target.lower()}",
            metadata={"goal_id": str(goal.id), "status": current.value, "target": target.value},
        )
    goal.status = target
    await store.progress_changed(session, goal, now)


async def claim_outflow(session: AsyncSession, goal: store.Goal, outflow: Outflow, now: datetime) -> None:
    """Decide where the goal's money goes; refused if that was decided before.

    The raised amount and contributor count are fixed here at what counts: the
    succeeded contributions, including any whose balance change the stream had
    not delivered yet (the ledger holds their money: payments posts a capture
    before it confirms it). A capture whose confirmation has not arrived yet
    may already be in the GOAL balance; it never counts and is refunded when it
    is confirmed, so it is not shown as raised either.
    """
    if goal.outflow is not None:
        raise domain.IllegalGoalMove(
            f"the goal's money already goes to a {goal.outflow.lower()}",
            metadata={"goal_id": str(goal.id), "outflow": goal.outflow, "target": outflow.value},
        )
    goal.outflow = outflow
    counted, contributors = await store.counted_progress(session, goal.id)
    if (goal.counted_amount, goal.counted_contributors) != (counted, contributors):
        # The counts kept as contributions changed disagree with the contributions: a bug.
        # Where money goes is decided on the contributions (here and in `tally`), never on
        # the counts; they are set right and the drift is logged.
        log.error(
            "the goal's kept counts drifted from its contributions",
            extra={"goal_id": str(goal.id), "kept": [goal.counted_amount, goal.counted_contributors],
                   "counted": [counted, contributors]},
        )  # fmt: skip
        goal.counted_amount, goal.counted_contributors = counted, contributors
    if (goal.raised_amount, goal.contributor_count) != (counted, contributors):
        goal.raised_amount, goal.contributor_count = counted, contributors
        await store.progress_changed(session, goal, now)


async def apply_balance(session: AsyncSession, goal: store.Goal, balance: int, seq: int, now: datetime) -> None:
    """Apply the GOAL account's balance as of ledger `seq` (from the stream or a direct read).

    The balance is remembered (`ledger_balance`) and the progress refreshed
    from it (`refresh_progress`). A change at or below the last applied seq is
    stale and ignored, so replays and several appliers agree.
    """
    if seq <= goal.ledger_seq:
        return
    goal.ledger_seq = seq
    goal.ledger_balance = balance
    await refresh_progress(session, goal, now)


# Where `progress_once` keeps the goals whose progress it refreshes at the end.
_PROGRESS_LATER = "gofund.goals.progress_later"


@contextlib.asynccontextmanager
async def progress_once(session: AsyncSession, clock: Callable[[], datetime]) -> AsyncIterator[None]:
    """Within it, `refresh_progress` only notes the goal, and each goal noted is refreshed
    once when it ends without an error: for a batch of stream messages applied in one
    transaction, one progress change (one seq, one NOTIFY, one count of the contributions)
    per goal instead of one per message. The progress is a function of what is stored
    (see `refresh_progress`), so refreshing once at the end shows what refreshing after
    each message would have ended with; its only move, OPEN to FUNDED, changes nothing
    a message applied after it reads (a FUNDED goal accepts money as an OPEN one does)."""
    later: dict[uuid.UUID, store.Goal] = {}
    session.info[_PROGRESS_LATER] = later
    try:
        yield
    finally:
        del session.info[_PROGRESS_LATER]
    for goal in later.values():
        await refresh_progress(session, goal, clock())


async def refresh_progress(session: AsyncSession, goal: store.Goal, now: datetime) -> None:
    """Bring the goal's progress up to date with its two signals: one change (one `seq`) at most.

    Each capture reaches goals twice, in no fixed order: its GOAL balance
    change through the ledger's stream (`apply_balance`) and payments'
    confirmation of the contribution (its `contribution_paid` outcome); goals may
    restart between the two. Both are stored as they arrive (`ledger_balance`
    and the contribution's status), and each calls this under the goal's row
    lock, so the progress shown is a function of what is stored, whatever the
    order, and a replay of either signal changes nothing.

    Design decision: the progress shows a contribution once both of its
    signals are in, as one change carrying its raised amount, the contributor
    count and, if it reaches the target, FUNDED. Concretely, while the goal
    takes money, the raised amount and contributor count are those of the
    succeeded contributions, taken when the balance the ledger has been seen
    to hold covers them (`ledger_balance >= counted`): a confirmation that
    overtook its balance change waits for it, a balance change waits for its
    confirmation (it changes nothing shown). The goal is FUNDED when that
    raised amount reaches the target, in the same change. A capture nobody
    confirms (payments' event parked) therefore holds up nobody else's, and
    never shows before it is known to be a contribution to this goal.

    The one exception is the deadline, where the ledger alone decides, as it
    did before: an OPEN goal at or past its deadline whose GOAL balance holds
    its target is FUNDED with that balance as its raised amount even if some
    confirmations are still in flight (a lagging payments must not expire a
    goal the money reached in time); each late confirmation then only adds
    its contributor, a change of its own. Neither rule touches where money
    goes: the amount released and the vote weights are always the succeeded
    contributions (`claim_outflow`, `tally`).

    The raised amount follows the succeeded contributions down as well as up:
    a payment refunded on its own while the goal still takes money (an
    operator's refund through payments) leaves the contribution REFUNDED and
    the GOAL balance lower, and the progress shows both (reconciliation
    compares raised with the GOAL balance until the outflow is decided). Only
    a goal funded by the deadline rule keeps its balance as raised (`max`).
    """
    later = session.info.get(_PROGRESS_LATER)
    if later is not None:
        later[goal.id] = goal
        return
    status = goal.status
    if not domain.accepts_money(status, goal.outflow):
        return  # closed: the progress keeps what claim_outflow fixed
    raised, contributors = goal.raised_amount, goal.contributor_count
    counted, counted_contributors = goal.counted_amount, goal.counted_contributors
    if goal.ledger_balance >= counted:
        raised, contributors = counted, counted_contributors
    if status is GoalStatus.FUNDED and goal.funded_at is not None and goal.funded_at >= goal.deadline:
        # Funded by the deadline rule (below): the ledger's balance stays the raised
        # amount until the late confirmations catch up with it.
        raised = max(raised, goal.ledger_balance)
    funded = status is GoalStatus.OPEN and raised >= goal.target_amount
    if status is GoalStatus.OPEN and not funded and now >= goal.deadline and goal.ledger_balance >= goal.target_amount:
        raised, funded = goal.ledger_balance, True
    if (raised, contributors) == (goal.raised_amount, goal.contributor_count) and not funded:
        return
    goal.raised_amount, goal.contributor_count = raised, contributors
    if funded:
        goal.funded_at = now
        await move(session, goal, GoalStatus.FUNDED, now)  # the one progress change, status included
    else:
        await store.progress_changed(session, goal, now)


async def expire(session: AsyncSession, goal: store.Goal, now: datetime) -> bool:
    """An OPEN goal past its deadline below its target starts refunding; True if it did."""
    if (
        goal.status != GoalStatus.OPEN
        or goal.outflow is not None
        or goal.deadline > now
        or goal.raised_amount >= goal.target_amount
    ):
        return False
    await start_refund(session, goal, RefundCause.EXPIRED, now)
    return True


async def cancel(session: AsyncSession, goal: store.Goal, reason: str, now: datetime) -> None:
    """The owner cancels: pending proofs are rejected and every contribution refunded.
    A repeated cancel leaves the goal as it is (with the first reason)."""
    if goal.refund_cause == RefundCause.CANCELLED:
        return
    if not domain.cancellable(goal.status, goal.outflow):
        raise domain.GoalNotCancellable("the goal can no longer be cancelled", metadata={"status": goal.status})
    for proof in await store.proofs_of(session, goal.id):
        if proof.status == ProofStatus.PENDING:
            proof.status = ProofStatus.REJECTED
            proof.decided_at = now
            store.touch(proof, now)
    goal.cancel_reason = reason
    await start_refund(session, goal, RefundCause.CANCELLED, now)


async def start_refund(session: AsyncSession, goal: store.Goal, cause: RefundCause, now: datetime) -> None:
    """Close the goal and queue a refund for every succeeded contribution.

    Expiry and cancellation pass through their own status first (watchers see
    it); with nothing to refund the goal is REFUNDED at once.
    """
    await claim_outflow(session, goal, Outflow.REFUND, now)
    if cause is RefundCause.EXPIRED:
        await move(session, goal, GoalStatus.EXPIRED, now)
    elif cause is RefundCause.CANCELLED:
        await move(session, goal, GoalStatus.CANCELLED, now)
    goal.refund_cause = cause
    await move(session, goal, GoalStatus.REFUNDING, now)  # flushes the outflow the refund rows reference
    contributions = await store.succeeded_contributions(session, goal.id)
    for contribution in contributions:
        await store.insert_refund(session, contribution, now, outflow=Outflow.REFUND)
    if not contributions:
        await move(session, goal, GoalStatus.REFUNDED, now)


async def finish_refund_if_done(session: AsyncSession, goal: store.Goal, now: datetime) -> None:
    if goal.status == GoalStatus.REFUNDING and not await store.any_succeeded(session, goal.id):
        await move(session, goal, GoalStatus.REFUNDED, now)


async def release_posted(session: AsyncSession, goal: store.Goal, *, payout_due: bool, now: datetime) -> None:
    """The release posting is in the ledger: RELEASED, and WITHDRAWN at once when a 100% fee left nothing to pay."""
    if goal.outflow is not Outflow.RELEASE:
        raise domain.IllegalGoalMove(
            "only a goal whose outflow is a release is released", metadata={"goal_id": str(goal.id)}
        )
    await move(session, goal, GoalStatus.RELEASED, now)
    if not payout_due:
        await move(session, goal, GoalStatus.WITHDRAWN, now)


async def payout_settled(session: AsyncSession, goal: store.Goal, *, paid: bool, now: datetime) -> None:
    """A payout's result: WITHDRAWN when paid, RELEASED again when it failed or was reversed."""
    target = GoalStatus.WITHDRAWN if paid else GoalStatus.RELEASED
    if goal.status != target:
        await move(session, goal, target, now)


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
    """Record the vote's outcome: approval starts the release saga; a third rejection the refund saga.

    Only a pending proof of a FUNDED goal whose outflow is undecided is decided;
    the callers check the proof, and a goal that closed meanwhile (cancel rejects
    its pending proof) is refused here whatever they read.
    """
    if proof.status != ProofStatus.PENDING:
        raise domain.VotingClosed("voting on this proof has closed", metadata={"status": proof.status})
    if goal.status != GoalStatus.FUNDED or goal.outflow is not None:
        raise domain.IllegalGoalMove(
            "a proof is decided only on a funded goal whose money has not gone anywhere",
            metadata={"goal_id": str(goal.id), "status": goal.status},
        )
    proof.status = decision
    proof.decided_at = now
    store.touch(proof, now)
    await session.flush()
    if decision is ProofStatus.APPROVED:
        amount = await store.counted_total(session, goal.id)
        if amount <= 0:
            log.error("approved proof on a goal with nothing to release", extra={"goal_id": str(goal.id)})
            return
        await claim_outflow(session, goal, Outflow.RELEASE, now)
        store.touch(goal, now)
        await session.flush()  # the release row references the goal's outflow
        session.add(
            store.Release(
                goal_id=goal.id, proof_id=proof.id, amount=amount,
                fee=domain.platform_fee(amount, rules.platform_fee_bps), step=ReleaseStep.POST,
                payout_attempt=1, failures=0, next_attempt_at=now, last_error="", created_at=now, updated_at=now,
            )
        )  # fmt: skip
        await session.flush()
        return
    rejected = (
        await session.execute(
            select(func.count()).where(store.Proof.goal_id == goal.id, store.Proof.status == ProofStatus.REJECTED)
        )
    ).scalar_one()
    if rejected >= domain.MAX_PROOFS:
        await start_refund(session, goal, RefundCause.REJECTED, now)
