"""Charges: a contribution's payment from checkout to captured (or failed, or abandoned).

Money safety (DESIGN.md section 10): a webhook is a claim, not a fact. Every
`charge.success` (and a payer's verify, and the janitor's look) makes us ask
Paystack's Verify Transaction, and only its answer moves money: SUCCESS posts
the capture (ESCROW -> GOAL) under a deterministic id, so a repeat is a replay;
an answer that disagrees with the payment (amount, currency) flags it and
moves nothing. Outcomes for goals are published once by their stable ids.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from services.common import ledger_client
from services.common.context import Principal
from services.common.errors import IdempotencyKeyReused
from services.common.idempotency import fingerprint
from services.common.ids import parse_id
from services.common.ledger_client import ESCROW, GOAL, PLATFORM_ENTITY
from services.payments import domain, store
from services.payments.domain import CAPTURED, EventResult, EventStatus, NotYetConfirmed, PaymentStatus
from services.payments.parts import Parts
from services.payments.store import Lease, Payment

log = logging.getLogger("gofund.payments")


class Charges:
    def __init__(
        self,
        parts: Parts,
        *,
        default_callback_url: str,
    ) -> None:
        self._parts = parts
        self._default_callback_url = default_callback_url

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
        payment = await self._parts.records.payment(payment_id)
        if payment is not None and payment.fingerprint != terms:
            raise self._contribution_reused(contribution_id)  # refused before the key is stored
        await self._parts.records.claim_key(f"initialize:{idempotency_key}", terms, payment_id)
        if payment is None:
            payment = await self._parts.records.create_payment(
                payment_id=payment_id,
                reference=domain.payment_reference(payment_id),
                user_id=user_id,
                goal_id=goal_id,
                contribution_id=contribution_id,
                amount=amount,
                currency=currency,
                fingerprint=terms,
                idempotency_key=idempotency_key,
                email=await self._parts.peers.payer_email(user_id),
                callback_url=callback_url or self._default_callback_url,
                metadata=metadata,
                first_check_after=self._parts.first_check_after,
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
            payment = await self._parts.leases.ask_once(
                store.checkout_lease(payment.payment_id),
                reload=partial(self._parts.records.get_payment, payment.payment_id),
                ask=self._initialize_at_paystack,
                answered=lambda p: p.authorization_url,
            )
        return payment

    async def _initialize_at_paystack(self, payment: Payment, lease: Lease, budget: float) -> Payment:
        try:
            checkout = await self._parts.paystack.initialize(
                email=payment.email,
                amount=payment.amount,
                currency=payment.currency,
                reference=payment.reference,
                callback_url=payment.callback_url,
                metadata={
                    **payment.metadata,
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
                moved = await self._parts.records.next_reference(
                    lease, payment.reference, domain.payment_reference(payment.payment_id, attempt), attempt
                )
                return moved or await self._parts.records.get_payment(payment.payment_id)
            await self._parts.records.release(lease)
            raise
        except domain.PaystackUnavailable:
            # Perhaps it reached Paystack: a retry then meets our reference and moves on.
            await self._parts.records.release(lease)
            raise
        stored = await self._parts.records.record_checkout(
            lease, checkout.authorization_url, checkout.access_code, checkout.data
        )
        # Lost the lease (it ran out mid-call and another caller took over): theirs stands.
        return stored or await self._parts.records.get_payment(payment.payment_id)

    # -- reads for the payer ------------------------------------------------------------
    async def payer_payment(self, principal: Principal | None, payment_id: str) -> Payment:
        """The payment if the caller paid it; otherwise NOT_FOUND, so ids cannot be probed."""
        payment_id = parse_id(payment_id, "payment_id", "INVALID_PAYMENT_ID")
        payment = await self._parts.records.payment(payment_id)
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
        event_id = f"{domain.SETTLE_PAYMENT}:{payment.payment_id}"
        await self._parts.records.arm_event(event_id, domain.SETTLE_PAYMENT, {"payment_id": payment.payment_id})
        settled = await self.settle(payment, confirmed_by_event=False, notify=False)
        self._parts.wake_processor(event_id)
        return settled

    # -- settlement --------------------------------------------------------------------------
    async def settle_event(self, data: Mapping[str, Any]) -> EventResult:
        """charge.success: a claim that makes us verify the charge."""
        reference = str(data.get("reference") or "")
        payment = await self._parts.records.payment_by_reference(reference)
        if payment is None:
            return EventResult(EventStatus.PROCESSED, f"no payment with reference {reference!r}; nothing to do")
        if payment.status in (PaymentStatus.FAILED, PaymentStatus.ABANDONED) and not payment.flagged:
            await self.flag(payment, f"Paystack reports a charge on a {payment.status} payment", data)
            return EventResult(EventStatus.PROCESSED, "charge on a closed payment; flagged for an operator")
        settled = await self.settle(payment, confirmed_by_event=True, reference=reference)
        return EventResult(EventStatus.PROCESSED, "flagged: " + settled.flag_reason if settled.flagged else "")

    async def settle(
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
            charge = await self._parts.paystack.verify(
                reference or payment.reference, timeout_s=self._parts.leases.budget()
            )
            verdict = domain.judge_verification(
                charge.status, charge.amount, charge.currency, payment.amount, payment.currency
            )
            if verdict.mismatch:
                log.warning("payment flagged", extra={"payment_id": payment.payment_id, "reason": verdict.mismatch})
                return await self.flag(payment, verdict.mismatch, charge.data)
            moved = None
            if verdict.status is PaymentStatus.SUCCESS:
                await self._post_capture(payment)
                posted = True
                paid_at = _parse_time(charge.paid_at) or store.now()
                moved = await self._parts.records.mark_captured(payment.payment_id, paid_at, charge.data)
            elif verdict.status is PaymentStatus.FAILED:
                reason = charge.gateway_response or charge.status
                moved = await self._parts.records.mark_failed(payment.payment_id, reason, charge.data)
            elif confirmed_by_event:
                raise NotYetConfirmed(f"Paystack's verify reports {charge.status!r} for a charge.success")
            elif domain.given_up(charge.status, payment.created_at, abandon_before):
                moved = await self._parts.records.mark_abandoned(
                    payment.payment_id, "abandoned at checkout", charge.data
                )
            # Not moved: still pending, or another caller moved it first; either way, as it stands now.
            payment = moved or await self._parts.records.get_payment(payment.payment_id)
            if posted and payment.status not in CAPTURED and not payment.flagged:
                # Paid at Paystack and captured, while the janitor gave the payment up (or it
                # failed): the money is in the goal's account and no contribution counts it.
                log.error("payment captured after it was given up", extra={"payment_id": payment.payment_id})
                return await self.flag(payment, f"captured after it was {payment.status.lower()}", charge.data)
        if payment.flagged or not notify:
            return payment
        if payment.status in CAPTURED:
            if not posted:
                await self._post_capture(payment)  # a replay when it is already written
            await self._parts.outcomes.contribution_paid(payment)
        elif payment.status is PaymentStatus.FAILED:
            await self._parts.outcomes.contribution_payment_failed(payment, "payment failed")
        elif payment.status is PaymentStatus.ABANDONED:
            await self._parts.outcomes.contribution_payment_failed(payment, "abandoned at checkout")
        return payment

    async def abandon(self, payment: Payment, reason: str) -> Payment:
        """Give up a checkout that can no longer be paid: ABANDONED, and its contribution fails."""
        moved = await self._parts.records.mark_abandoned(payment.payment_id, reason)
        payment = moved or await self._parts.records.get_payment(payment.payment_id)
        if payment.status is PaymentStatus.ABANDONED:
            await self._parts.outcomes.contribution_payment_failed(payment, reason)
        return payment

    async def _post_capture(self, payment: Payment) -> None:
        escrow = await self._parts.peers.ledger.account(ESCROW, PLATFORM_ENTITY, payment.currency)
        goal = await self._parts.peers.ledger.account(GOAL, payment.goal_id, payment.currency)
        await self._parts.peers.ledger.post(
            domain.capture_transaction_id(payment.payment_id),
            ledger_client.transfer(debit=escrow, credit=goal, amount=payment.amount),
            payment.currency,
            "contribution captured by Paystack",
            payment_metadata(payment),
        )

    async def flag(self, payment: Payment, reason: str, paystack_data: Mapping[str, Any]) -> Payment:
        """Paystack's answer disagrees with the payment: flagged for an operator, nothing moves."""
        return await self._parts.records.flag_payment(payment.payment_id, reason, paystack_data) or payment


def payment_metadata(payment: Payment) -> dict[str, str]:
    """What the ledger records with a payment's transactions."""
    return {
        "payment_id": payment.payment_id,
        "goal_id": payment.goal_id,
        "contribution_id": payment.contribution_id,
        "reference": payment.reference,
    }


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
