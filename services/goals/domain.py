"""Goal rules: states, validation, the vote tally, fees, saga ids and retry delays.

Pure: no SQL, no gRPC, no clock of its own (callers pass `now`).

Money never moves twice because every money step has an id derived from what
it is for: the release posting is "goal:<goal_id>:release", payout and refund
ids are UUIDv5 of (goal or contribution, attempt), and the payment behind a
contribution is initialized under "contribution:<contribution_id>". The ledger
and payments are idempotent on those ids, so a saga step repeated after a crash
changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from services.common.errors import DomainError, Validator
from services.common.idempotency import fingerprint
from services.common.money import SUPPORTED_CURRENCIES

MAX_AMOUNT = 10**12  # minor units
TITLE_MIN, TITLE_MAX = 3, 120
MAX_DESCRIPTION = 10_000
MAX_REQUEST_ID = 200
MAX_CANCEL_REASON = 500
MAX_MEDIA_URLS = 10
MAX_MEDIA_URL = 2048
MAX_COMMENT = 1000
MAX_FAILURE_REASON = 500
MIN_DEADLINE = timedelta(hours=1)
MAX_DEADLINE = timedelta(days=365)
MAX_PROOFS = 3
BPS = 10_000  # basis points in a whole

# Namespace of every id the goals service derives (UUIDv5); fixed forever.
ID_NAMESPACE = uuid.UUID("6f1d3c52-3a3e-4c55-9b55-2b8f0a6e9d17")


class GoalStatus(StrEnum):
    OPEN = "OPEN"
    FUNDED = "FUNDED"
    RELEASED = "RELEASED"
    WITHDRAWN = "WITHDRAWN"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    REFUNDING = "REFUNDING"
    REFUNDED = "REFUNDED"

    @property
    def final(self) -> bool:
        """A goal in a final status never changes again; its watchers are done."""
        return self in (GoalStatus.WITHDRAWN, GoalStatus.REFUNDED)


class Outflow(StrEnum):
    """Where a goal's money goes once it stops taking money: one of the two, once, ever.

    Stored on the goal (`goals.outflow`), set under the goal's row lock and never
    changed (a trigger), and every saga row names it (composite foreign keys), so
    the database itself refuses a goal that is both released and refunded.
    """

    RELEASE = "RELEASE"  # an approved proof: to the owner, less the fee
    REFUND = "REFUND"  # expired, cancelled or rejected three times: back to every contributor


# The goal state machine: every move a goal may make. `lifecycle.move` is the
# only code that changes a goal's status, and it refuses any move not listed.
GOAL_MOVES: dict[GoalStatus, frozenset[GoalStatus]] = {
    GoalStatus.OPEN: frozenset({GoalStatus.FUNDED, GoalStatus.EXPIRED, GoalStatus.CANCELLED}),
    # REFUNDING straight from FUNDED: the third rejected proof.
    GoalStatus.FUNDED: frozenset({GoalStatus.RELEASED, GoalStatus.CANCELLED, GoalStatus.REFUNDING}),
    GoalStatus.EXPIRED: frozenset({GoalStatus.REFUNDING}),
    GoalStatus.CANCELLED: frozenset({GoalStatus.REFUNDING}),
    GoalStatus.REFUNDING: frozenset({GoalStatus.REFUNDED}),
    GoalStatus.RELEASED: frozenset({GoalStatus.WITHDRAWN}),
    # Paystack reversed a transfer that had succeeded: the money is the owner's again, to be paid out anew.
    GoalStatus.WITHDRAWN: frozenset({GoalStatus.RELEASED}),
    GoalStatus.REFUNDED: frozenset(),
}


def can_move(current: GoalStatus, target: GoalStatus) -> bool:
    return target in GOAL_MOVES[current]


class ContributionStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"


# The contribution state machine. What payments reports moves a contribution along it; a
# report of a status it has already reached (or passed) is a replay, any other is refused.
CONTRIBUTION_MOVES: dict[ContributionStatus, frozenset[ContributionStatus]] = {
    ContributionStatus.PENDING: frozenset({ContributionStatus.SUCCEEDED, ContributionStatus.FAILED}),
    ContributionStatus.SUCCEEDED: frozenset({ContributionStatus.REFUNDED}),
    ContributionStatus.FAILED: frozenset(),
    ContributionStatus.REFUNDED: frozenset(),
}


def contribution_step(current: ContributionStatus, target: ContributionStatus) -> Literal["move", "replay", "refused"]:
    """What a report that the contribution is now `target` does: "move", "replay" (it is
    there or past it already) or "refused" (the machine has no way there)."""
    if target in CONTRIBUTION_MOVES[current]:
        return "move"
    reached = {target}
    while True:
        onward = {after for status in reached for after in CONTRIBUTION_MOVES[status]} - reached
        if not onward:
            break
        reached |= onward
    return "replay" if current in reached else "refused"


class ProofStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class PayoutOutcome(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REVERSED = "REVERSED"


# -- what payments reports (PaymentsInternalService.WatchOutcomes) ------------------------------
@dataclass(frozen=True)
class ContributionPaid:
    """The contribution's charge was verified and posted ESCROW -> GOAL."""

    seq: int
    contribution_id: str
    payment_id: str
    amount: int
    currency: str
    paid_at: datetime | None


