"""Webhook intake and the processor's work: store an event, then apply it (or a step the
service gave its own outbox) with the flow it belongs to.

An event is checked (its signature), stored once (by its derived id) and
acknowledged; the processor applies it later, as often as it takes: every
step is the flow's own idempotent one, so a repeat is harmless. The janitor's
looks at open payments and payouts arrive the same way, as outbox entries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from services.common.auth import require_permission
from services.common.context import Principal
from services.payments import domain
from services.payments.charges import Charges
from services.payments.domain import ADMIN_PERMISSION, EventResult, EventStatus, PaymentStatus
from services.payments.payouts import Payouts
from services.payments.refunds import Refunds
from services.payments.store import Payment, PaymentsStore, Payout, WebhookEvent

log = logging.getLogger("gofund.payments")


class Webhooks:
    def __init__(
        self,
        records: PaymentsStore,
        charges: Charges,
        refunds: Refunds,
        payouts: Payouts,
        *,
        secret_key: str,
        wake_processor: Callable[[str | None], None],
    ) -> None:
        self._records = records
        self._charges = charges
        self._refunds = refunds
        self._payouts = payouts
        self._secret_key = secret_key
        self._wake_processor = wake_processor

    # -- intake ----------------------------------------------------------------------------------
    async def receive(self, body: bytes, signature: str) -> bool:
        """Check, store, acknowledge. True if the event is new (False: a duplicate delivery)."""
        if not domain.signature_valid(self._secret_key, body, signature):
            raise domain.InvalidSignature("the x-paystack-signature header does not sign this body")
        parsed = domain.parse_event(body)
        status = EventStatus.PENDING if parsed.handled else EventStatus.IGNORED
        try:
            new = await self._records.insert_event(
                parsed.event_id, parsed.event, body.decode("utf-8", "replace"), parsed.data, status
            )
        except Exception as exc:
            log.warning("webhook event not stored", extra={"event_id": parsed.event_id, "error": str(exc)[:300]})
            raise domain.EventStoreUnavailable(
                "the event could not be stored; Paystack will deliver it again"
            ) from None
        if new and parsed.handled:
            self._wake_processor(parsed.event_id)
        log.info(
            "webhook received",
            extra={"event_id": parsed.event_id, "event": parsed.event, "duplicate": not new, "status": str(status)},
        )
        return new

    # -- processing (the processor calls this; safe to repeat) -----------------------------------
    async def process(self, event: str, data: Mapping[str, Any]) -> EventResult:
        """Apply one stored event."""
        if event == "charge.success":
            return await self._charges.settle_event(data)
        if event.startswith("refund."):
            return await self._refunds.settle_event(event, data)
        if event.startswith("transfer."):
            return await self._payouts.settle_event(event, data)
        # Work the service gave its own outbox.
        if event == domain.SETTLE_PAYMENT:
            payment = await self._records.get_payment(str(data["payment_id"]))
            await self._charges.settle(payment, confirmed_by_event=False)
        elif event == domain.CHECK_PAYMENT:
            abandon_before = datetime.fromisoformat(str(data["abandon_before"]))
            await self.check_payment(await self._records.get_payment(str(data["payment_id"])), abandon_before)
        elif event == domain.CHECK_PAYOUT:
            await self.check_payout(await self._records.get_payout(str(data["payout_id"])))
        elif event == domain.PAYOUT_REJECTED:
            await self._payouts.rejected(str(data["payout_id"]), str(data.get("reason") or ""))
        else:
            raise domain.MalformedEvent(f"no handler for {event!r}")
        return EventResult(EventStatus.PROCESSED)

    # -- the janitor's checks --------------------------------------------------------------------
    async def check_payment(self, payment: Payment, abandon_before: datetime) -> None:
        """Settle an open payment, or its refund, as Paystack reports it now (see janitor).

        Every step is the webhook's own and publishes its outcome, so a check repeated
        after a failure part-way (the ledger down) finishes what the first one began.
        """
        if payment.status in (PaymentStatus.REFUND_PENDING, PaymentStatus.REFUNDED):
            refund = payment.refund
            if refund is not None and refund.reserved and refund.requested:
                await self._refunds.review(payment)  # settles it, and publishes its outcome
            else:
                await self._refunds.carry_on(payment)
            return
        if payment.status is not PaymentStatus.PENDING or payment.flagged:
            await self._charges.settle(payment, confirmed_by_event=False)  # settled: its outcome is published (once)
            return
        if not payment.authorization_url:
            # Never initialized at Paystack (every attempt failed and the payer gave up):
            # it cannot be paid, so once the window is over it is abandoned.
            if payment.created_at <= abandon_before:
                await self._charges.abandon(payment, "never initialized at Paystack")
            return
        try:
            await self._charges.settle(payment, confirmed_by_event=False, abandon_before=abandon_before)
        except domain.PaystackRejected as exc:
            if not domain.reference_not_found(exc):
                raise
            if payment.created_at <= abandon_before:
                await self._charges.abandon(payment, "Paystack does not know the reference")

    async def check_payout(self, payout: Payout) -> None:
        """Carry on an open payout, or settle it as Verify Transfer reports it (see janitor)."""
        if payout.flagged:
            return
        if not payout.requested:
            await self._payouts.carry_on(payout)
        else:
            await self._payouts.review(payout)

    # -- operators ---------------------------------------------------------------------------------
    async def events(
        self, principal: Principal | None, status: EventStatus | None, before: tuple[datetime, str] | None, limit: int
    ) -> list[WebhookEvent]:
        require_permission(principal, ADMIN_PERMISSION)
        return await self._records.list_events(status, before, limit)

    async def retry(self, principal: Principal | None, event_id: str) -> WebhookEvent:
        require_permission(principal, ADMIN_PERMISSION)
        event = await self._records.unpark_event(event_id) or await self._records.event(event_id)
        if event is None:
            raise domain.WebhookEventNotFound(f"no webhook event {event_id}", metadata={"event_id": event_id})
        if event.status is EventStatus.IGNORED:
            raise domain.WebhookEventIgnored(
                "an ignored event type is never processed", metadata={"event_id": event_id}
            )
        if event.status is EventStatus.PENDING:
            self._wake_processor(event_id)
        return event
