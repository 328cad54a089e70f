"""The money-moving steps of the refund and release sagas.

Saga state lives in the goals database (`refunds`, `releases`, `payouts`); a
step is driven by whoever claims its row with `SELECT ... FOR UPDATE SKIP
LOCKED` (the scheduler of any goals replica), so two processes never drive the
same step at once, and a step that crashed half-way is simply driven again:
its ids are derived from the row (attempt numbers included), and the ledger
and payments are idempotent on them.

Refund of one contribution: RefundPayment(payment_id, refund_id(contribution,
attempt)). Payments answers REFUND_PENDING; its outcome stream (`outcomes`)
then says `contribution_refunded` (posted GOAL -> ESCROW), which ends it, or
`contribution_refund_failed`, which makes the next attempt, under a new refund
id, due at once. A requested refund is also looked at again on a slow
schedule (REFUND_CHECK_*): payments answers a replay with the payment as it
stands, SUCCESS if Paystack failed the refund. Design decision: the stream is
how goals hears; the slow look stays as the saga's own check that a refund it
asked for is settling, should an outcome ever be refused when applied
(logged as an ERROR by the follower).

Release of one goal: post "goal:<goal_id>:release" (GOAL -> REVENUE fee, GOAL
-> owner's USER account the rest), goal RELEASED; then CreatePayout(payout_id(
goal, attempt)), which waits while the owner has no payout recipient;
payments' `payout_settled` outcome ends it (WITHDRAWN) or, on FAILED/REVERSED,
schedules the next attempt with a new payout id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from services.common import outage
from services.common.db import Database
from services.common.errors import DomainError
from services.common.ledger_client import CREDIT, DEBIT, PLATFORM_ENTITY, Posting
from services.goals import domain, lifecycle, store
from services.goals.domain import (
    GoalStatus,
    LedgerUnavailable,
    Outflow,
    PaymentsUnavailable,
    RefundState,
    ReleaseStep,
)
from services.goals.peers import LedgerGateway, PaymentsGateway, Refused

log = logging.getLogger("gofund.goals.sagas")

Clock = Callable[[], datetime]

# A step that failed (dependency down, no payout recipient yet) is retried
# with exponential backoff between these bounds.
RETRY_BASE = timedelta(seconds=5)
RETRY_CAP = timedelta(minutes=10)
# A requested refund is looked at again on this schedule, in case the outcome
# stream's word that Paystack failed it was refused (see above).
REFUND_CHECK_BASE = timedelta(minutes=1)
REFUND_CHECK_CAP = timedelta(minutes=30)
# A failed or reversed payout is tried again (new id) after this, doubling.
PAYOUT_RETRY_BASE = timedelta(minutes=1)
PAYOUT_RETRY_CAP = timedelta(hours=6)

REFUND_IN_FLIGHT = ("REFUND_PENDING", "REFUNDED")


def _retry_delay(failures: int, *, base: timedelta, cap: timedelta) -> timedelta:
    """The wait after a step failed `failures` times in a row. Without jitter: the time is
    stored on the row and read by operators, and the scheduler takes every due row of a
    tick at once, so replicas do not stampede on it."""
    return timedelta(seconds=outage.backoff_s(failures, base.total_seconds(), cap.total_seconds(), jitter=False))


def _error_text(exc: Exception) -> str:
    return str(exc)[:500]


class Sagas:
    def __init__(self, database: Database, ledger: LedgerGateway, payments: PaymentsGateway, clock: Clock) -> None:
        self.database = database
        self.ledger = ledger
        self.payments = payments
        self.clock = clock
        self._ledger_outage = outage.tracker(ledger, "ledger")
        self._payments_outage = outage.tracker(payments, "payments")

    def _step_failed(self, exc: Exception, message: str, **extra: str) -> None:
        """A step that could not reach its dependency is the dependency's outage (logged
        once for all steps); a refusal is this step's own story."""
        if isinstance(exc, LedgerUnavailable):
            self._ledger_outage.failed(exc)
        elif isinstance(exc, PaymentsUnavailable):
            self._payments_outage.failed(exc)
        else:
            log.warning(message, extra={**extra, "error": _error_text(exc)})
            return
        log.debug(message, extra={**extra, "error": _error_text(exc)})

    # -- refunds --------------------------------------------------------------------
    async def drive_refund(self, contribution_id: uuid.UUID) -> None:
        now = self.clock()
        async with self.database.transaction() as session:
            refund = await store.claim_refund(session, contribution_id, now)
            if refund is None:
                return  # done, not due, or another process has it
            refund_id = domain.refund_id(str(contribution_id), refund.attempt)
            store.touch(refund, now)
            try:
                status = await self.payments.refund_payment(
                    refund.payment_id, refund_id, "the goal closed before the money could be used"
                )
            except (DomainError, Refused) as exc:
                # Unavailable, or refused (PAYMENT_NOT_REFUNDABLE while an earlier
                # refund is still settling): the same refund id is tried again later.
                refund.failures += 1
                refund.last_error = _error_text(exc)
                refund.next_attempt_at = now + _retry_delay(refund.failures, base=RETRY_BASE, cap=RETRY_CAP)
                self._step_failed(exc, "refund step failed", contribution_id=str(contribution_id))
                return
            self._payments_outage.recovered()
            if status in REFUND_IN_FLIGHT:
                checks = refund.failures + 1 if refund.state == RefundState.REQUESTED else 1
                refund.state = RefundState.REQUESTED
                refund.failures = checks
                refund.last_error = ""
                refund.next_attempt_at = now + _retry_delay(checks, base=REFUND_CHECK_BASE, cap=REFUND_CHECK_CAP)
            elif status == "SUCCESS":
                # Paystack failed the refund under this id (payments answers a
                # replay with the payment as it stands): the next attempt gets a new id.
                log.warning("refund failed at Paystack; retrying", extra={"contribution_id": str(contribution_id)})
                refund.attempt += 1
                refund.state = RefundState.PENDING
                refund.failures = 0
                refund.last_error = f"refund attempt {refund.attempt - 1} failed at Paystack"
                refund.next_attempt_at = now
            else:
                refund.failures += 1
                refund.last_error = f"payments answered the refund with status {status}"
                refund.next_attempt_at = now + _retry_delay(refund.failures, base=RETRY_BASE, cap=RETRY_CAP)
                log.error(
                    "unexpected payment status for a refund",
                    extra={"contribution_id": str(contribution_id), "status": status},
                )

    # -- release --------------------------------------------------------------------
    async def drive_release(self, goal_id: uuid.UUID) -> None:
        if await self._post_release(goal_id):
            await self._pay_out(goal_id)

    async def _post_release(self, goal_id: uuid.UUID) -> bool:
        """Post the release if it is due; True when the payout step is next."""
        now = self.clock()
        async with self.database.transaction() as session:
            goal = await store.get_goal(session, str(goal_id), lock=True, skip_locked=True)
            if goal is None:
                return False
            release = await store.get_release(session, goal_id, lock=True)
            if release is None or release.next_attempt_at > now:
                return False
            if release.step != ReleaseStep.POST:
                return release.step == ReleaseStep.PAYOUT
            if goal.status != GoalStatus.FUNDED or goal.outflow is not Outflow.RELEASE:
                # A release row exists only on a goal whose outflow is RELEASE (the
                # database says so); a goal in any other state is never released.
                log.error("release due on a goal that cannot be released", extra={"goal_id": str(goal_id)})
                return False
            payout_amount = release.amount - release.fee
            store.touch(release, now)
            try:
                goal_account = str(goal.account_id)
                postings = [Posting(goal_account, DEBIT, release.amount)]
                if release.fee:
                    revenue = await self.ledger.open_account("REVENUE", PLATFORM_ENTITY, goal.currency)
                    postings.append(Posting(revenue, CREDIT, release.fee))
                if payout_amount:
                    owner = await self.ledger.open_account("USER", str(goal.owner_id), goal.currency)
                    postings.append(Posting(owner, CREDIT, payout_amount))
                await self.ledger.post(
                    domain.release_transaction_id(str(goal_id)),
                    postings,
                    goal.currency,
                    f"release of goal {goal_id}",
                    {"goal_id": str(goal_id), "proof_id": str(release.proof_id)},
                )
            except (DomainError, Refused) as exc:
                release.failures += 1
                release.last_error = _error_text(exc)
                release.next_attempt_at = now + _retry_delay(release.failures, base=RETRY_BASE, cap=RETRY_CAP)
                self._step_failed(exc, "release posting failed", goal_id=str(goal_id))
                return False
            self._ledger_outage.recovered()
            release.failures = 0
            release.last_error = ""
            release.next_attempt_at = now
            # A 100% fee leaves nothing to pay out.
            release.step = ReleaseStep.PAYOUT if payout_amount else ReleaseStep.DONE
            await lifecycle.release_posted(session, goal, payout_due=bool(payout_amount), now=now)
        return bool(payout_amount)

    async def _pay_out(self, goal_id: uuid.UUID) -> None:
        now = self.clock()
        async with self.database.transaction() as session:
            release = await store.get_release(session, goal_id)
            goal = await store.get_goal(session, str(goal_id))
            if (
                release is None
                or goal is None
                or release.step != ReleaseStep.PAYOUT
                or goal.status != GoalStatus.RELEASED
            ):
                return
            attempt = release.payout_attempt
            payout_id = domain.payout_id(str(goal_id), attempt)
            # Stored before it is asked for, so its result is always recognised.
            await store.insert_payout(
                session,
                {
                    "id": uuid.UUID(payout_id), "goal_id": goal_id, "attempt": attempt,
                    "amount": release.amount - release.fee, "reason": "", "created_at": now, "updated_at": now,
                },
            )  # fmt: skip
        async with self.database.transaction() as session:
            release = await store.get_release(session, goal_id, lock=True, skip_locked=True)
            if (
                release is None
                or release.step != ReleaseStep.PAYOUT
                or release.payout_attempt != attempt
                or release.next_attempt_at > now
            ):
                return
            store.touch(release, now)
            try:
                await self.payments.create_payout(
                    payout_id=payout_id,
                    goal_id=str(goal_id),
                    user_id=str(goal.owner_id),
                    amount=release.amount - release.fee,
                    currency=goal.currency,
                    reason=f"GoFund: {goal.title}"[:100],
                )
            except (DomainError, Refused) as exc:
                # NO_PAYOUT_RECIPIENT: the owner has not registered a bank account
                # yet; the saga waits and asks again, it never gives up.
                release.failures += 1
                release.last_error = _error_text(exc)
                release.next_attempt_at = now + _retry_delay(release.failures, base=RETRY_BASE, cap=RETRY_CAP)
                if isinstance(exc, Refused) and exc.precondition_failed:
                    log.info("payout not created yet", extra={"goal_id": str(goal_id), "error": release.last_error})
                else:
                    self._step_failed(exc, "payout not created yet", goal_id=str(goal_id))
                return
            self._payments_outage.recovered()
            release.step = ReleaseStep.PAYING
            release.failures = 0
            release.last_error = ""

    @staticmethod
    def payout_retry_at(now: datetime, attempt: int) -> datetime:
        return now + _retry_delay(attempt, base=PAYOUT_RETRY_BASE, cap=PAYOUT_RETRY_CAP)
