"""gRPC adapter for payments: proto in, use case, proto out. No rules, no MongoDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import grpc
from gofund.payments.v1 import payments_pb2, payments_service_pb2, payments_service_pb2_grpc

from services.common import paging
from services.common.auth import require_permission
from services.common.context import caller_or_none
from services.common.errors import ErrorMapping, ErrorTable, FieldViolation, ValidationFailed
from services.common.proto import optional_timestamp, timestamp
from services.common.resume import after_seq
from services.payments import domain
from services.payments.domain import ADMIN_PERMISSION, EventStatus
from services.payments.outcomes import PAYMENT_STATUS, PAYOUT_STATUS
from services.payments.reconcile import Reconciler, Report
from services.payments.store import Payment, Payout, Recipient, WebhookEvent
from services.payments.use_cases import Payments

Code = grpc.StatusCode
ERRORS = ErrorTable(
    domain="payments.gofund",
    entries={
        domain.PaymentNotFound: ErrorMapping(Code.NOT_FOUND, "PAYMENT_NOT_FOUND"),
        domain.PayoutNotFound: ErrorMapping(Code.NOT_FOUND, "PAYOUT_NOT_FOUND"),
        domain.WebhookEventNotFound: ErrorMapping(Code.NOT_FOUND, "WEBHOOK_EVENT_NOT_FOUND"),
        domain.WebhookEventIgnored: ErrorMapping(Code.FAILED_PRECONDITION, "WEBHOOK_EVENT_IGNORED"),
        domain.UserNotFound: ErrorMapping(Code.NOT_FOUND, "USER_NOT_FOUND"),
        domain.PaymentNotRefundable: ErrorMapping(Code.FAILED_PRECONDITION, "PAYMENT_NOT_REFUNDABLE"),
        domain.NoPayoutRecipient: ErrorMapping(Code.FAILED_PRECONDITION, "NO_PAYOUT_RECIPIENT"),
        domain.InvalidSignature: ErrorMapping(Code.UNAUTHENTICATED, "INVALID_SIGNATURE"),
        domain.MalformedEvent: ErrorMapping(Code.INVALID_ARGUMENT, "MALFORMED_EVENT"),
        domain.PaystackUnavailable: ErrorMapping(Code.UNAVAILABLE, "PAYSTACK_UNAVAILABLE"),
        domain.PaystackRejected: ErrorMapping(Code.FAILED_PRECONDITION, "PAYSTACK_REJECTED"),
        domain.RecipientRejected: ErrorMapping(Code.INVALID_ARGUMENT, "RECIPIENT_REJECTED"),
        domain.AccountNotResolved: ErrorMapping(Code.INVALID_ARGUMENT, "ACCOUNT_NOT_RESOLVED"),
        domain.EventStoreUnavailable: ErrorMapping(Code.UNAVAILABLE, "EVENT_STORE_UNAVAILABLE"),
        domain.OutflowRefused: ErrorMapping(Code.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"),
        domain.PaystackCallInProgress: ErrorMapping(Code.UNAVAILABLE, "PAYSTACK_CALL_IN_PROGRESS"),
    },
)

SIGNATURE_HEADER = "x-paystack-signature"

_EVENT_STATUS = {s: payments_pb2.WebhookEventStatus.Value(f"WEBHOOK_EVENT_STATUS_{s}") for s in EventStatus}
_EVENT_STATUS_OF = {v: k for k, v in _EVENT_STATUS.items()}


def payment_message(payment: Payment) -> payments_pb2.Payment:
    return payments_pb2.Payment(
        payment_id=payment.payment_id,
        reference=payment.reference,
        user_id=payment.user_id,
        goal_id=payment.goal_id,
        contribution_id=payment.contribution_id,
        amount=payment.amount,
        currency=payment.currency,
        status=PAYMENT_STATUS[payment.status],
        authorization_url=payment.authorization_url,
        flagged=payment.flagged,
        flag_reason=payment.flag_reason,
        paid_at=optional_timestamp(payment.paid_at),
        created_at=timestamp(payment.created_at),
        updated_at=timestamp(payment.updated_at),
    )


def reconciliation_message(report: Report) -> payments_pb2.Reconciliation:
    snapshot = report.snapshot
    return payments_pb2.Reconciliation(
        drifts=[
            payments_pb2.Drift(kind=payments_pb2.DriftKind.Value(f"DRIFT_KIND_{d.kind}"), detail=d.detail, ids=d.ids)
            for d in report.drifts
        ],
        goals_checked=len(snapshot.goals),
        payments_checked=len(snapshot.payments),
        payouts_checked=len(snapshot.payouts),
        transactions_checked=len(snapshot.transactions),
        paystack_records_checked=report.paystack_records,
        checked_at=timestamp(report.checked_at),
    )


def recipient_message(recipient: Recipient) -> payments_pb2.PayoutRecipient:
    return payments_pb2.PayoutRecipient(
        id=recipient.id,
        user_id=recipient.user_id,
        name=recipient.name,
        account_number_last4=recipient.account_number_last4,
        bank_code=recipient.bank_code,
        currency=recipient.currency,
        recipient_code=recipient.recipient_code,
        created_at=timestamp(recipient.created_at),
        account_name=recipient.account_name,
        bank_name=recipient.bank_name,
    )


def payout_message(payout: Payout) -> payments_pb2.Payout:
    return payments_pb2.Payout(
        payout_id=payout.payout_id,
        goal_id=payout.goal_id,
        user_id=payout.user_id,
        recipient_id=payout.recipient_id,
        amount=payout.amount,
        currency=payout.currency,
        status=PAYOUT_STATUS[payout.status],
        transfer_code=payout.transfer_code,
        failure_reason=payout.failure_reason,
        created_at=timestamp(payout.created_at),
        updated_at=timestamp(payout.updated_at),
    )


def event_message(event: WebhookEvent) -> payments_pb2.WebhookEvent:
    return payments_pb2.WebhookEvent(
        event_id=event.event_id,
        event=event.event,
        status=_EVENT_STATUS[event.status],
        attempts=event.attempts,
        last_error=event.last_error,
        received_at=timestamp(event.received_at),
        processed_at=optional_timestamp(event.processed_at),
    )


class PaymentsServicer(payments_service_pb2_grpc.PaymentsServiceServicer):
    """Public RPCs (routed by Envoy)."""

    def __init__(self, payments: Payments) -> None:
        self._payments = payments
        self._reconciler = Reconciler(payments)

    async def GetPayment(
        self, request: payments_service_pb2.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.GetPaymentResponse:
        payment = await self._payments.charges.payer_payment(caller_or_none(), request.payment_id)
        return payments_service_pb2.GetPaymentResponse(payment=payment_message(payment))

    async def VerifyPayment(
        self, request: payments_service_pb2.VerifyPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.VerifyPaymentResponse:
        payment = await self._payments.charges.verify(caller_or_none(), request.payment_id)
        return payments_service_pb2.VerifyPaymentResponse(payment=payment_message(payment))

    async def CreatePayoutRecipient(
        self, request: payments_service_pb2.CreatePayoutRecipientRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.CreatePayoutRecipientResponse:
        recipient = await self._payments.payouts.create_recipient(
            caller_or_none(),
            account_number=request.account_number,
            bank_code=request.bank_code,
            name=request.name,
            currency=request.currency,
            idempotency_key=request.idempotency_key,
        )
        return payments_service_pb2.CreatePayoutRecipientResponse(recipient=recipient_message(recipient))

    async def ListBanks(
        self, request: payments_service_pb2.ListBanksRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.ListBanksResponse:
        banks = await self._payments.payouts.list_banks(request.currency)
        return payments_service_pb2.ListBanksResponse(
            banks=[payments_pb2.Bank(name=b.name, code=b.code, currency=b.currency) for b in banks]
        )

    async def HandlePaystackWebhook(
        self, request: payments_service_pb2.HandlePaystackWebhookRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.HandlePaystackWebhookResponse:
        signature = next(
            (str(item.value) for item in context.invocation_metadata() or () if item.key == SIGNATURE_HEADER), ""
        )
        await self._payments.webhooks.receive(bytes(request.body.data), signature)
        return payments_service_pb2.HandlePaystackWebhookResponse()

    async def ListWebhookEvents(
        self, request: payments_service_pb2.ListWebhookEventsRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.ListWebhookEventsResponse:
        size = paging.page_size(request.page_size)
        status = None
        if request.status:
            if request.status not in _EVENT_STATUS_OF:
                raise ValidationFailed([FieldViolation("status", "is not a webhook event status", "INVALID_STATUS")])
            status = _EVENT_STATUS_OF[request.status]
        cursor = paging.decode_token(request.page_token, {"received_at": datetime, "event_id": str})
        before = (cursor["received_at"], cursor["event_id"]) if cursor else None
        events = await self._payments.webhooks.events(caller_or_none(), status, before, size + 1)
        token = ""
        if len(events) > size:
            last = events[size - 1]
            token = paging.encode_token({"received_at": last.received_at, "event_id": last.event_id})
        return payments_service_pb2.ListWebhookEventsResponse(
            events=[event_message(e) for e in events[:size]], next_page_token=token
        )

    async def RetryWebhookEvent(
        self, request: payments_service_pb2.RetryWebhookEventRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.RetryWebhookEventResponse:
        event = await self._payments.webhooks.retry(caller_or_none(), request.event_id)
        return payments_service_pb2.RetryWebhookEventResponse(event=event_message(event))

    async def GetReconciliation(
        self, request: payments_service_pb2.GetReconciliationRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.GetReconciliationResponse:
        require_permission(caller_or_none(), ADMIN_PERMISSION)
        return payments_service_pb2.GetReconciliationResponse(
            reconciliation=reconciliation_message(await self._reconciler.run())
        )


class PaymentsInternalServicer(payments_service_pb2_grpc.PaymentsInternalServiceServicer):
    """Internal RPCs (other GoFund services only)."""

    def __init__(self, payments: Payments) -> None:
        self._payments = payments
        self._reconciler = Reconciler(payments)

    async def WatchOutcomes(
        self, request: payments_service_pb2.WatchOutcomesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[payments_service_pb2.WatchOutcomesResponse]:
        async for outcome in self._payments.outcomes.after(after_seq(request.after_seq)):
            yield payments_service_pb2.WatchOutcomesResponse(outcome=outcome)

    async def InitializePayment(
        self, request: payments_service_pb2.InitializePaymentRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.InitializePaymentResponse:
        payment = await self._payments.charges.initialize(
            idempotency_key=request.idempotency_key,
            user_id=request.user_id,
            goal_id=request.goal_id,
            contribution_id=request.contribution_id,
            amount=request.amount,
            currency=request.currency,
            callback_url=request.callback_url,
            metadata=dict(request.metadata),
        )
        return payments_service_pb2.InitializePaymentResponse(
            payment=payment_message(payment),
            authorization_url=payment.authorization_url,
            access_code=payment.access_code,
        )

    async def RefundPayment(
        self, request: payments_service_pb2.RefundPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.RefundPaymentResponse:
        payment = await self._payments.refunds.refund(request.payment_id, request.refund_id, request.reason)
        return payments_service_pb2.RefundPaymentResponse(payment=payment_message(payment))

    async def CreatePayout(
        self, request: payments_service_pb2.CreatePayoutRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.CreatePayoutResponse:
        payout = await self._payments.payouts.create_payout(
            payout_id=request.payout_id,
            goal_id=request.goal_id,
            user_id=request.user_id,
            amount=request.amount,
            currency=request.currency,
            reason=request.reason,
        )
        return payments_service_pb2.CreatePayoutResponse(payout=payout_message(payout))

    async def GetPayout(
        self, request: payments_service_pb2.GetPayoutRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.GetPayoutResponse:
        payout = await self._payments.payouts.payout(request.payout_id)
        return payments_service_pb2.GetPayoutResponse(payout=payout_message(payout))

    async def Reconcile(
        self, request: payments_service_pb2.ReconcileRequest, context: grpc.aio.ServicerContext
    ) -> payments_service_pb2.ReconcileResponse:
        return payments_service_pb2.ReconcileResponse(
            reconciliation=reconciliation_message(await self._reconciler.run())
        )