@dataclass(frozen=True)
class ContributionPaymentFailed:
    """The contribution's charge failed or was abandoned; no money moved."""

    seq: int
    contribution_id: str
    payment_id: str
    reason: str


@dataclass(frozen=True)
class ContributionRefunded:
    """The contribution's refund was processed and posted GOAL -> ESCROW."""

    seq: int
    contribution_id: str
    payment_id: str
    refund_id: str


@dataclass(frozen=True)
class ContributionRefundFailed:
    """Paystack failed the contribution's refund under `refund_id`; the money is still the goal's."""

    seq: int
    contribution_id: str
    payment_id: str
    refund_id: str
    reason: str


@dataclass(frozen=True)
class PayoutSettled:
    """A payout of a goal's release ended; `outcome` is None when payments sent a status
    that is not an ending (a bug on its side, refused when applied)."""

    seq: int
    goal_id: str
    payout_id: str
    outcome: PayoutOutcome | None
    reason: str


@dataclass(frozen=True)
class UnknownOutcome:
    """An outcome of a kind this goals does not know (a newer payments): refused when applied."""

    seq: int
    outcome_id: str
    kind: str


PaymentOutcome = (
    ContributionPaid
    | ContributionPaymentFailed
    | ContributionRefunded
    | ContributionRefundFailed
    | PayoutSettled
    | UnknownOutcome
)


class RefundCause(StrEnum):
    """Why a goal is refunding: it tells a repeated cancel from a refund for another reason."""

    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


class RefundState(StrEnum):
    # RefundPayment must be (re)sent for the current attempt's refund id.
    PENDING = "PENDING"
    # Payments accepted the refund; its outcome, refunded or failed, is awaited.
    REQUESTED = "REQUESTED"
    # Payments reported it refunded: the money is back with the payer.
    DONE = "DONE"


class ReleaseStep(StrEnum):
    # Post "goal:<id>:release" to the ledger (fee to REVENUE, rest to the owner).
    POST = "POST"
    # Ask payments for the payout of the current attempt.
    PAYOUT = "PAYOUT"
    # The payout is with Paystack; payments' payout_settled outcome says how it ended.
    PAYING = "PAYING"
    DONE = "DONE"


# -- errors ---------------------------------------------------------------------
class GoalNotFound(DomainError):
    pass


class ContributionNotFound(DomainError):
    pass


class ProofNotFound(DomainError):
    pass


class NotGoalOwner(DomainError):
    pass


class GoalNotOpen(DomainError):
    pass


class GoalNotCancellable(DomainError):
    pass


class GoalNotFunded(DomainError):
    pass


# The next six, and OutcomeNotUnderstood, are refusals of an outcome from payments
# (`outcomes`): the follower logs them and steps over the outcome; no caller is answered.
class GoalNotReleased(DomainError):
    pass


class PaymentMismatch(DomainError):
    pass


class PayoutMismatch(DomainError):
    pass


class ContributionAlreadyFailed(DomainError):
    pass


class ContributionAlreadySucceeded(DomainError):
    pass


class ContributionNotSucceeded(DomainError):
    pass


class ProofPending(DomainError):
    pass


class ProofLimitReached(DomainError):
    pass


class NotAContributor(DomainError):
    pass


class OwnerCannotVote(DomainError):
    pass


class VotingClosed(DomainError):
    pass


class AlreadyVoted(DomainError):
    pass


class IllegalGoalMove(DomainError):
    """A goal was asked to make a move the state machine does not have: a bug upstream, refused."""


class LedgerUnavailable(DomainError):
    pass


class PaymentsUnavailable(DomainError):
    pass


class OutcomeNotUnderstood(DomainError):
    """An outcome from payments that goals cannot read (unknown kind, not an ending)."""


class PaymentRejected(DomainError):
    """Payments refused to initialize the payment (Paystack rejected it)."""


# -- validation -------------------------------------------------------------------
def check_title(check: Validator, title: str) -> str:
    trimmed = title.strip()
    check.require(
        TITLE_MIN <= len(trimmed) <= TITLE_MAX,
        "title",
        f"must be {TITLE_MIN} to {TITLE_MAX} characters",
        "INVALID_TITLE",
    )
    return trimmed


def check_description(check: Validator, description: str) -> None:
    check.require(
        len(description) <= MAX_DESCRIPTION,
        "description",
        f"at most {MAX_DESCRIPTION:,} characters",
        "INVALID_DESCRIPTION",
    )


def check_request_id(check: Validator, request_id: str, field: str = "request_id") -> None:
    check.require(
        len(request_id) <= MAX_REQUEST_ID, field, f"at most {MAX_REQUEST_ID} characters", "INVALID_REQUEST_ID"
    )


