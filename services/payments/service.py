"""Payments use cases: initialize, refund, payout, recipients, webhook intake,
and settlement — what a Paystack event (or a payer's verify) does to our records.

Every money step has a deterministic ledger id and every step is safe to
repeat, so a crash anywhere is repaired by running the same step again:
- a charge's capture and a refund are posted to the ledger before the
  payment's status moves (a conditional update: it moves once);
- a payout's status moves first, then its postings; a reversed payout always
  gets both the transfer's posting and the reversal, so the ledger nets out
  however a success and a reversal interleave;
- then goals is told (its internal methods are idempotent).
What an RPC starts and must finish (a payer's verify, a transfer Paystack
refused) is handed to the processor as an outbox entry before it is done, so
goals hears of it even if the RPC is cut short.
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
from typing import Any

from gofund.goals.v1 import goals_pb2

from services.common import context
from services.common.auth import require_permission
from services.common.context import Principal
from services.common.errors import IdempotencyKeyReused, LoginRequired, Validator
from services.common.idempotency import fingerprint
from services.payments import domain, store
from services.payments.domain import (
    CAPTURED,
    EventStatus,
    PaymentStatus,
    PayoutStatus,
)
from services.payments.paystack import Paystack, Refund
from services.payments.peers import ESCROW, GOAL, PLATFORM, USER, PayoutOutcome, Peers
from services.payments.store import Payment, PaymentsStore, Payout, Recipient, WebhookEvent

log = logging.getLogger("gofund.payments")

ADMIN_PERMISSION = "payments:admin"
# How long a waiting replay polls for the lease holder's answer between looks.
LEASE_POLL_S = 0.05
_PAYOUT_OUTCOME: dict[PayoutStatus, PayoutOutcome] = {
    PayoutStatus.SUCCESS: goals_pb2.PAYOUT_OUTCOME_SUCCEEDED,
    PayoutStatus.FAILED: goals_pb2.PAYOUT_OUTCOME_FAILED,
    PayoutStatus.REVERSED: goals_pb2.PAYOUT_OUTCOME_REVERSED,
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
        *,
        secret_key: str,
        default_callback_url: str,
        paystack_timeout_s: float,
        wake_processor: Callable[[], None] = lambda: None,
    ) -> None:
        self.records = records
        self.paystack = paystack
        self.peers = peers
        self._secret_key = secret_key
        self._default_callback_url = default_callback_url
        # A lease outlives one Paystack call, so a holder is never overtaken mid-call.
        self._lease = timedelta(seconds=paystack_timeout_s + 5)
        self.wake_processor = wake_processor

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
        await self.records.claim_key(f"initialize:{idempotency_key}", terms, payment_id)
        payment = await self.records.payment(payment_id)
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
                }
            )
        if payment.fingerprint != terms:
            raise IdempotencyKeyReused(
                "this contribution already has a payment with a different amount, currency, goal or payer",
                metadata={"contribution_id": contribution_id},
            )
        return await self._ensure_checkout(payment)

    async def _ensure_checkout(self, payment: Payment) -> Payment:
        """Initialize the payment at Paystack once, however many callers ask at once."""
        while not payment.authorization_url and payment.status is PaymentStatus.PENDING:
            doc, token = await self.records.lease_checkout(payment.payment_id, self._lease)
            if doc is None:
                payment = await self._wait_for(self.records.payment, payment.payment_id, lambda p: p.authorization_url)
                continue
            payment = store.Payment.of(doc)
            payment = await self._initialize_at_paystack(payment, doc, token)
        return payment

    async def _initialize_at_paystack(self, payment: Payment, doc: Mapping[str, Any], token: str) -> Payment:
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
            )
        except domain.PaystackRejected as exc:
            if domain.duplicate_reference(exc.message):
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
        # Cancelled mid-call (the caller went away): the lease is kept until it runs out,
        # so nobody asks Paystack again while this call may still land there.
        stored = await self.records.update_payment(
            payment.payment_id,
            {"authorizationUrl": checkout.authorization_url, "accessCode": checkout.access_code,
             "paystackData": checkout.data},
            lease=lease,
            release_lease=True,
        )  # fmt: skip
        # Lost the lease (it ran out mid-call and another caller took over): theirs stands.
        return stored or await self._reload(payment.payment_id)

    async def _wait_for(self, load: Callable[[str], Awaitable[Any]], key: str, ready: Callable[[Any], object]) -> Any:
        """Poll until another lease holder has finished (or its lease ran out)."""
        give_up = time.monotonic() + self._lease.total_seconds()
        remaining = context.remaining_seconds()
        if remaining is not None:
            give_up = min(give_up, time.monotonic() + remaining)
        while True:
            await asyncio.sleep(LEASE_POLL_S)
            current = await load(key)
            if current is None or ready(current) or time.monotonic() >= give_up:
                return current

    async def _reload(self, payment_id: str) -> Payment:
        payment = await self.records.payment(payment_id)
        if payment is None:
            raise domain.PaymentNotFound(f"no payment {payment_id}", metadata={"payment_id": payment_id})
        return payment

    # -- reads for the payer ------------------------------------------------------------
    async def payer_payment(self, principal: Principal | None, payment_id: str) -> Payment:
        """The payment if the caller paid it; otherwise NOT_FOUND, so ids cannot be probed."""
        payment_id = domain.require_uuid(payment_id, "payment_id", "INVALID_PAYMENT_ID")
        payment = await self.records.payment(payment_id)
        if payment is None or principal is None or payment.user_id != principal.user_id:
            raise domain.PaymentNotFound(f"no payment {payment_id}", metadata={"payment_id": payment_id})
        return payment

    async def verify(self, principal: Principal | None, payment_id: str) -> Payment:
        """Ask Paystack now (a payer back from checkout before the webhook).

        The processor is given the payment first (an outbox entry), so goals is
        told how it ended even if this call is cut short; the answer here is the
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
        self, payment: Payment, *, confirmed_by_event: bool, notify: bool = True, reference: str = ""
    ) -> Payment:
        """Bring a payment in line with Paystack's verify, then finish what its status implies.

        `confirmed_by_event`: a signed `charge.success` says it was paid, so a
        verify that does not agree yet is retried later rather than ignored.
        `notify`: tell goals (the processor does; an RPC leaves it to the processor).
        `reference`: the one Paystack named, if not the payment's current one.
        """
        posted = False
        if payment.status is PaymentStatus.PENDING and not payment.flagged:
            charge = await self.paystack.verify(reference or payment.reference)
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
            # Not moved: still pending, or another caller moved it first; either way, as it stands now.
            payment = moved or await self._reload(payment.payment_id)
        if payment.flagged or not notify:
            return payment
        if payment.status in CAPTURED:
            if not posted:
                await self._post_capture(payment)  # a replay when it is already written
            await self.peers.confirm_contribution(
                payment.contribution_id, payment.payment_id, payment.amount, payment.currency, payment.paid_at
            )
        elif payment.status is PaymentStatus.FAILED:
            await self.peers.fail_contribution(payment.contribution_id, payment.payment_id, "payment failed")
        return payment

    async def _post_capture(self, payment: Payment) -> None:
        escrow = await self.peers.account(ESCROW, PLATFORM, payment.currency)
        goal = await self.peers.account(GOAL, payment.goal_id, payment.currency)
        await self.peers.transfer(
            domain.capture_transaction_id(payment.payment_id),
            debit=escrow,
            credit=goal,
            amount=payment.amount,
            currency=payment.currency,
            description="contribution captured by Paystack",
            metadata=_payment_metadata(payment),
        )

    async def _flag(self, payment: Payment, reason: str, paystack_data: Mapping[str, Any]) -> Payment:
        flagged = await self.records.update_payment(
            payment.payment_id, {"flagged": True, "flagReason": reason, "verification": dict(paystack_data)}
        )
        return flagged or payment

    # -- refunds -----------------------------------------------------------------------------
    async def refund(self, payment_id: str, refund_id: str, reason: str) -> Payment:
        payment_id = domain.require_uuid(payment_id, "payment_id", "INVALID_PAYMENT_ID")
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
            started = await self.records.update_payment(
                payment_id,
                {"status": str(PaymentStatus.REFUND_PENDING),
                 "refund": {"refundId": refund_id, "reason": reason[:500], "requested": False,
                            "createdAt": store.now()}},
                statuses=[PaymentStatus.SUCCESS],
            )  # fmt: skip
            if started is not None:
                payment = started
                break
        return await self._ensure_refund_requested(payment)

    async def _ensure_refund_requested(self, payment: Payment) -> Payment:
        while True:
            refund = payment.refund
            if not refund or refund.get("requested") or payment.status is not PaymentStatus.REFUND_PENDING:
                return payment
            doc, token = await self.records.lease_refund(payment.payment_id, refund["refundId"], self._lease)
            if doc is None:
                payment = await self._wait_for(
                    self.records.payment, payment.payment_id, lambda p: (p.refund or {}).get("requested")
                )
                continue
            lease = ("refundLease", token)
            try:
                answer = await self.paystack.refund(
                    transaction=payment.reference,
                    amount=payment.amount,
                    merchant_note=str(refund.get("reason") or "GoFund refund"),
                )
            except domain.PaystackRejected as exc:
                if not domain.already_refunded(exc.message):
                    await self.records.update_payment(payment.payment_id, {}, lease=lease, release_lease=True)
                    raise
                # Paystack holds a refund for all of it: our earlier attempt, whose
                # answer was lost. Its refund.* event settles the payment.
                answer = Refund(id="", status="pending", data={"paystack_message": exc.message})
            except domain.PaystackUnavailable:
                await self.records.update_payment(payment.payment_id, {}, lease=lease, release_lease=True)
                raise
            stored = await self.records.update_payment(
                payment.payment_id,
                {"refund.requested": True, "refund.paystackRefundId": answer.id, "refund.data": answer.data},
                lease=lease,
                release_lease=True,
            )  # fmt: skip
            payment = stored or await self._reload(payment.payment_id)

    async def settle_refund(self, event: str, data: Mapping[str, Any]) -> Outcome:
        reference = _refund_transaction_reference(data)
        payment = await self.records.payment_by_reference(reference) if reference else None
        if payment is None:
            return Outcome(EventStatus.PROCESSED, f"no payment with reference {reference!r}; nothing to do")
        if event == "refund.failed":
            ours = str((payment.refund or {}).get("paystackRefundId") or "")
            if ours and data.get("id") not in (None, "") and str(data.get("id")) != ours:
                return Outcome(EventStatus.PROCESSED, "refund.failed for an earlier refund; nothing to do")
            if await self.records.fail_refund(payment.payment_id, data):
                return Outcome(EventStatus.PROCESSED, "refund failed at Paystack; the payment can be refunded again")
            return Outcome(EventStatus.PROCESSED, f"refund.failed for a {payment.status} payment; nothing to do")
        # refund.processed: the money went back to the payer.
        if payment.status not in (PaymentStatus.REFUND_PENDING, PaymentStatus.SUCCESS, PaymentStatus.REFUNDED):
            await self._flag(payment, f"Paystack refunded a {payment.status} payment", data)
            return Outcome(EventStatus.PROCESSED, f"refund.processed for a {payment.status} payment; flagged")
        escrow = await self.peers.account(ESCROW, PLATFORM, payment.currency)
        goal = await self.peers.account(GOAL, payment.goal_id, payment.currency)
        await self.peers.transfer(
            domain.refund_transaction_id(payment.payment_id),
            debit=goal,
            credit=escrow,
            amount=payment.amount,
            currency=payment.currency,
            description="contribution refunded to the payer by Paystack",
            metadata=_payment_metadata(payment),
        )
        await self.records.update_payment(
            payment.payment_id,
            {"status": str(PaymentStatus.REFUNDED), "refundedAt": store.now(), "refundData": dict(data)},
            statuses=[PaymentStatus.REFUND_PENDING, PaymentStatus.SUCCESS],
        )
        await self.peers.contribution_refunded(payment.contribution_id, payment.payment_id)
        return Outcome(EventStatus.PROCESSED)

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
        recipient_id = await self.records.claim_key(
            f"recipient:{principal.user_id}:{idempotency_key}", terms, domain.new_id()
        )
        existing = await self.records.recipient(recipient_id)
        if existing is not None:
            return existing
        # Two concurrent first attempts may both ask Paystack: it answers with
        # the same recipient for the same account, and only one record is kept.
        created = await self.paystack.create_recipient(
            recipient_type=domain.RECIPIENT_TYPES[currency],
            name=name,
            account_number=account_number,
            bank_code=bank_code,
            currency=currency,
        )
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
                "details": details,
                "createdAt": store.now(),
            }
        )

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
                    "failureReason": "",
                    "createdAt": stamp,
                    "updatedAt": stamp,
                }
            )
        if payout.fingerprint != terms:
            raise IdempotencyKeyReused(
                "this payout id was used with a different goal, user, amount or currency",
                metadata={"payout_id": payout_id},
            )
        return await self._ensure_transfer(payout)

    async def _ensure_transfer(self, payout: Payout) -> Payout:
        """Ask Paystack for the transfer once, however many callers ask at once."""
        while not payout.requested and payout.status is PayoutStatus.PENDING:
            doc, token = await self.records.lease_transfer(payout.payout_id, self._lease)
            if doc is None:
                payout = await self._wait_for(self.records.payout, payout.payout_id, lambda p: p.requested)
                continue
            lease = ("transferLease", token)
            try:
                transfer = await self.paystack.transfer(
                    amount=payout.amount,
                    recipient_code=payout.recipient_code,
                    reason=payout.reason or "GoFund payout",
                    currency=payout.currency,
                    reference=payout.reference,
                )
            except domain.PaystackRejected as exc:
                if domain.duplicate_reference(exc.message):
                    # An earlier attempt reached Paystack (its answer was lost).
                    # Its events carry our reference, which is how they find the payout.
                    stored = await self.records.update_payout(
                        payout.payout_id, {"requested": True}, lease=lease, release_lease=True
                    )
                    payout = stored or await self._payout(payout.payout_id)
                    continue
                # Refused outright (an unusable recipient, say): the payout fails now,
                # and goals hears it as it hears transfer.failed, through the
                # processor, so it retries under a new payout id (and recipient).
                await self.records.arm_event(
                    f"{domain.PAYOUT_REJECTED}:{payout.payout_id}", domain.PAYOUT_REJECTED,
                    {"payout_id": payout.payout_id, "reason": exc.message},
                )  # fmt: skip
                self.wake_processor()
                return await self._reject_payout(payout.payout_id, exc.message)
            except domain.PaystackUnavailable:
                # Perhaps it reached Paystack: a retry then meets our reference.
                await self.records.update_payout(payout.payout_id, {}, lease=lease, release_lease=True)
                raise
            stored = await self.records.update_payout(
                payout.payout_id,
                {"requested": True, "transferCode": transfer.transfer_code, "transferData": transfer.data},
                lease=lease,
                release_lease=True,
            )  # fmt: skip
            payout = stored or await self._payout(payout.payout_id)
        return payout

    async def _reject_payout(self, payout_id: str, reason: str) -> Payout:
        moved = await self.records.update_payout(
            payout_id,
            {"status": str(PayoutStatus.FAILED), "failureReason": f"Paystack refused the transfer: {reason}"[:500]},
            statuses=[PayoutStatus.PENDING],
        )
        return moved or await self._payout(payout_id)

    async def _payout(self, payout_id: str) -> Payout:
        payout = await self.records.payout(payout_id)
        if payout is None:
            raise domain.PayoutNotFound(f"no payout {payout_id}", metadata={"payout_id": payout_id})
        return payout

    async def payout(self, payout_id: str) -> Payout:
        return await self._payout(domain.require_uuid(payout_id, "payout_id", "INVALID_PAYOUT_ID"))

    async def settle_transfer(self, event: str, data: Mapping[str, Any]) -> Outcome:
        """transfer.success / failed / reversed. The status moves first (once), then
        the money. A reversed payout always has both the transfer's posting and its
        reversal written (they net to nothing), so however a success and a
        reversal interleave, even processed at once, the ledger ends right."""
        payout = await self.records.payout_by_transfer(
            str(data.get("transfer_code") or ""), str(data.get("reference") or "")
        )
        if payout is None:
            return Outcome(EventStatus.PROCESSED, "no payout with this transfer code or reference; nothing to do")
        reason = str(data.get("reason_for_failure") or data.get("failures") or data.get("gateway_response") or "")
        target, sources = {
            "transfer.success": (PayoutStatus.SUCCESS, [PayoutStatus.PENDING]),
            "transfer.failed": (PayoutStatus.FAILED, [PayoutStatus.PENDING]),
            "transfer.reversed": (PayoutStatus.REVERSED, [PayoutStatus.PENDING, PayoutStatus.SUCCESS]),
        }[event]
        changes: dict[str, Any] = {"status": str(target)}
        if target is not PayoutStatus.SUCCESS:
            changes["failureReason"] = reason or event.replace(".", " ")
        moved = await self.records.update_payout(payout.payout_id, changes, statuses=sources)
        payout = moved or await self._payout(payout.payout_id)
        if payout.status is not target:
            return Outcome(EventStatus.PROCESSED, f"{event} for a {payout.status} payout; nothing to do")
        if target is PayoutStatus.SUCCESS:
            await self._post_payout(payout)
        elif target is PayoutStatus.REVERSED:
            await self._post_payout(payout)  # a replay if the success was processed
            user = await self.peers.account(USER, payout.user_id, payout.currency)
            escrow = await self.peers.account(ESCROW, PLATFORM, payout.currency)
            await self.peers.transfer(
                domain.payout_reversal_transaction_id(payout.payout_id),
                debit=escrow,
                credit=user,
                amount=payout.amount,
                currency=payout.currency,
                description="payout reversed by Paystack; the money is the owner's again",
                metadata=_payout_metadata(payout),
            )
        await self.peers.payout_result(
            payout.goal_id, payout.payout_id, _PAYOUT_OUTCOME[payout.status], payout.failure_reason
        )
        return Outcome(EventStatus.PROCESSED)

    async def _post_payout(self, payout: Payout) -> None:
        user = await self.peers.account(USER, payout.user_id, payout.currency)
        escrow = await self.peers.account(ESCROW, PLATFORM, payout.currency)
        await self.peers.transfer(
            domain.payout_transaction_id(payout.payout_id),
            debit=user,
            credit=escrow,
            amount=payout.amount,
            currency=payout.currency,
            description="payout sent to the owner's bank by Paystack",
            metadata=_payout_metadata(payout),
        )

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

    async def process(self, event: str, data: Mapping[str, Any]) -> Outcome:
        """Apply one stored event (the processor calls this; safe to repeat)."""
        if event == "charge.success":
            return await self.settle_charge_event(data)
        if event == domain.SETTLE_PAYMENT:
            await self.settle_charge(await self._reload(str(data["payment_id"])), confirmed_by_event=False)
            return Outcome(EventStatus.PROCESSED)
        if event == domain.PAYOUT_REJECTED:
            payout = await self._reject_payout(str(data["payout_id"]), str(data.get("reason") or ""))
            if payout.status is PayoutStatus.FAILED:
                await self.peers.payout_result(
                    payout.goal_id, payout.payout_id, _PAYOUT_OUTCOME[payout.status], payout.failure_reason
                )
            return Outcome(EventStatus.PROCESSED)
        if event.startswith("refund."):
            return await self.settle_refund(event, data)
        return await self.settle_transfer(event, data)

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


