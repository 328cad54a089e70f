"""Refunds: a captured payment's money back to its payer.

Money safety (DESIGN.md section 10): the refund is reserved in the ledger
(GOAL -> ESCROW, pending) before Paystack is asked; a reservation the ledger
refuses (the money is not in the goal's account: released, or reserved for
another refund) means Paystack is never asked. Only Paystack's list of the
charge's refunds settles ours: `processed` posts the reservation, `failed`
voids it, once (the ledger refuses a second resolution). A refund Paystack
holds that we never asked for (the dashboard, a partial one) is recorded and
flags the payment, never settling ours.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

from services.common.errors import Validator
from services.common.idempotency import fingerprint
from services.common.ids import parse_id
from services.common.ledger_client import ESCROW, GOAL, PLATFORM_ENTITY
from services.payments import domain, store
from services.payments.charges import Charges, payment_metadata
from services.payments.domain import UNDECIDED, EventResult, EventStatus, NotYetConfirmed, PaymentStatus
from services.payments.parts import Parts
from services.payments.paystack import Refund
from services.payments.store import Lease, Payment, RefundRequest

log = logging.getLogger("gofund.payments")


class Refunds:
    def __init__(
        self,
        parts: Parts,
        *,
        charges: Charges,
    ) -> None:
        self._parts = parts
        self._charges = charges

    # -- RefundPayment ---------------------------------------------------------------------
    async def refund(self, payment_id: str, refund_id: str, reason: str) -> Payment:
        payment_id = parse_id(payment_id, "payment_id", "INVALID_PAYMENT_ID")
        check = Validator()
        domain.check_key(check, refund_id, "refund_id", "INVALID_REFUND_ID")
        check.raise_if_invalid()
        await self._parts.records.claim_key(f"refund:{refund_id}", fingerprint({"payment": payment_id}), payment_id)
        while True:
            payment = await self._parts.records.get_payment(payment_id)
            current = payment.refund
            if current is not None and current.refund_id == refund_id:
                break
            if refund_id in payment.failed_refund_ids:
                return payment  # that refund failed at Paystack; the caller retries under a new id
            if payment.status is not PaymentStatus.SUCCESS or payment.flagged:
                raise domain.PaymentNotRefundable(
                    f"a {payment.status.lower().replace('_', ' ')} payment cannot be refunded"
                    + (" under another refund id" if current else ""),
                    metadata={"payment_id": payment_id, "status": str(payment.status)},
                )
            started = await self._parts.records.start_refund(
                payment_id,
                refund_id=refund_id,
                key=domain.refund_key(payment_id, refund_id),
                amount=payment.amount,
                reason=reason,
                first_check_after=self._parts.first_check_after,
            )
            if started is not None:
                payment = started
                break
        return await self.carry_on(payment)

    async def carry_on(self, payment: Payment) -> Payment:
        """Reserve the refund in the ledger, then ask Paystack for it once (a refund just
        started, or one the janitor finds not yet requested)."""
        while True:
            refund = payment.refund
            if refund is None or refund.requested or payment.status is not PaymentStatus.REFUND_PENDING:
                return payment
            if not refund.reserved:
                payment = await self._reserve(payment, refund)
                continue
            payment = await self._parts.leases.ask_once(
                store.refund_lease(payment.payment_id, refund.refund_id),
                reload=partial(self._parts.records.get_payment, payment.payment_id),
                ask=partial(self._refund_at_paystack, refund_id=refund.refund_id),
                answered=lambda p: p.refund is not None and p.refund.requested,
            )

    async def _reserve(self, payment: Payment, refund: RefundRequest) -> Payment:
        """GOAL -> ESCROW, pending: the money is spoken for before Paystack is asked.

        If the ledger refuses, the money is not in the goal's account (released, or
        reserved for another refund): the refund is dropped before it reaches
        Paystack, the payment is SUCCESS again, and the caller is told why.
        """
        escrow = await self._parts.peers.ledger.account(ESCROW, PLATFORM_ENTITY, payment.currency)
        goal = await self._parts.peers.ledger.account(GOAL, payment.goal_id, payment.currency)
        try:
            await self._parts.peers.reserve(
                domain.refund_reserve_id(refund.key),
                debit=goal,
                credit=escrow,
                amount=refund.amount,
                currency=payment.currency,
                description="refund reserved before Paystack is asked",
                metadata={**payment_metadata(payment), "refund_id": refund.refund_id},
            )
        except domain.OutflowRefused:
            log.error(
                "the ledger refused a refund's reservation; Paystack is not asked",
                extra={"payment_id": payment.payment_id, "refund_id": refund.refund_id},
            )
            await self._parts.records.drop_refund(payment.payment_id, refund.refund_id)
            raise
        reserved = await self._parts.records.mark_refund_reserved(payment.payment_id, refund.refund_id)
        return reserved or await self._parts.records.get_payment(payment.payment_id)

    async def _refund_at_paystack(self, payment: Payment, lease: Lease, budget: float, *, refund_id: str) -> Payment:
        refund = payment.refund
        if refund is None or refund.requested or refund.refund_id != refund_id:
            # Asked (or dropped) before the lease was ours.
            await self._parts.records.release(lease)
            return payment
        try:
            answer = await self._parts.paystack.refund(
                transaction=payment.reference,
                amount=refund.amount,
                merchant_note=refund.reason or "GoFund refund",
                timeout_s=budget,
            )
        except domain.PaystackRejected as exc:
            if not domain.already_refunded(exc.message):
                await self._parts.records.release(lease)
                raise
            # Paystack holds a refund for all of it: our earlier attempt, whose
            # answer was lost. Reviewing the charge's refunds finds and settles it.
            answer = Refund(id="", status="pending", data={"paystack_message": exc.message})
        except domain.PaystackUnavailable:
            await self._parts.records.release(lease)
            raise
        stored = await self._parts.records.record_refund_requested(lease, answer.id, answer.data)
        return stored or await self._parts.records.get_payment(payment.payment_id)

    # -- settlement --------------------------------------------------------------------------
    async def settle_event(self, event: str, data: Mapping[str, Any]) -> EventResult:
        """refund.processed / refund.failed: a claim that makes us look at Paystack's refunds
        of the charge. Only Paystack's answer moves money; a claim it does not bear out is FLAGGED."""
        reference = _refund_transaction_reference(data)
        payment = await self._parts.records.payment_by_reference(reference) if reference else None
        if payment is None:
            return EventResult(EventStatus.PROCESSED, f"no payment with reference {reference!r}; nothing to do")
        found = await self.review(payment)
        claimed = "processed" if event == "refund.processed" else "failed"
        if any(r.status == claimed for r in found):
            return EventResult(EventStatus.PROCESSED)
        if any(r.status in UNDECIDED for r in found):
            raise NotYetConfirmed(f"Paystack has not decided the refund this {event} reports")
        log.warning("webhook not borne out by Paystack", extra={"payment_id": payment.payment_id, "event": event})
        return EventResult(EventStatus.FLAGGED, f"Paystack holds no {claimed} refund of this charge; nothing moved")

    async def review(self, payment: Payment) -> list[Refund]:
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
        found = [r async for r in self._parts.paystack.refunds(charge_id)] if charge_id else []
        refund = payment.refund
        known = {*payment.failed_paystack_refund_ids, *payment.foreign_refund_ids}
        ours = None
        if refund is not None:
            ours = next((r for r in found if r.id and r.id == refund.paystack_refund_id), None)
            if ours is None and refund.requested and not refund.paystack_refund_id:
                unknown = [r for r in found if r.id not in known and r.amount == refund.amount]
                if len(unknown) == 1:  # our request reached Paystack; its answer did not reach us
                    ours = unknown[0]
                    adopted = await self._parts.records.adopt_paystack_refund(
                        payment.payment_id, refund.refund_id, ours.id
                    )
                    payment = adopted or payment
        # A refund of the charge we do not know that failed moved no money: nothing to flag.
        foreign = [r for r in found if r is not ours and r.id not in known and r.status != "failed"]
        if foreign and refund is not None and refund.reserved and not refund.requested:
            # Our request may be on its way to Paystack (or its answer on its way back):
            # a refund of the charge we do not know yet may be ours. Look again later.
            raise NotYetConfirmed("a refund of ours may still be being asked of Paystack")
        if foreign:
            payment = await self._record_foreign(payment, foreign)
        if refund is not None and ours is not None and payment.status is not PaymentStatus.SUCCESS:
            if ours.status == "processed":
                if (ours.amount, ours.currency) != (refund.amount, payment.currency):
                    await self._charges.flag(
                        payment,
                        f"Paystack processed refund {ours.id} for {ours.amount} {ours.currency}; "
                        f"we asked for {refund.amount} {payment.currency}",
                        ours.data,
                    )
                else:
                    await self._processed(payment, refund, ours)
            elif ours.status == "failed":
                await self._failed(payment, refund, ours)
        return found

    async def _charge_id(self, payment: Payment) -> str:
        """The charge's Paystack id, as its verify reported it (asked again if we never stored it)."""
        stored = (payment.verification or {}).get("id")
        if stored not in (None, ""):
            return str(stored)
        charge = await self._parts.paystack.verify(payment.reference)
        return str(charge.data.get("id") or "")

    async def _record_foreign(self, payment: Payment, refunds: list[Refund]) -> Payment:
        entries = [{"id": r.id, "amount": r.amount, "currency": r.currency, "status": r.status} for r in refunds]
        described = ", ".join(f"{r.id} ({r.amount} {r.currency}, {r.status})" for r in refunds)
        log.warning(
            "Paystack holds a refund we did not ask for; the payment is flagged",
            extra={"payment_id": payment.payment_id, "refunds": described},
        )
        reason = f"Paystack holds refunds we did not ask for: {described}"
        return await self._parts.records.record_foreign_refunds(payment.payment_id, entries, reason) or payment

    async def _processed(self, payment: Payment, refund: RefundRequest, answer: Refund) -> None:
        await self._parts.peers.ledger.post_reserved(
            domain.refund_settle_id(refund.key),
            domain.refund_reserve_id(refund.key),
            "contribution refunded to the payer by Paystack",
            {**payment_metadata(payment), "refund_id": refund.refund_id, "paystack_refund_id": answer.id},
        )
        await self._parts.records.mark_refunded(payment.payment_id, refund.refund_id, answer.data)
        await self._parts.outcomes.contribution_refunded(payment, refund.refund_id)

    async def _failed(self, payment: Payment, refund: RefundRequest, answer: Refund) -> None:
        await self._parts.peers.ledger.void_reserved(
            domain.refund_void_id(refund.key),
            domain.refund_reserve_id(refund.key),
            "refund failed at Paystack; the money stays with the goal",
            {**payment_metadata(payment), "refund_id": refund.refund_id, "paystack_refund_id": answer.id},
        )
        await self._parts.records.fail_refund(payment.payment_id, refund.refund_id, answer.data)
        reason = str(answer.data.get("reason") or answer.data.get("status") or "refund failed at Paystack")
        await self._parts.outcomes.contribution_refund_failed(payment, refund.refund_id, reason)


def _refund_transaction_reference(data: Mapping[str, Any]) -> str:
    """The charge a refund event is about: `transaction_reference`, or the nested transaction."""
    reference = data.get("transaction_reference")
    if not reference and isinstance(data.get("transaction"), dict):
        reference = data["transaction"].get("reference")
    return str(reference or "")