@dataclass(frozen=True)
class NewGoal:
    title: str
    description: str
    target_amount: int
    currency: str
    deadline: datetime | None
    request_id: str

    def fingerprint(self) -> str:
        return fingerprint(
            {
                "title": self.title,
                "description": self.description,
                "target_amount": self.target_amount,
                "currency": self.currency,
                "deadline": self.deadline.isoformat() if self.deadline else None,
            }
        )


def validate_new_goal(goal: NewGoal) -> NewGoal:
    """Shape rules (all violations at once); the deadline's distance from now is `check_deadline`."""
    check = Validator()
    title = check_title(check, goal.title)
    check_description(check, goal.description)
    check.require(
        0 < goal.target_amount <= MAX_AMOUNT,
        "target_amount",
        "must be positive and at most 10^12 (minor units)",
        "INVALID_TARGET_AMOUNT",
    )
    check.require(
        goal.currency in SUPPORTED_CURRENCIES,
        "currency",
        f"must be one of {', '.join(sorted(SUPPORTED_CURRENCIES))}",
        "UNSUPPORTED_CURRENCY",
    )
    check.require(goal.deadline is not None, "deadline", "is required", "INVALID_DEADLINE")
    check_request_id(check, goal.request_id)
    check.raise_if_invalid()
    return NewGoal(title, goal.description, goal.target_amount, goal.currency, goal.deadline, goal.request_id)


def check_deadline(deadline: datetime, now: datetime) -> None:
    check = Validator()
    check.require(
        now + MIN_DEADLINE <= deadline <= now + MAX_DEADLINE,
        "deadline",
        "must be between 1 hour and 365 days from now",
        "INVALID_DEADLINE",
    )
    check.raise_if_invalid()


def validate_media_urls(check: Validator, urls: list[str]) -> None:
    if not check.require(len(urls) <= MAX_MEDIA_URLS, "media_urls", f"at most {MAX_MEDIA_URLS}", "TOO_MANY_MEDIA_URLS"):
        return
    for index, url in enumerate(urls):
        check.require(
            len(url) <= MAX_MEDIA_URL and _is_https_url(url),
            f"media_urls[{index}]",
            f"must be an https URL of at most {MAX_MEDIA_URL} characters",
            "INVALID_MEDIA_URL",
        )


def _is_https_url(url: str) -> bool:
    # urlsplit drops tabs and newlines without a word (so what we would store is
    # not what was checked), hence no whitespace at all; and it raises ValueError
    # for a malformed host such as "https://[::1", or (read from .port) a port
    # past 65535.
    if any(character.isspace() for character in url):
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme == "https" and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:
        return False


# -- states -----------------------------------------------------------------------
def accepts_money(status: GoalStatus, outflow: Outflow | None) -> bool:
    """May a captured payment count towards this goal? Only while OPEN or FUNDED and before
    its outflow is decided: once the release amount is fixed, later money is refunded instead."""
    return status in (GoalStatus.OPEN, GoalStatus.FUNDED) and outflow is None


def takes_contributions(status: GoalStatus, deadline: datetime, now: datetime) -> bool:
    return status is GoalStatus.OPEN and now < deadline


def cancellable(status: GoalStatus, outflow: Outflow | None) -> bool:
    return status in (GoalStatus.OPEN, GoalStatus.FUNDED) and outflow is None


# -- votes ------------------------------------------------------------------------
@dataclass(frozen=True)
class Tally:
    """Weights in minor units. `raised` is the sum of every succeeded contribution that
    counts for the goal; `uncast` the part of it whose contributors may still vote."""

    approve: int
    reject: int
    uncast: int
    raised: int


def decide_early(tally: Tally, approval_threshold_bps: int) -> ProofStatus | None:
    """Approved once approving weight exceeds the threshold; rejected once it no longer can."""
    needed = approval_threshold_bps * tally.raised
    if tally.approve * BPS > needed:
        return ProofStatus.APPROVED
    if (tally.approve + tally.uncast) * BPS <= needed:
        return ProofStatus.REJECTED
    return None


def decide_at_close(tally: Tally, quorum_bps: int) -> ProofStatus:
    """When the window closes undecided: the majority of the weight cast, if enough was cast."""
    cast = tally.approve + tally.reject
    if cast * BPS >= quorum_bps * tally.raised and tally.approve > tally.reject:
        return ProofStatus.APPROVED
    return ProofStatus.REJECTED


# -- money ------------------------------------------------------------------------
def platform_fee(amount: int, fee_bps: int) -> int:
    """The platform's share, rounded down to the minor unit."""
    return amount * fee_bps // BPS


def release_transaction_id(goal_id: str) -> str:
    return f"goal:{goal_id}:release"


def payout_id(goal_id: str, attempt: int) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"goal:{goal_id}:payout:{attempt}"))


def refund_id(contribution_id: str, attempt: int) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"contribution:{contribution_id}:refund:{attempt}"))


def payment_idempotency_key(contribution_id: str) -> str:
    return f"contribution:{contribution_id}"


def goal_id_for_request(owner_id: str, request_id: str) -> str:
    """A retried CreateGoal names the same goal (and so the same GOAL account)."""
    return str(uuid.uuid5(ID_NAMESPACE, f"goal-request:{owner_id}:{request_id}"))
