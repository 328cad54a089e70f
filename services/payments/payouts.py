"""Payouts: a released goal's money to its owner's bank, and the recipients it goes to.

Money safety (DESIGN.md section 10): the payout is reserved in the ledger
(USER -> ESCROW, pending) before Paystack is asked for the transfer; a
reservation the ledger refuses (the owner's account does not hold it: paid out
already, or on its way) means Paystack is never asked. Only Paystack's Verify
Transfer settles it: success posts the reservation, failure voids it, a
reversal posts it and puts the money back in the owner's account.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Mapping
from functools import partial
from typing import Any

from services.common import ledger_client
from services.common.context import Principal
from services.common.errors import IdempotencyKeyReused, LoginRequired, Validator
from services.common.idempotency import fingerprint
from services.common.ids import parse_id
from services.common.ledger_client import ESCROW, PLATFORM_ENTITY, USER
from services.payments import domain, store
from services.payments.domain import (
    TRANSFER_SETTLES,
    UNDECIDED,
    EventResult,
    EventStatus,
    Move,
    NotYetConfirmed,
    PayoutStatus,
)
from services.payments.parts import Parts
from services.payments.paystack import Bank, Transfer
from services.payments.store import Lease, Payout, Recipient

log = logging.getLogger("gofund.payments")

# Paystack's bank list changes rarely; a bank picker need not ask it more than hourly per currency.
BANKS_TTL_S = 3600.0


class Payouts:
    def __init__(
        self,
        parts: Parts,
        *,
        secret_key: str,
    ) -> None:
        self._parts = parts
        self._secret_key = secret_key
        self._banks: dict[str, tuple[float, list[Bank]]] = {}  # by currency: (read at, monotonic s; banks)

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
        replayed = await self._parts.records.keyed_resource(key, terms)
        existing = await self._parts.records.recipient(replayed) if replayed is not None else None
        if existing is not None:
            return existing
        # Resolved before anything is stored: an account no bank holds leaves no trace.
        account_name = ""
        if currency in domain.RESOLVED_CURRENCIES:
            resolved = await self._parts.paystack.resolve_account(account_number=account_number, bank_code=bank_code)
            account_name = resolved.account_name
        # Registered at Paystack before the key is claimed, so a recipient Paystack
        # refuses leaves nothing stored either. Two concurrent first attempts may
        # both ask: Paystack answers the same recipient for the same account, the
        # first claim names the record, and the insert keeps only one.
        created = await self._parts.paystack.create_recipient(
            recipient_type=domain.RECIPIENT_TYPES[currency],
            name=name,
            account_number=account_number,
            bank_code=bank_code,
            currency=currency,
        )
        recipient_id = await self._parts.records.claim_key(key, terms, domain.new_id())
        details = {k: v for k, v in dict(created.data.get("details") or {}).items() if k != "account_number"}
        return await self._parts.records.create_recipient(
            recipient_id=recipient_id,
            user_id=principal.user_id,
            name=name,
            account_number_last4=account_number[-4:],
            bank_code=bank_code,
            currency=currency,
            recipient_code=created.recipient_code,
            account_name=account_name or str(details.get("account_name") or ""),
            bank_name=str(details.get("bank_name") or ""),
            details=details,
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
        banks = await self._parts.paystack.banks(currency)
        self._banks[currency] = (now_s, banks)
        return banks

    # -- CreatePayout ---------------------------------------------------------------------------------
    async def create_payout(
        self, *, payout_id: str, goal_id: str, user_id: str, amount: int, currency: str, reason: str
    ) -> Payout:
        domain.validate_payout(
            payout_id=payout_id, goal_id=goal_id, user_id=user_id, amount=amount, currency=currency, reason=reason
        )
        payout_id, goal_id, user_id = (str(uuid.UUID(v)) for v in (payout_id, goal_id, user_id))
        terms = fingerprint({"goal": goal_id, "user": user_id, "amount": amount, "currency": currency})
        payout = await self._parts.records.payout(payout_id)
        if payout is None:
            recipient = await self._parts.records.current_recipient(user_id, currency)
            if recipient is None:
                raise domain.NoPayoutRecipient(
                    f"the user has no payout recipient in {currency}",
                    metadata={"user_id": user_id, "currency": currency},
                )
            payout = await self._parts.records.create_payout(
                payout_id=payout_id,
                goal_id=goal_id,
                user_id=user_id,
                recipient=recipient,
                amount=amount,
                currency=currency,
                reason=reason,
                fingerprint=terms,
                reference=domain.payout_reference(payout_id),
                first_check_after=self._parts.first_check_after,
            )
        if payout.fingerprint != terms:
            raise IdempotencyKeyReused(
                "this payout id was used with a different goal, user, amount or currency",
                metadata={"payout_id": payout_id},
            )
        return await self.carry_on(payout)

    async def payout(self, payout_id: str) -> Payout:
        return await self._parts.records.get_payout(parse_id(payout_id, "payout_id", "INVALID_PAYOUT_ID"))

    async def carry_on(self, payout: Payout) -> Payout:
        """Reserve the payout in the ledger, then ask Paystack for the transfer once, however
        many callers ask at once (a payout just created, or one the janitor finds not yet
        requested)."""
        while not payout.requested and payout.status is PayoutStatus.PENDING:
            if not payout.reserved:
                try:
                    payout = await self._reserve(payout)
                except domain.OutflowRefused as exc:
                    # The owner's account does not hold it (paid out already, or on its
                    # way): never asked of Paystack; published FAILED as for a refusal.
                    log.error("the ledger refused a payout's reservation", extra={"payout_id": payout.payout_id})
                    return await self._refuse(payout, exc.message)
                continue
            payout = await self._parts.leases.ask_once(
                store.transfer_lease(payout.payout_id),
                reload=partial(self._parts.records.get_payout, payout.payout_id),
                ask=self._transfer_at_paystack,
                answered=lambda p: p.requested,
            )
        return payout

    async def _reserve(self, payout: Payout) -> Payout:
        """USER -> ESCROW, pending: the money is spoken for before Paystack is asked."""
        user = await self._parts.peers.ledger.account(USER, payout.user_id, payout.currency)
        escrow = await self._parts.peers.ledger.account(ESCROW, PLATFORM_ENTITY, payout.currency)
        await self._parts.peers.reserve(
            domain.payout_reserve_id(payout.payout_id),
            debit=user,
            credit=escrow,
            amount=payout.amount,
            currency=payout.currency,
            description="payout reserved before Paystack is asked",
            metadata=payout_metadata(payout),
        )
        reserved = await self._parts.records.mark_payout_reserved(payout.payout_id)
        return reserved or await self._parts.records.get_payout(payout.payout_id)

    async def _transfer_at_paystack(self, payout: Payout, lease: Lease, budget: float) -> Payout:
        try:
            transfer = await self._parts.paystack.transfer(
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
                stored = await self._parts.records.record_transfer_requested(lease)
                return stored or await self._parts.records.get_payout(payout.payout_id)
            # Refused (an unusable recipient, say). But an earlier attempt whose answer was
            # lost may have reached Paystack and drained what this one would need: the payout
            # fails (and may be paid anew) only if Paystack holds no transfer under our reference.
            try:
                await self._parts.paystack.verify_transfer(payout.reference, timeout_s=self._parts.leases.budget())
            except domain.PaystackNotFound:
                await self._parts.records.release(lease)
                return await self._refuse(payout, exc.message)
            except domain.PaystackUnavailable:
                await self._parts.records.release(lease)
                raise
            stored = await self._parts.records.record_transfer_requested(lease)
            return stored or await self._parts.records.get_payout(payout.payout_id)
        except domain.PaystackUnavailable:
            # Perhaps it reached Paystack: a retry then meets our reference.
            await self._parts.records.release(lease)
            raise
        stored = await self._parts.records.record_transfer_requested(lease, transfer.transfer_code, transfer.data)
        return stored or await self._parts.records.get_payout(payout.payout_id)

    async def _refuse(self, payout: Payout, reason: str) -> Payout:
        """A payout that never reached Paystack fails now; its outcome is published as for
        transfer.failed, through the processor (so it retries under a new payout id)."""
        event_id = f"{domain.PAYOUT_REJECTED}:{payout.payout_id}"
        await self._parts.records.arm_event(
            event_id, domain.PAYOUT_REJECTED, {"payout_id": payout.payout_id, "reason": reason}
        )
        self._parts.wake_processor(event_id)
        return await self._reject(payout.payout_id, reason)

    async def _reject(self, payout_id: str, reason: str) -> Payout:
        moved = await self._parts.records.reject_payout(payout_id, reason)
        return moved or await self._parts.records.get_payout(payout_id)

    async def rejected(self, payout_id: str, reason: str) -> None:
        """A payout that never reached Paystack: FAILED, its reservation voided, the outcome
        published (the processor, from the entry `_refuse` armed)."""
        payout = await self._reject(payout_id, reason)
        if payout.status is not PayoutStatus.FAILED:
            return
        if payout.reserved:
            await self._parts.peers.ledger.void_reserved(
                domain.payout_void_id(payout.payout_id), domain.payout_reserve_id(payout.payout_id),
                "Paystack refused the transfer; the money stays the owner's", payout_metadata(payout),
            )  # fmt: skip
        await self._parts.outcomes.payout_settled(payout)

    # -- settlement --------------------------------------------------------------------------------------
    async def settle_event(self, event: str, data: Mapping[str, Any]) -> EventResult:
        """transfer.success / failed / reversed: a claim that makes us verify the transfer.
        Only Paystack's answer moves money; a claim it does not bear out is FLAGGED."""
        payout = await self._parts.records.payout_by_transfer(
            str(data.get("transfer_code") or ""), str(data.get("reference") or "")
        )
        if payout is None:
            return EventResult(EventStatus.PROCESSED, "no payout with this transfer code or reference; nothing to do")
        transfer = await self.review(payout)
        claimed = event.removeprefix("transfer.")
        if transfer is None:
            return EventResult(EventStatus.FLAGGED, "Paystack holds no transfer with our reference; nothing moved")
        if transfer.status == claimed or (claimed == "success" and transfer.status == "reversed"):
            return EventResult(EventStatus.PROCESSED)  # a reversal comes after a success: history, not a lie
        if transfer.status in UNDECIDED:
            raise NotYetConfirmed(f"Paystack's transfer is still {transfer.status!r}; the event says {claimed}")
        return EventResult(EventStatus.FLAGGED, f"the event says {claimed}, Paystack says {transfer.status!r}")

    async def review(self, payout: Payout) -> Transfer | None:
        """Settle the payout as Paystack's Verify Transfer reports it; None if Paystack holds no
        transfer with our reference. A transfer whose amount or currency is not ours flags the
        payout and moves nothing."""
        try:
            transfer = await self._parts.paystack.verify_transfer(payout.reference)
        except domain.PaystackNotFound:
            return None
        if (transfer.amount, transfer.currency) != (payout.amount, payout.currency):
            await self._parts.records.flag_payout(
                payout.payout_id,
                f"Paystack's transfer is {transfer.amount} {transfer.currency}, "
                f"the payout {payout.amount} {payout.currency}",
            )
            log.warning("payout flagged", extra={"payout_id": payout.payout_id})
            return transfer
        move = TRANSFER_SETTLES.get(transfer.status)
        if move is not None and not payout.flagged:
            await self._settled(payout, move, transfer)
        return transfer

    async def _settled(self, payout: Payout, move: Move[PayoutStatus], transfer: Transfer) -> None:
        """The status moves first (once), then the money: success posts the reservation,
        failure voids it, a reversal posts it and puts the money back in the owner's
        account. However a success and a reversal interleave, the ledger ends right:
        both post the reservation under one id."""
        target = move.target
        reason = transfer.data.get("reason_for_failure") or transfer.data.get("failures") or transfer.status
        moved = await self._parts.records.settle_payout(payout.payout_id, move, transfer.data, str(reason))
        payout = moved or await self._parts.records.get_payout(payout.payout_id)
        if payout.status is not target:
            if payout.status is PayoutStatus.FAILED and target is not PayoutStatus.FAILED and not payout.flagged:
                # Paystack sent money for a payout we had failed (and goals may have paid anew).
                log.error("Paystack sent a transfer for a failed payout", extra={"payout_id": payout.payout_id})
                await self._parts.records.flag_payout(
                    payout.payout_id, f"Paystack reports {transfer.status} for a payout we failed"
                )
            return  # settled otherwise (a success after its reversal...): nothing more to do
        metadata = payout_metadata(payout)
        if target is PayoutStatus.FAILED:
            await self._parts.peers.ledger.void_reserved(
                domain.payout_void_id(payout.payout_id), domain.payout_reserve_id(payout.payout_id),
                "payout failed at Paystack; the money stays the owner's", metadata,
            )  # fmt: skip
        else:
            await self._parts.peers.ledger.post_reserved(
                domain.payout_transaction_id(payout.payout_id), domain.payout_reserve_id(payout.payout_id),
                "payout sent to the owner's bank by Paystack", metadata,
            )  # fmt: skip
        if target is PayoutStatus.REVERSED:
            user = await self._parts.peers.ledger.account(USER, payout.user_id, payout.currency)
            escrow = await self._parts.peers.ledger.account(ESCROW, PLATFORM_ENTITY, payout.currency)
            await self._parts.peers.ledger.post(
                domain.payout_reversal_transaction_id(payout.payout_id),
                ledger_client.transfer(debit=escrow, credit=user, amount=payout.amount),
                payout.currency,
                "payout reversed by Paystack; the money is the owner's again",
                metadata,
            )
        await self._parts.outcomes.payout_settled(payout)


def payout_metadata(payout: Payout) -> dict[str, str]:
    """What the ledger records with a payout's transactions."""
    return {"payout_id": payout.payout_id, "goal_id": payout.goal_id, "user_id": payout.user_id}