# -- reconciliation ------------------------------------------------------------------------
@dataclass(frozen=True)
class Mismatch:
    payment_id: str
    reference: str
    kind: str  # a MismatchKind name without its prefix: STATUS_DIFFERS, MISSING_IN_LEDGER ...
    detail: str


# Paystack's verify status for each of ours. A refunded charge reads `reversed`
# at Paystack once the refund completes (or still `success` while it settles).
_EXPECTED_AT_PAYSTACK: Mapping[PaymentStatus, frozenset[str]] = {
    PaymentStatus.PENDING: frozenset({"abandoned", "ongoing", "pending", "processing", "queued"}),
    PaymentStatus.SUCCESS: frozenset({"success"}),
    PaymentStatus.REFUND_PENDING: frozenset({"success", "reversed"}),
    PaymentStatus.REFUNDED: frozenset({"success", "reversed"}),
    PaymentStatus.FAILED: frozenset({"failed"}),
    PaymentStatus.ABANDONED: frozenset({"abandoned"}),
}
RECONCILE_CONCURRENCY = 8


class Reconciler:
    """Compares each payment with Paystack's verify and with the ledger; changes nothing."""

    def __init__(self, payments: Payments) -> None:
        self._payments = payments

    async def run(self, after: datetime | None, before: datetime | None) -> tuple[list[Mismatch], int]:
        found = await self._payments.records.payments_created(after, before)
        limit = asyncio.Semaphore(RECONCILE_CONCURRENCY)

        async def check(payment: Payment) -> list[Mismatch]:
            async with limit:
                return await self.check(payment)

        results = await asyncio.gather(*(check(p) for p in found))
        return [m for mismatches in results for m in mismatches], len(found)

    async def check(self, payment: Payment) -> list[Mismatch]:
        def mismatch(kind: str, detail: str) -> Mismatch:
            return Mismatch(payment.payment_id, payment.reference, kind, detail)

        out: list[Mismatch] = []
        if payment.flagged:
            out.append(mismatch("FLAGGED", payment.flag_reason))
        try:
            charge = await self._payments.paystack.verify(payment.reference)
        except domain.PaystackRejected as exc:
            if payment.status in CAPTURED:
                out.append(
                    mismatch("MISSING_AT_PAYSTACK", f"verify answered {exc.message!r} for a {payment.status} payment")
                )
        else:
            if charge.status not in _EXPECTED_AT_PAYSTACK[payment.status]:
                out.append(mismatch("STATUS_DIFFERS", f"ours {payment.status}, Paystack {charge.status!r}"))
            if charge.status in ("success", "reversed"):
                if charge.amount != payment.amount:
                    out.append(mismatch("AMOUNT_DIFFERS", f"ours {payment.amount}, Paystack {charge.amount}"))
                if charge.currency.upper() != payment.currency:
                    out.append(mismatch("CURRENCY_DIFFERS", f"ours {payment.currency}, Paystack {charge.currency}"))
        peers = self._payments.peers
        for transaction_id, expected, what in (
            (domain.capture_transaction_id(payment.payment_id), payment.status in CAPTURED, "capture"),
            (domain.refund_transaction_id(payment.payment_id), payment.status is PaymentStatus.REFUNDED, "refund"),
        ):
            present = await peers.transaction_exists(transaction_id)
            if expected and not present:
                out.append(mismatch("MISSING_IN_LEDGER", f"no {what} {transaction_id} for a {payment.status} payment"))
            elif present and not expected:
                out.append(mismatch("UNEXPECTED_IN_LEDGER", f"{what} {transaction_id} for a {payment.status} payment"))
        return out
