"""Payments use cases: initialize, refund, payout, recipients, webhook intake,
and settlement — what Paystack's answer (after an event, a payer's verify or
the janitor's look) does to our records.

Money safety (DESIGN.md section 10):
- money out is reserved in the ledger before Paystack is asked (a refund:
  GOAL -> ESCROW pending; a payout: USER -> ESCROW pending). A reservation the
  ledger refuses (INSUFFICIENT_FUNDS: the money is not there, or already on
  its way out) means Paystack is never asked (OutflowRefused);
- a webhook is a claim, not a fact: every event makes us ask Paystack (verify
  the charge, fetch the refunds of the charge, verify the transfer), and only
  Paystack's answer moves money; an event Paystack does not confirm is FLAGGED
  and moves nothing; a refund Paystack holds that we never asked for (the
  dashboard, a partial one) is recorded and flags the payment, never settling
  ours;
- Paystack's outcome posts the reservation (the money left) or voids it (it
  did not), once: the ledger refuses a second resolution.
Every money step has a deterministic ledger id and is safe to repeat, so a
crash anywhere is repaired by running the same step again; an outcome for
the goals service (`outcomes`, followed by goals on WatchOutcomes) is
published once by its stable id. Payments never calls goals. What an RPC
starts and must finish (a payer's verify, a transfer Paystack refused) is
handed to the processor as an outbox entry before it is done, so its outcome
is published even if the RPC is cut short.

Deadline budgets: a Paystack call takes at most GOFUND_PAYSTACK_TIMEOUT_MS and
ends PROVIDER_MARGIN_S before the incoming call's deadline; the lease that
covers it outlives it by LEASE_MARGIN_S, so nobody overtakes a call in flight
and a retry after a cut-off call takes over as soon as the caller's deadline
has passed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from services.common import context, ledger_client
from services.common.auth import require_permission
from services.common.context import Principal
from services.common.errors import IdempotencyKeyReused, LoginRequired, Validator
from services.common.idempotency import fingerprint
from services.common.ids import parse_id
from services.common.ledger_client import ESCROW, GOAL, PLATFORM_ENTITY, USER
from services.payments import domain, store
from services.payments.domain import (
    CAPTURED,
    EventStatus,
    PaymentStatus,
    PayoutStatus,
)
from services.payments.outcomes import Outcomes
from services.payments.paystack import Bank, Paystack, Refund, Transfer
from services.payments.peers import Peers
from services.payments.store import Payment, PaymentsStore, Payout, Recipient, WebhookEvent

log = logging.getLogger("gofund.payments")
T = TypeVar("T")

ADMIN_PERMISSION = "payments:admin"
# How long a waiting replay polls for the lease holder's answer between looks.
LEASE_POLL_S = 0.05
# A Paystack call ends this long before the incoming call's deadline, so its
# answer is stored and returned in time.
PROVIDER_MARGIN_S = 0.5
# A lease outlives the Paystack call it covers by this much.
LEASE_MARGIN_S = 0.25
# Less than this left of the deadline: do not start a Paystack call.
MIN_PROVIDER_BUDGET_S = 0.2
# Paystack's bank list changes rarely; a bank picker need not ask it more than hourly per currency.
BANKS_TTL_S = 3600.0
# Paystack statuses of a refund or transfer that is not decided yet.
UNDECIDED = frozenset({"pending", "processing", "queued", "otp", "received"})
# What each final status in Paystack's Verify Transfer makes of a payout.
_TRANSFER_STATUS = {
    "success": PayoutStatus.SUCCESS,
    "failed": PayoutStatus.FAILED,
    "reversed": PayoutStatus.REVERSED,
}


@dataclass(frozen=True)
class Outcome:
    """What processing an event did: its final status and a note for operators."""

    status: EventStatus
    note: str = ""


class NotYetConfirmed(Exception):
    """Paystack's verify does not (yet) confirm what the webhook says; try again later."""


class Payments:
    def __init__(
        self,
        records: PaymentsStore,
        paystack: Paystack,
        peers: Peers,
        outcomes: Outcomes,
        *,
        secret_key: str,
        default_callback_url: str,
        paystack_timeout_s: float,
        first_check_after: timedelta = timedelta(minutes=5),
        wake_processor: Callable[[], None] = lambda: None,
    ) -> None:
        self.records = records
        self.paystack = paystack
        self.peers = peers
        self.outcomes = outcomes
        self._secret_key = secret_key
        self._banks: dict[str, tuple[float, list[Bank]]] = {}  # by currency: (read at, monotonic s; banks)
        self._default_callback_url = default_callback_url
        self._paystack_timeout_s = paystack_timeout_s
        # When the janitor first looks at a payment, refund or payout nobody has settled.
        self.first_check_after = first_check_after
        self.wake_processor = wake_processor
        # Paystack calls whose caller went away, finishing on their own (see _shielded).
        self._detached: set[asyncio.Future[Any]] = set()

    # -- budgets ----------------------------------------------------------------------
    def _provider_budget(self) -> float:
        """Seconds one Paystack call may take: the configured timeout, or less when the
        incoming call's deadline is nearer (it then ends PROVIDER_MARGIN_S before it)."""
        budget = self._paystack_timeout_s
        remaining = context.remaining_seconds()
        if remaining is not None:
            budget = min(budget, remaining - PROVIDER_MARGIN_S)
        if budget < MIN_PROVIDER_BUDGET_S:
            raise domain.PaystackUnavailable("too little of the call's deadline is left to ask Paystack")
        return budget

    @staticmethod
    def _lease_for(budget_s: float) -> timedelta:
        return timedelta(seconds=budget_s + LEASE_MARGIN_S)

    async def _shielded(self, step: Awaitable[T]) -> T:
        """Run a Paystack step to its end even if this call is cancelled (its caller went
        away): the answer is stored within its lease, so a retry finds it instead of
        asking Paystack again under a new reference."""
        task: asyncio.Future[T] = asyncio.ensure_future(step)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)
        return await asyncio.shield(task)

    # -- InitializePayment ----------------------------------------------------------
    async def initialize(
        self,
        *,
        idempotency_key: str,
        user_id: str,
        goal_id: str,
        contribution_id: str,
        amount: int,
        currency: str,
        callback_url: str,
        metadata: Mapping[str, str],
    ) -> Payment:
        domain.validate_initialize(
            idempotency_key=idempotency_key,
            user_id=user_id,
            goal_id=goal_id,
            contribution_id=contribution_id,
            amount=amount,
            currency=currency,
            callback=callback_url,
        )
        user_id, goal_id, contribution_id = (str(uuid.UUID(v)) for v in (user_id, goal_id, contribution_id))
        terms = fingerprint(
            {"user": user_id, "goal": goal_id, "contribution": contribution_id, "amount": amount, "currency": currency}
        )
        # One payment per contribution: its id is derived from the contribution,
        # so every retry, whatever its key and however late, names the same payment.
        payment_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"gofund:contribution:{contribution_id}"))
        payment = await self.records.payment(payment_id)
        if payment is not None and payment.fingerprint != terms:
            raise self._contribution_reused(contribution_id)  # refused before the key is stored
        await self.records.claim_key(f"initialize:{idempotency_key}", terms, payment_id)
        if payment is None:
            email = await self.peers.payer_email(user_id)
            stamp = store.now()
            payment = await self.records.insert_payment(
                {
                    "paymentId": payment_id,
                    "paystackReference": domain.payment_reference(payment_id),
                    "referenceAttempt": 0,
                    "earlierReferences": [],
                    "userId": user_id,
                    "goalId": goal_id,
                    "contributionId": contribution_id,
                    "amount": amount,
                    "currency": currency,
                    "status": str(PaymentStatus.PENDING),
                    "fingerprint": terms,
                    "idempotencyKey": idempotency_key,
                    "email": email,
                    "callbackUrl": callback_url or self._default_callback_url,
                    "metadata": dict(metadata),
                    "authorizationUrl": None,
                    "accessCode": None,
                    "paystackData": None,
                    "flagged": False,
                    "flagReason": "",
                    "paidAt": None,
                    "createdAt": stamp,
                    "updatedAt": stamp,
                    # The janitor verifies a payment nobody settled from then on.
                    "checkAt": stamp + self.first_check_after,
                    "checks": 0,
                }
            )
        if payment.fingerprint != terms:  # a concurrent first attempt on other terms won the insert
            raise self._contribution_reused(contribution_id)
        return await self._ensure_checkout(payment)

    @staticmethod
    def _contribution_reused(contribution_id: str) -> IdempotencyKeyReused:
        return IdempotencyKeyReused(
            "this contribution already has a payment with a different amount, currency, goal or payer",
            metadata={"contribution_id": contribution_id},
        )

    async def _ensure_checkout(self, payment: Payment) -> Payment:
        """Initialize the payment at Paystack once, however many callers ask at once."""
        while not payment.authorization_url and payment.status is PaymentStatus.PENDING:
            budget = self._provider_budget()
            doc, token = await self.records.lease_checkout(payment.payment_id, self._lease_for(budget))
            if doc is None:
                payment = await self._wait_for(
                    self.records.payment, payment.payment_id, lambda p: p.authorization_url, ("payments", "initLease")
                )
                continue
            payment = store.Payment.of(doc)
            payment = await self._shielded(self._initialize_at_paystack(payment, doc, token, budget))
        return payment

    async def _initialize_at_paystack(
        self, payment: Payment, doc: Mapping[str, Any], token: str, budget: float
    ) -> Payment:
        lease = ("initLease", token)
        try:
            checkout = await self.paystack.initialize(
                email=doc["email"],
                amount=payment.amount,
                currency=payment.currency,
                reference=payment.reference,
                callback_url=doc.get("callbackUrl") or "",
                metadata={
                    **doc.get("metadata", {}),
                    "payment_id": payment.payment_id,
                    "contribution_id": payment.contribution_id,
                    "goal_id": payment.goal_id,
                },
                timeout_s=budget,
            )
        except domain.PaystackRejected as exc:
            if domain.duplicate_reference(exc):
                # An earlier attempt reached Paystack but its answer was lost:
                # its checkout URL was never shown, so it can never be paid.
                # Continue under the next reference.
                attempt = payment.reference_attempt + 1
                moved = await self.records.update_payment(
                    payment.payment_id,
                    {"paystackReference": domain.payment_reference(payment.payment_id, attempt),
                     "referenceAttempt": attempt},
                    lease=lease,
                    release_lease=True,
                    push={"earlierReferences": payment.reference},
                )  # fmt: skip
                return moved or await self._reload(payment.payment_id)
            await self.records.update_payment(payment.payment_id, {}, lease=lease, release_lease=True)
            raise
        except domain.PaystackUnavailable:
            # Perhaps it reached Paystack: a retry then meets our reference and moves on.
            await self.records.update_payment(payment.payment_id, {}, lease=lease, release_lease=True)
            raise
        stored = await self.records.update_payment(
            payment.payment_id,
            {"authorizationUrl": checkout.authorization_url, "accessCode": checkout.access_code,
             "paystackData": checkout.data},
            lease=lease,
            release_lease=True,
        )  # fmt: skip
        # Lost the lease (it ran out mid-call and another caller took over): theirs stands.
        return stored or await self._reload(payment.payment_id)

    async def _wait_for(
        self,
        load: Callable[[str], Awaitable[Any]],
        key: str,
        ready: Callable[[Any], object],
        lease: tuple[str, str],
    ) -> Any:
        """Poll until another lease holder has finished, or its lease is free (then the caller
        takes it over). If this call's own deadline comes first, it answers in time with
        PaystackCallInProgress, and a retry finds the holder's answer. `lease`: (collection,
        lease name) of the record `key` names."""
        collection, name = lease
        remaining = context.remaining_seconds()
        answer_by = None if remaining is None else time.monotonic() + remaining - PROVIDER_MARGIN_S
        while True:
            await asyncio.sleep(LEASE_POLL_S)
            current = await load(key)
            if current is None or ready(current) or await self.records.lease_free(collection, key, name):
                return current
            if answer_by is not None and time.monotonic() >= answer_by:
                raise domain.PaystackCallInProgress(
                    "another call is asking Paystack for this and has not answered yet; retry", metadata={"id": key}
                )

    async def _reload(self, payment_id: str) -> Payment:
        payment = await self.records.payment(payment_id)
        if payment is None:
            raise domain.PaymentNotFound(f"no payment {payment_id}", metadata={"payment_id": payment_id})
        return payment

    # -- reads for the payer ------------------------------------------------------------
    async def payer_payment(self, principal: Principal | None, payment_id: str) -> Payment:
        """The payment if the caller paid it; otherwise NOT_FOUND, so ids cannot be probed."""
        payment_id = parse_id(payment_id, "payment_id", "INVALID_PAYMENT_ID")
        payment = await self.records.payment(payment_id)
        if payment is None or principal is None or payment.user_id != principal.user_id:
            raise domain.PaymentNotFound(f"no payment {payment_id}", metadata={"payment_id": payment_id})
        return payment

    async def verify(self, principal: Principal | None, payment_id: str) -> Payment:
        """Ask Paystack now (a payer back from checkout before the webhook).

        The processor is given the payment first (an outbox entry), so its
        outcome is published even if this call is cut short; the answer here is the
        payment brought up to date.
        """
        payment = await self.payer_payment(principal, payment_id)
        if payment.status is not PaymentStatus.PENDING or payment.flagged:
            return payment
        await self.records.arm_event(
            f"{domain.SETTLE_PAYMENT}:{payment.payment_id}", domain.SETTLE_PAYMENT, {"payment_id": payment.payment_id}
        )
        settled = await self.settle_charge(payment, confirmed_by_event=False, notify=False)
        self.wake_processor()
        return settled

    # -- settlement of charges --------------------------------------------------------------
    async def settle_charge(
        self,
        payment: Payment,
        *,
        confirmed_by_event: bool,
        notify: bool = True,
        reference: str = "",
        abandon_before: datetime | None = None,
    ) -> Payment:
        """Bring a payment in line with Paystack's verify, then finish what its status implies.

        `confirmed_by_event`: a signed `charge.success` says it was paid, so a
        verify that does not agree yet is retried later rather than ignored.
        `notify`: publish the outcome (the processor does; an RPC leaves it to the processor).
        `reference`: the one Paystack named, if not the payment's current one.
        `abandon_before`: a checkout Paystack still reports `abandoned` that was
        created before this is given up (ABANDONED): its payer had the whole
        idempotency window to pay (the janitor passes it).
        """
        posted = False
        if payment.status is PaymentStatus.PENDING and not payment.flagged:
            charge = await self.paystack.verify(reference or payment.reference, timeout_s=self._provider_budget())
            verdict = domain.judge_verification(
                charge.status, charge.amount, charge.currency, payment.amount, payment.currency
            )
            if verdict.mismatch:
                log.warning("payment flagged", extra={"payment_id": payment.payment_id, "reason": verdict.mismatch})
                return await self._flag(payment, verdict.mismatch, charge.data)
            moved = None
            if verdict.status is PaymentStatus.SUCCESS:
                await self._post_capture(payment)
                posted = True
                moved = await self.records.update_payment(
                    payment.payment_id,
                    {"status": str(PaymentStatus.SUCCESS), "paidAt": _parse_time(charge.paid_at) or store.now(),
                     "verification": charge.data},
                    statuses=[PaymentStatus.PENDING],
                )  # fmt: skip
            elif verdict.status is PaymentStatus.FAILED:
                moved = await self.records.update_payment(
                    payment.payment_id,
                    {"status": str(PaymentStatus.FAILED), "verification": charge.data,
                     "failureReason": charge.gateway_response or charge.status},
                    statuses=[PaymentStatus.PENDING],
                )  # fmt: skip
            elif confirmed_by_event:
                raise NotYetConfirmed(f"Paystack's verify reports {charge.status!r} for a charge.success")
            elif domain.given_up(charge.status, payment.created_at, abandon_before):
                moved = await self.records.update_payment(
                    payment.payment_id,
                    {"status": str(PaymentStatus.ABANDONED), "verification": charge.data,
                     "failureReason": "abandoned at checkout"},
                    statuses=[PaymentStatus.PENDING],
                )  # fmt: skip
            # Not moved: still pending, or another caller moved it first; either way, as it stands now.
            payment = moved or await self._reload(payment.payment_id)
            if posted and payment.status not in CAPTURED and not payment.flagged:
                # Paid at Paystack and captured, while the janitor gave the payment up (or it
                # failed): the money is in the goal's account and no contribution counts it.
                log.error("payment captured after it was given up", extra={"payment_id": payment.payment_id})
                return await self._flag(payment, f"captured after it was {payment.status.lower()}", charge.data)
        if payment.flagged or not notify:
            return payment
        if payment.status in CAPTURED:
            if not posted:
                await self._post_capture(payment)  # a replay when it is already written
            await self.outcomes.contribution_paid(payment)
        elif payment.status is PaymentStatus.FAILED:
            await self.outcomes.contribution_payment_failed(payment, "payment failed")
        elif payment.status is PaymentStatus.ABANDONED:
            await self.outcomes.contribution_payment_failed(payment, "abandoned at checkout")
        return payment

    async def abandon(self, payment: Payment, reason: str) -> Payment:
        """Give up a checkout that can no longer be paid: ABANDONED, and its contribution fails."""
        moved = await self.records.update_payment(
            payment.payment_id,
            {"status": str(PaymentStatus.ABANDONED), "failureReason": reason[:500]},
            statuses=[PaymentStatus.PENDING],
        )
        payment = moved or await self._reload(payment.payment_id)
        if payment.status is PaymentStatus.ABANDONED:
            await self.outcomes.contribution_payment_failed(payment, reason)
        return payment

    async def _post_capture(self, payment: Payment) -> None:
        escrow = await self.peers.ledger.account(ESCROW, PLATFORM_ENTITY, payment.currency)
        goal = await self.peers.ledger.account(GOAL, payment.goal_id, payment.currency)
        await self.peers.ledger.post(
            domain.capture_transaction_id(payment.payment_id),
            ledger_client.transfer(debit=escrow, credit=goal, amount=payment.amount),
            payment.currency,
            "contribution captured by Paystack",
            _payment_metadata(payment),
        )

    async def _flag(self, payment: Payment, reason: str, paystack_data: Mapping[str, Any]) -> Payment:
        flagged = await self.records.update_payment(
            payment.payment_id, {"flagged": True, "flagReason": reason, "verification": dict(paystack_data)}
        )
        return flagged or payment

    # -- refunds -----------------------------------------------------------------------------
    async def refund(self, payment_id: str, refund_id: str, reason: str) -> Payment:
        payment_id = parse_id(payment_id, "payment_id", "INVALID_PAYMENT_ID")
        check = Validator()
        domain.check_key(check, refund_id, "refund_id", "INVALID_REFUND_ID")
        check.raise_if_invalid()
        await self.records.claim_key(f"refund:{refund_id}", fingerprint({"payment": payment_id}), payment_id)
        while True:
            payment = await self._reload(payment_id)
            current = payment.refund or {}
            if current.get("refundId") == refund_id:
                break
            if refund_id in payment.failed_refund_ids:
                return payment  # that refund failed at Paystack; the caller retries under a new id
            if payment.status is not PaymentStatus.SUCCESS or payment.flagged:
                raise domain.PaymentNotRefundable(
                    f"a {payment.status.lower().replace('_', ' ')} payment cannot be refunded"
                    + (" under another refund id" if current else ""),
                    metadata={"payment_id": payment_id, "status": str(payment.status)},
                )
            stamp = store.now()
            started = await self.records.update_payment(
                payment_id,
                {"status": str(PaymentStatus.REFUND_PENDING),
                 "refund": {"refundId": refund_id, "key": domain.refund_key(payment_id, refund_id),
                            "amount": payment.amount, "reason": reason[:500], "reserved": False,
                            "requested": False, "createdAt": stamp},
                 "checkAt": stamp + self.first_check_after, "checks": 0},
                statuses=[PaymentStatus.SUCCESS],
            )  # fmt: skip
            if started is not None:
                payment = started
                break
        return await self._ensure_refund_requested(payment)

    async def continue_refund(self, payment: Payment) -> Payment:
        """Carry on a refund that was started and not yet requested at Paystack (the janitor)."""
        return await self._ensure_refund_requested(payment)

    async def _ensure_refund_requested(self, payment: Payment) -> Payment:
        """Reserve the refund in the ledger, then ask Paystack for it once."""
        while True:
            refund = payment.refund
            if not refund or refund.get("requested") or payment.status is not PaymentStatus.REFUND_PENDING:
                return payment
            if not refund.get("reserved"):
                payment = await self._reserve_refund(payment, refund)
                continue
            budget = self._provider_budget()
            doc, token = await self.records.lease_refund(
                payment.payment_id, refund["refundId"], self._lease_for(budget)
            )
            if doc is None:
                payment = await self._wait_for(
                    self.records.payment,
                    payment.payment_id,
                    lambda p: (p.refund or {}).get("requested"),
                    ("payments", "refundLease"),
                )
                continue
            payment = await self._shielded(self._refund_at_paystack(payment, refund, token, budget))

    async def _reserve_refund(self, payment: Payment, refund: Mapping[str, Any]) -> Payment:
        """GOAL -> ESCROW, pending: the money is spoken for before Paystack is asked.

        If the ledger refuses, the money is not in the goal's account (released, or
        reserved for another refund): the refund is dropped before it reaches
        Paystack, the payment is SUCCESS again, and the caller is told why.
        """
        escrow = await self.peers.ledger.account(ESCROW, PLATFORM_ENTITY, payment.currency)
        goal = await self.peers.ledger.account(GOAL, payment.goal_id, payment.currency)
        try:
            await self.peers.reserve(
                domain.refund_reserve_id(str(refund["key"])),
                debit=goal,
                credit=escrow,
                amount=int(refund.get("amount") or payment.amount),
                currency=payment.currency,
                description="refund reserved before Paystack is asked",
                metadata={**_payment_metadata(payment), "refund_id": str(refund["refundId"])},
            )
        except domain.OutflowRefused:
            log.error(
                "the ledger refused a refund's reservation; Paystack is not asked",
                extra={"payment_id": payment.payment_id, "refund_id": refund["refundId"]},
            )
            await self.records.update_payment(
                payment.payment_id,
                {"status": str(PaymentStatus.SUCCESS)},
                statuses=[PaymentStatus.REFUND_PENDING],
                match={"refund.refundId": refund["refundId"], "refund.reserved": False},
                unset=["refund"],
            )
            raise
        reserved = await self.records.update_payment(
            payment.payment_id,
            {"refund.reserved": True},
            statuses=[PaymentStatus.REFUND_PENDING],
            match={"refund.refundId": refund["refundId"]},
        )
        return reserved or await self._reload(payment.payment_id)

    async def _refund_at_paystack(
        self, payment: Payment, refund: Mapping[str, Any], token: str, budget: float
    ) -> Payment:
        lease = ("refundLease", token)
        try:
            answer = await self.paystack.refund(
                transaction=payment.reference,
                amount=int(refund.get("amount") or payment.amount),
                merchant_note=str(refund.get("reason") or "GoFund refund"),
                timeout_s=budget,
            )
        except domain.PaystackRejected as exc:
            if not domain.already_refunded(exc.message):
                await self.records.update_payment(payment.payment_id, {}, lease=lease, release_lease=True)
                raise
            # Paystack holds a refund for all of it: our earlier attempt, whose
            # answer was lost. Reviewing the charge's refunds finds and settles it.
            answer = Refund(id="", status="pending", data={"paystack_message": exc.message})
        except domain.PaystackUnavailable:
            await self.records.update_payment(payment.payment_id, {}, lease=lease, release_lease=True)
            raise
        stored = await self.records.update_payment(
            payment.payment_id,
            {"refund.requested": True, "refund.paystackRefundId": answer.id, "refund.data": answer.data},
            lease=lease,
            release_lease=True,
        )
        return stored or await self._reload(payment.payment_id)

    async def review_refunds(self, payment: Payment) -> list[Refund]:
        """Settle the payment's refund as Paystack has decided it, and flag refunds we never asked for.

        Reads every refund Paystack holds for the charge. Ours (by its Paystack
        id; or, if our request's answer was lost, the one refund of our amount we
        do not know) settles the reservation: `processed` posts it and the
        payment is REFUNDED, `failed` voids it and the payment is SUCCESS again.
        Any other refund of the charge is recorded on the payment and flags it: the
        money left Paystack without the ledger, for an operator. Returns Paystack's
        refunds of the charge.
        """
        charge_id = await self._charge_id(payment)
        found = [r async for r in self.paystack.refunds(charge_id)] if charge_id else []
        refund = dict(payment.refund or {})
        known = {*payment.failed_paystack_refund_ids, *payment.foreign_refund_ids}
        ours = next((r for r in found if r.id and r.id == str(refund.get("paystackRefundId") or "")), None)
        if ours is None and refund.get("requested") and not refund.get("paystackRefundId"):
            unknown = [r for r in found if r.id not in known and r.amount == refund.get("amount")]
            if len(unknown) == 1:  # our request reached Paystack; its answer did not reach us
                ours = unknown[0]
                adopted = await self.records.update_payment(
                    payment.payment_id,
                    {"refund.paystackRefundId": ours.id},
                    match={"refund.refundId": refund["refundId"]},
                )
                payment = adopted or payment
        # A refund of the charge we do not know that failed moved no money: nothing to flag.
        foreign = [r for r in found if r is not ours and r.id not in known and r.status != "failed"]
        if foreign and refund.get("reserved") and not refund.get("requested"):
            # Our request may be on its way to Paystack (or its answer on its way back):
            # a refund of the charge we do not know yet may be ours. Look again later.
            raise NotYetConfirmed("a refund of ours may still be being asked of Paystack")
        if foreign:
            payment = await self._record_foreign_refunds(payment, foreign)
        if ours is not None and payment.status is not PaymentStatus.SUCCESS:
            if ours.status == "processed":
                if (ours.amount, ours.currency) != (refund.get("amount"), payment.currency):
                    await self._flag(
                        payment,
                        f"Paystack processed refund {ours.id} for {ours.amount} {ours.currency}; "
                        f"we asked for {refund.get('amount')} {payment.currency}",
                        ours.data,
                    )
                else:
                    await self._refund_processed(payment, refund, ours)
            elif ours.status == "failed":
                await self._refund_failed(payment, refund, ours)
        return found

    async def _charge_id(self, payment: Payment) -> str:
        """The charge's Paystack id, as its verify reported it (asked again if we never stored it)."""
        stored = (payment.verification or {}).get("id")
        if stored not in (None, ""):
            return str(stored)
        charge = await self.paystack.verify(payment.reference)
        return str(charge.data.get("id") or "")

    async def _record_foreign_refunds(self, payment: Payment, refunds: list[Refund]) -> Payment:
        entries = [{"id": r.id, "amount": r.amount, "currency": r.currency, "status": r.status} for r in refunds]
        described = ", ".join(f"{r.id} ({r.amount} {r.currency}, {r.status})" for r in refunds)
        log.warning(
            "Paystack holds a refund we did not ask for; the payment is flagged",
            extra={"payment_id": payment.payment_id, "refunds": described},
        )
        recorded = await self.records.update_payment(
            payment.payment_id,
            {"flagged": True, "flagReason": f"Paystack holds refunds we did not ask for: {described}"[:500]},
            push_each={"foreignRefunds": entries},
        )
        return recorded or payment

    async def _refund_processed(self, payment: Payment, refund: Mapping[str, Any], answer: Refund) -> None:
        key = str(refund["key"])
        await self.peers.ledger.post_reserved(
            domain.refund_settle_id(key),
            domain.refund_reserve_id(key),
            "contribution refunded to the payer by Paystack",
            {**_payment_metadata(payment), "refund_id": str(refund["refundId"]), "paystack_refund_id": answer.id},
        )
        await self.records.update_payment(
            payment.payment_id,
            {"status": str(PaymentStatus.REFUNDED), "refundedAt": store.now(), "refundData": answer.data},
            statuses=[PaymentStatus.REFUND_PENDING],
            match={"refund.refundId": refund["refundId"]},
        )
        await self.outcomes.contribution_refunded(payment, str(refund["refundId"]))

    async def _refund_failed(self, payment: Payment, refund: Mapping[str, Any], answer: Refund) -> None:
        key = str(refund["key"])
        await self.peers.ledger.void_reserved(
            domain.refund_void_id(key),
            domain.refund_reserve_id(key),
            "refund failed at Paystack; the money stays with the goal",
            {**_payment_metadata(payment), "refund_id": str(refund["refundId"]), "paystack_refund_id": answer.id},
        )
        await self.records.fail_refund(payment.payment_id, str(refund["refundId"]), answer.data)
        reason = str(answer.data.get("reason") or answer.data.get("status") or "refund failed at Paystack")
        await self.outcomes.contribution_refund_failed(payment, str(refund["refundId"]), reason)

    async def settle_refund(self, event: str, data: Mapping[str, Any]) -> Outcome:
        """refund.processed / refund.failed: a claim that makes us look at Paystack's refunds
        of the charge. Only Paystack's answer moves money; a claim it does not bear out is FLAGGED."""
        reference = _refund_transaction_reference(data)
        payment = await self.records.payment_by_reference(reference) if reference else None
        if payment is None:
            return Outcome(EventStatus.PROCESSED, f"no payment with reference {reference!r}; nothing to do")
        found = await self.review_refunds(payment)
        claimed = "processed" if event == "refund.processed" else "failed"
        if any(r.status == claimed for r in found):
            return Outcome(EventStatus.PROCESSED)
        if any(r.status in UNDECIDED for r in found):
            raise NotYetConfirmed(f"Paystack has not decided the refund this {event} reports")
        log.warning("webhook not borne out by Paystack", extra={"payment_id": payment.payment_id, "event": event})
        return Outcome(EventStatus.FLAGGED, f"Paystack holds no {claimed} refund of this charge; nothing moved")

    # -- payout recipients ------------------------------------------------------------------------
    async def create_recipient(
        self,
        principal: Principal | None,
        *,
        account_number: str,
        bank_code: str,
        name: str,
        currency: str,
        idempotency_key: str,
    ) -> Recipient:
        if principal is None:
            raise LoginRequired("log in first")
        domain.validate_recipient(
            account_number=account_number,
            bank_code=bank_code,
            name=name,
            currency=currency,
            idempotency_key=idempotency_key,
        )
        name = name.strip()
        # The account number is never stored; its keyed digest tells a replay from new input.
        account_digest = hmac.new(self._secret_key.encode(), account_number.encode(), hashlib.sha256).hexdigest()
        terms = fingerprint({"account": account_digest, "bank": bank_code, "name": name, "currency": currency})
        key = f"recipient:{principal.user_id}:{idempotency_key}"
        replayed = await self.records.keyed_resource(key, terms)
        existing = await self.records.recipient(replayed) if replayed is not None else None
        if existing is not None:
            return existing
        # Resolved before anything is stored: an account no bank holds leaves no trace.
        account_name = ""
        if currency in domain.RESOLVED_CURRENCIES:
            resolved = await self.paystack.resolve_account(account_number=account_number, bank_code=bank_code)
            account_name = resolved.account_name
        # Registered at Paystack before the key is claimed, so a recipient Paystack
        # refuses leaves nothing stored either. Two concurrent first attempts may
        # both ask: Paystack answers the same recipient for the same account, the
        # first claim names the record, and the insert keeps only one.
        created = await self.paystack.create_recipient(
            recipient_type=domain.RECIPIENT_TYPES[currency],
            name=name,
            account_number=account_number,
            bank_code=bank_code,
            currency=currency,
        )
        recipient_id = await self.records.claim_key(key, terms, domain.new_id())
        details = {k: v for k, v in dict(created.data.get("details") or {}).items() if k != "account_number"}
        return await self.records.insert_recipient(
            {
                "id": recipient_id,
                "userId": principal.user_id,
                "name": name,
                "accountNumberLast4": account_number[-4:],
                "bankCode": bank_code,
                "currency": currency,
                "recipientCode": created.recipient_code,
                "accountName": account_name or str(details.get("account_name") or ""),
                "bankName": str(details.get("bank_name") or ""),
                "details": details,
                "createdAt": store.now(),
            }
        )

    async def list_banks(self, currency: str) -> list[Bank]:
        """Paystack's banks for `currency`, from memory for BANKS_TTL after they were first read."""
        check = Validator()
        domain.check_currency(check, currency)
        check.raise_if_invalid()
        cached = self._banks.get(currency)
        now_s = time.monotonic()
        if cached is not None and now_s - cached[0] < BANKS_TTL_S:
            return cached[1]
        banks = await self.paystack.banks(currency)
        self._banks[currency] = (now_s, banks)
        return banks

    # -- payouts --------------------------------------------------------------------------------------
    async def create_payout(
        self, *, payout_id: str, goal_id: str, user_id: str, amount: int, currency: str, reason: str
    ) -> Payout:
        domain.validate_payout(
            payout_id=payout_id, goal_id=goal_id, user_id=user_id, amount=amount, currency=currency, reason=reason
        )
        payout_id, goal_id, user_id = (str(uuid.UUID(v)) for v in (payout_id, goal_id, user_id))
        terms = fingerprint({"goal": goal_id, "user": user_id, "amount": amount, "currency": currency})
        payout = await self.records.payout(payout_id)
        if payout is None:
            recipient = await self.records.current_recipient(user_id, currency)
            if recipient is None:
                raise domain.NoPayoutRecipient(
                    f"the user has no payout recipient in {currency}",
                    metadata={"user_id": user_id, "currency": currency},
                )
            stamp = store.now()
            payout = await self.records.insert_payout(
                {
                    "payoutId": payout_id,
                    "goalId": goal_id,
                    "userId": user_id,
                    "recipientId": recipient.id,
                    "recipientCode": recipient.recipient_code,
                    "amount": amount,
                    "currency": currency,
                    "reason": reason,
                    "fingerprint": terms,
                    "status": str(PayoutStatus.PENDING),
                    "reference": domain.payout_reference(payout_id),
                    "transferCode": None,
                    "requested": False,
                    "reserved": False,
                    "failureReason": "",
                    "createdAt": stamp,
                    "updatedAt": stamp,
                    "checkAt": stamp + self.first_check_after,
                    "checks": 0,
                }
            )
        if payout.fingerprint != terms:
            raise IdempotencyKeyReused(
                "this payout id was used with a different goal, user, amount or currency",
                metadata={"payout_id": payout_id},
            )
        return await self._ensure_transfer(payout)

    async def continue_transfer(self, payout: Payout) -> Payout:
        """Carry on a payout that was created and not yet requested at Paystack (the janitor)."""
        return await self._ensure_transfer(payout)

    async def _ensure_transfer(self, payout: Payout) -> Payout:
        """Reserve the payout in the ledger, then ask Paystack for the transfer once,
        however many callers ask at once."""
        while not payout.requested and payout.status is PayoutStatus.PENDING:
            if not payout.reserved:
                try:
                    payout = await self._reserve_payout(payout)
                except domain.OutflowRefused as exc:
                    # The owner's account does not hold it (paid out already, or on its
                    # way): never asked of Paystack; published FAILED as for a refusal.
                    log.error("the ledger refused a payout's reservation", extra={"payout_id": payout.payout_id})
                    return await self._refuse_payout(payout, exc.message)
                continue
            budget = self._provider_budget()
            doc, token = await self.records.lease_transfer(payout.payout_id, self._lease_for(budget))
            if doc is None:
                payout = await self._wait_for(
                    self.records.payout, payout.payout_id, lambda p: p.requested, ("payouts", "transferLease")
                )
                continue
            payout = await self._shielded(self._transfer_at_paystack(payout, token, budget))
        return payout

    async def _reserve_payout(self, payout: Payout) -> Payout:
        """USER -> ESCROW, pending: the money is spoken for before Paystack is asked."""
        user = await self.peers.ledger.account(USER, payout.user_id, payout.currency)
        escrow = await self.peers.ledger.account(ESCROW, PLATFORM_ENTITY, payout.currency)
        await self.peers.reserve(
            domain.payout_reserve_id(payout.payout_id),
            debit=user,
            credit=escrow,
            amount=payout.amount,
            currency=payout.currency,
            description="payout reserved before Paystack is asked",
            metadata=_payout_metadata(payout),
        )
        reserved = await self.records.update_payout(payout.payout_id, {"reserved": True})
        return reserved or await self._payout(payout.payout_id)

    async def _transfer_at_paystack(self, payout: Payout, token: str, budget: float) -> Payout:
        lease = ("transferLease", token)
        try:
            transfer = await self.paystack.transfer(
                amount=payout.amount,
                recipient_code=payout.recipient_code,
                reason=payout.reason or "GoFund payout",
                currency=payout.currency,
                reference=payout.reference,
                timeout_s=budget,
            )
        except domain.PaystackRejected as exc:
            if domain.duplicate_reference(exc):
                # An earlier attempt reached Paystack (its answer was lost).
                # Its events carry our reference, which is how they find the payout.
                stored = await self.records.update_payout(
                    payout.payout_id, {"requested": True}, lease=lease, release_lease=True
                )
                return stored or await self._payout(payout.payout_id)
            # Refused (an unusable recipient, say). But an earlier attempt whose answer was
            # lost may have reached Paystack and drained what this one would need: the payout
            # fails (and may be paid anew) only if Paystack holds no transfer under our reference.
            try:
                await self.paystack.verify_transfer(payout.reference, timeout_s=self._provider_budget())
            except domain.PaystackNotFound:
                await self.records.update_payout(payout.payout_id, {}, lease=lease, release_lease=True)
                return await self._refuse_payout(payout, exc.message)
            except domain.PaystackUnavailable:
                await self.records.update_payout(payout.payout_id, {}, lease=lease, release_lease=True)
                raise
            stored = await self.records.update_payout(
                payout.payout_id, {"requested": True}, lease=lease, release_lease=True
            )
            return stored or await self._payout(payout.payout_id)
        except domain.PaystackUnavailable:
            # Perhaps it reached Paystack: a retry then meets our reference.
            await self.records.update_payout(payout.payout_id, {}, lease=lease, release_lease=True)
            raise
        stored = await self.records.update_payout(
            payout.payout_id,
            {"requested": True, "transferCode": transfer.transfer_code, "transferData": transfer.data},
            lease=lease,
            release_lease=True,
        )
        return stored or await self._payout(payout.payout_id)

    async def _refuse_payout(self, payout: Payout, reason: str) -> Payout:
        """A payout that never reached Paystack fails now; its outcome is published as for
        transfer.failed, through the processor (so it retries under a new payout id)."""
        await self.records.arm_event(
            f"{domain.PAYOUT_REJECTED}:{payout.payout_id}", domain.PAYOUT_REJECTED,
            {"payout_id": payout.payout_id, "reason": reason},
        )  # fmt: skip
        self.wake_processor()
        return await self._reject_payout(payout.payout_id, reason)

    async def _reject_payout(self, payout_id: str, reason: str) -> Payout:
        moved = await self.records.update_payout(
            payout_id,
            {"status": str(PayoutStatus.FAILED), "failureReason": f"the transfer was refused: {reason}"[:500]},
            statuses=[PayoutStatus.PENDING],
        )
        return moved or await self._payout(payout_id)

    async def _payout(self, payout_id: str) -> Payout:
        payout = await self.records.payout(payout_id)
        if payout is None:
            raise domain.PayoutNotFound(f"no payout {payout_id}", metadata={"payout_id": payout_id})
        return payout

    async def payout(self, payout_id: str) -> Payout:
        return await self._payout(parse_id(payout_id, "payout_id", "INVALID_PAYOUT_ID"))

    async def review_transfer(self, payout: Payout) -> Transfer | None:
        """Settle the payout as Paystack's Verify Transfer reports it; None if Paystack holds no
        transfer with our reference. A transfer whose amount or currency is not ours flags the
        payout and moves nothing."""
        try:
            transfer = await self.paystack.verify_transfer(payout.reference)
        except domain.PaystackNotFound:
            return None
        if (transfer.amount, transfer.currency) != (payout.amount, payout.currency):
            await self.records.update_payout(
                payout.payout_id,
                {"flagged": True,
                 "flagReason": f"Paystack's transfer is {transfer.amount} {transfer.currency}, "
                               f"the payout {payout.amount} {payout.currency}"},
            )  # fmt: skip
            log.warning("payout flagged", extra={"payout_id": payout.payout_id})
            return transfer
        target = _TRANSFER_STATUS.get(transfer.status)
        if target is not None and not payout.flagged:
            await self._payout_settled(payout, target, transfer)
        return transfer

    async def _payout_settled(self, payout: Payout, target: PayoutStatus, transfer: Transfer) -> None:
        """The status moves first (once), then the money: success posts the reservation,
        failure voids it, a reversal posts it and puts the money back in the owner's
        account. However a success and a reversal interleave, the ledger ends right:
        both post the reservation under one id."""
        sources = (
            [PayoutStatus.PENDING, PayoutStatus.SUCCESS] if target is PayoutStatus.REVERSED else [PayoutStatus.PENDING]
        )
        changes: dict[str, Any] = {"status": str(target), "verification": transfer.data}
        if target is not PayoutStatus.SUCCESS:
            reason = transfer.data.get("reason_for_failure") or transfer.data.get("failures") or transfer.status
            changes["failureReason"] = str(reason)[:500]
        moved = await self.records.update_payout(payout.payout_id, changes, statuses=sources)
        payout = moved or await self._payout(payout.payout_id)
        if payout.status is not target:
            if payout.status is PayoutStatus.FAILED and target is not PayoutStatus.FAILED and not payout.flagged:
                # Paystack sent money for a payout we had failed (and goals may have paid anew).
                log.error("Paystack sent a transfer for a failed payout", extra={"payout_id": payout.payout_id})
                await self.records.update_payout(
                    payout.payout_id,
                    {"flagged": True, "flagReason": f"Paystack reports {transfer.status} for a payout we failed"},
                )
            return  # settled otherwise (a success after its reversal...): nothing more to do
        metadata = _payout_metadata(payout)
        if target is PayoutStatus.FAILED:
            await self.peers.ledger.void_reserved(
                domain.payout_void_id(payout.payout_id), domain.payout_reserve_id(payout.payout_id),
                "payout failed at Paystack; the money stays the owner's", metadata,
            )  # fmt: skip
        else:
            await self.peers.ledger.post_reserved(
                domain.payout_transaction_id(payout.payout_id), domain.payout_reserve_id(payout.payout_id),
                "payout sent to the owner's bank by Paystack", metadata,
            )  # fmt: skip
        if target is PayoutStatus.REVERSED:
            user = await self.peers.ledger.account(USER, payout.user_id, payout.currency)
            escrow = await self.peers.ledger.account(ESCROW, PLATFORM_ENTITY, payout.currency)
            await self.peers.ledger.post(
                domain.payout_reversal_transaction_id(payout.payout_id),
                ledger_client.transfer(debit=escrow, credit=user, amount=payout.amount),
                payout.currency,
                "payout reversed by Paystack; the money is the owner's again",
                metadata,
            )
        await self.outcomes.payout_settled(payout)

    async def settle_transfer(self, event: str, data: Mapping[str, Any]) -> Outcome:
        """transfer.success / failed / reversed: a claim that makes us verify the transfer.
        Only Paystack's answer moves money; a claim it does not bear out is FLAGGED."""
        payout = await self.records.payout_by_transfer(
            str(data.get("transfer_code") or ""), str(data.get("reference") or "")
        )
        if payout is None:
            return Outcome(EventStatus.PROCESSED, "no payout with this transfer code or reference; nothing to do")
        transfer = await self.review_transfer(payout)
        claimed = event.removeprefix("transfer.")
        if transfer is None:
            return Outcome(EventStatus.FLAGGED, "Paystack holds no transfer with our reference; nothing moved")
        if transfer.status == claimed or (claimed == "success" and transfer.status == "reversed"):
            return Outcome(EventStatus.PROCESSED)  # a reversal comes after a success: history, not a lie
        if transfer.status in UNDECIDED:
            raise NotYetConfirmed(f"Paystack's transfer is still {transfer.status!r}; the event says {claimed}")
        return Outcome(EventStatus.FLAGGED, f"the event says {claimed}, Paystack says {transfer.status!r}")

    # -- webhooks -----------------------------------------------------------------------------------
    async def receive_webhook(self, body: bytes, signature: str) -> bool:
        """Check, store, acknowledge. True if the event is new (False: a duplicate delivery)."""
        if not domain.signature_valid(self._secret_key, body, signature):
            raise domain.InvalidSignature("the x-paystack-signature header does not sign this body")
        parsed = domain.parse_event(body)
        status = EventStatus.PENDING if parsed.handled else EventStatus.IGNORED
        try:
            new = await self.records.insert_event(
                parsed.event_id, parsed.event, body.decode("utf-8", "replace"), parsed.data, status
            )
        except Exception as exc:
            log.warning("webhook event not stored", extra={"event_id": parsed.event_id, "error": str(exc)[:300]})
            raise domain.EventStoreUnavailable(
                "the event could not be stored; Paystack will deliver it again"
            ) from None
        if new and parsed.handled:
            self.wake_processor()
        log.info(
            "webhook received",
            extra={"event_id": parsed.event_id, "event": parsed.event, "duplicate": not new, "status": str(status)},
        )
        return new

    async def settle_charge_event(self, data: Mapping[str, Any]) -> Outcome:
        reference = str(data.get("reference") or "")
        payment = await self.records.payment_by_reference(reference)
        if payment is None:
            return Outcome(EventStatus.PROCESSED, f"no payment with reference {reference!r}; nothing to do")
        if payment.status in (PaymentStatus.FAILED, PaymentStatus.ABANDONED) and not payment.flagged:
            await self._flag(payment, f"Paystack reports a charge on a {payment.status} payment", data)
            return Outcome(EventStatus.PROCESSED, "charge on a closed payment; flagged for an operator")
        settled = await self.settle_charge(payment, confirmed_by_event=True, reference=reference)
        return Outcome(EventStatus.PROCESSED, "flagged: " + settled.flag_reason if settled.flagged else "")

    # -- the janitor's checks (run by the processor, from the outbox) -----------------------------
    async def check_payment(self, payment: Payment, abandon_before: datetime) -> None:
        """Settle an open payment, or its refund, as Paystack reports it now (see janitor).

        Every step is the webhook's own and publishes its outcome, so a check repeated
        after a failure part-way (the ledger down) finishes what the first one began.
        """
        if payment.status in (PaymentStatus.REFUND_PENDING, PaymentStatus.REFUNDED):
            refund = payment.refund or {}
            if refund.get("reserved") and refund.get("requested"):
                await self.review_refunds(payment)  # settles it, and publishes its outcome
            else:
                await self.continue_refund(payment)
            return
        if payment.status is not PaymentStatus.PENDING or payment.flagged:
            await self.settle_charge(payment, confirmed_by_event=False)  # settled: its outcome is published (once)
            return
        if not payment.authorization_url:
            # Never initialized at Paystack (every attempt failed and the payer gave up):
            # it cannot be paid, so once the window is over it is abandoned.
            if payment.created_at <= abandon_before:
                await self.abandon(payment, "never initialized at Paystack")
            return
        try:
            await self.settle_charge(payment, confirmed_by_event=False, abandon_before=abandon_before)
        except domain.PaystackRejected as exc:
            if not domain.reference_not_found(exc):
                raise
            if payment.created_at <= abandon_before:
                await self.abandon(payment, "Paystack does not know the reference")

    async def check_payout(self, payout: Payout) -> None:
        """Carry on an open payout, or settle it as Verify Transfer reports it (see janitor)."""
        if payout.flagged:
            return
        if not payout.requested:
            await self.continue_transfer(payout)
        else:
            await self.review_transfer(payout)

    async def process(self, event: str, data: Mapping[str, Any]) -> Outcome:
        """Apply one stored event (the processor calls this; safe to repeat)."""
        if event == "charge.success":
            return await self.settle_charge_event(data)
        if event.startswith("refund."):
            return await self.settle_refund(event, data)
        if event.startswith("transfer."):
            return await self.settle_transfer(event, data)
        # Work the service gave its own outbox.
        if event == domain.SETTLE_PAYMENT:
            await self.settle_charge(await self._reload(str(data["payment_id"])), confirmed_by_event=False)
        elif event == domain.CHECK_PAYMENT:
            abandon_before = datetime.fromisoformat(str(data["abandon_before"]))
            await self.check_payment(await self._reload(str(data["payment_id"])), abandon_before)
        elif event == domain.CHECK_PAYOUT:
            await self.check_payout(await self._payout(str(data["payout_id"])))
        elif event == domain.PAYOUT_REJECTED:
            await self._payout_rejected(str(data["payout_id"]), str(data.get("reason") or ""))
        else:
            raise domain.MalformedEvent(f"no handler for {event!r}")
        return Outcome(EventStatus.PROCESSED)

    async def _payout_rejected(self, payout_id: str, reason: str) -> None:
        """A payout that never reached Paystack: FAILED, its reservation voided, the outcome published."""
        payout = await self._reject_payout(payout_id, reason)
        if payout.status is not PayoutStatus.FAILED:
            return
        if payout.reserved:
            await self.peers.ledger.void_reserved(
                domain.payout_void_id(payout.payout_id), domain.payout_reserve_id(payout.payout_id),
                "Paystack refused the transfer; the money stays the owner's", _payout_metadata(payout),
            )  # fmt: skip
        await self.outcomes.payout_settled(payout)

    async def webhook_events(
        self, principal: Principal | None, status: EventStatus | None, before: tuple[datetime, str] | None, limit: int
    ) -> list[WebhookEvent]:
        require_permission(principal, ADMIN_PERMISSION)
        return await self.records.list_events(status, before, limit)

    async def retry_event(self, principal: Principal | None, event_id: str) -> WebhookEvent:
        require_permission(principal, ADMIN_PERMISSION)
        event = await self.records.unpark_event(event_id) or await self.records.event(event_id)
        if event is None:
            raise domain.WebhookEventNotFound(f"no webhook event {event_id}", metadata={"event_id": event_id})
        if event.status is EventStatus.IGNORED:
            raise domain.WebhookEventIgnored(
                "an ignored event type is never processed", metadata={"event_id": event_id}
            )
        if event.status is EventStatus.PENDING:
            self.wake_processor()
        return event


def _payment_metadata(payment: Payment) -> dict[str, str]:
    return {
        "payment_id": payment.payment_id,
        "goal_id": payment.goal_id,
        "contribution_id": payment.contribution_id,
        "reference": payment.reference,
    }


def _payout_metadata(payout: Payout) -> dict[str, str]:
    return {"payout_id": payout.payout_id, "goal_id": payout.goal_id, "user_id": payout.user_id}


def _refund_transaction_reference(data: Mapping[str, Any]) -> str:
    """The charge a refund event is about: `transaction_reference`, or the nested transaction."""
    reference = data.get("transaction_reference")
    if not reference and isinstance(data.get("transaction"), dict):
        reference = data["transaction"].get("reference")
    return str(reference or "")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
