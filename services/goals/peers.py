"""The goals service's calls to the ledger and to payments, and the streams it follows from them.

Each call goes through the process's shared channels (deadline, retries on
UNAVAILABLE for idempotent methods, service credential, request id). Failures
come back as domain errors: the dependency could not be reached in time
(`LedgerUnavailable`, `PaymentsUnavailable`), or it answered with a refusal
(`Refused`, carrying its code and ErrorInfo reason so that sagas can decide).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, TypeVar

import grpc
from gofund.ledger.v1 import ledger_pb2
from gofund.payments.v1 import payments_pb2, payments_service_pb2, payments_service_pb2_grpc

from services.common import outage
from services.common.clients import Channels
from services.common.errors import error_info
from services.common.ledger_client import GOAL, REVENUE, USER, LedgerClient, Posting
from services.goals import domain
from services.goals.domain import LedgerUnavailable, PaymentsUnavailable

T = TypeVar("T")

ACCOUNT_TYPES = {"USER": USER, "GOAL": GOAL, "REVENUE": REVENUE}


class Refused(Exception):
    """A dependency answered and said no. Not a DomainError: if an RPC lets it
    through, that is a bug and is answered INTERNAL."""

    def __init__(self, service: str, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(f"{service} refused: {code.name} {reason}: {message}")
        self.code = code
        self.reason = reason

    @property
    def precondition_failed(self) -> bool:
        """The dependency cannot do it now (FAILED_PRECONDITION): a later try may succeed."""
        return self.code is grpc.StatusCode.FAILED_PRECONDITION


def _refused(service: str, exc: grpc.aio.AioRpcError) -> Refused:
    info = error_info(exc)
    return Refused(service, exc.code(), info.reason if info else "", exc.details() or "")


@dataclass(frozen=True)
class BalanceChange:
    """One message of the GOAL balance stream."""

    account_id: str
    entity_id: str
    balance: int
    seq: int


class LedgerGateway:
    """The common ledger client, its failures as goals' domain errors."""

    def __init__(self, channels: Channels, target: str) -> None:
        self._ledger = LedgerClient.connect(channels, target)

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            if outage.unreachable(exc):
                raise LedgerUnavailable("the ledger is unavailable; retry") from None
            raise _refused("ledger", exc) from None

    async def open_account(self, account_type: str, entity_id: str, currency: str) -> str:
        return await self._call(self._ledger.account(ACCOUNT_TYPES[account_type], entity_id, currency))

    async def balances(self, account_ids: Sequence[str]) -> dict[str, ledger_pb2.Balance]:
        return await self._call(self._ledger.balances(account_ids))

    async def post(
        self,
        transaction_id: str,
        postings: Sequence[Posting],
        currency: str,
        description: str,
        metadata: dict[str, str],
    ) -> None:
        await self._call(self._ledger.post(transaction_id, postings, currency, description, metadata))

    async def goal_balance_changes(self, after_seq: int) -> AsyncIterator[BalanceChange]:
        """Every GOAL balance change after `after_seq`, then live ones; ends with LedgerUnavailable
        when the stream breaks (the caller resumes from the last seq it stored)."""
        call = self._ledger.watch_balances([GOAL], after_seq)
        try:
            async for message in call:
                yield BalanceChange(message.account_id, message.entity_id, message.balance, message.seq)
        except grpc.aio.AioRpcError as exc:
            if outage.unreachable(exc):
                raise LedgerUnavailable(f"the balance stream ended: {exc.details()}") from None
            raise _refused("ledger", exc) from None
        finally:
            call.cancel()
        raise LedgerUnavailable("the balance stream ended")


@dataclass(frozen=True)
class InitializedPayment:
    payment_id: str
    reference: str
    authorization_url: str


class PaymentsGateway:
    """Every call goals makes to payments reaches Paystack (checkout, refund, payout), so each
    gets `provider_timeout_s` (more than payments' own Paystack timeout, so payments answers
    first), capped by the incoming deadline."""

    def __init__(self, channels: Channels, target: str, *, provider_timeout_s: float) -> None:
        service = payments_service_pb2.DESCRIPTOR.services_by_name["PaymentsInternalService"]
        self._stub = payments_service_pb2_grpc.PaymentsInternalServiceStub(channels.get(target, [service]))
        self._provider_timeout_s = provider_timeout_s

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._provider_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if outage.unreachable(exc):
                raise PaymentsUnavailable("the payments service is unavailable; retry with the same key") from None
            raise _refused("payments", exc) from None

    async def initialize_payment(
        self,
        *,
        idempotency_key: str,
        user_id: str,
        goal_id: str,
        contribution_id: str,
        amount: int,
        currency: str,
    ) -> InitializedPayment:
        response = await self._call(
            self._stub.InitializePayment,
            payments_service_pb2.InitializePaymentRequest(
                idempotency_key=idempotency_key,
                user_id=user_id,
                goal_id=goal_id,
                contribution_id=contribution_id,
                amount=amount,
                currency=currency,
                metadata={"goal_id": goal_id, "contribution_id": contribution_id},
            ),
        )
        return InitializedPayment(response.payment.payment_id, response.payment.reference, response.authorization_url)

    async def refund_payment(self, payment_id: str, refund_id: str, reason: str) -> str:
        """The payment's status after the call, without its prefix ("REFUND_PENDING", "SUCCESS", ...)."""
        response = await self._call(
            self._stub.RefundPayment,
            payments_service_pb2.RefundPaymentRequest(payment_id=payment_id, refund_id=refund_id, reason=reason),
        )
        return str(payments_pb2.PaymentStatus.Name(response.payment.status)).removeprefix("PAYMENT_STATUS_")

    async def create_payout(
        self, *, payout_id: str, goal_id: str, user_id: str, amount: int, currency: str, reason: str
    ) -> str:
        """The payout's status after the call, without its prefix ("PENDING", "SUCCESS", ...)."""
        response = await self._call(
            self._stub.CreatePayout,
            payments_service_pb2.CreatePayoutRequest(
                payout_id=payout_id, goal_id=goal_id, user_id=user_id, amount=amount, currency=currency, reason=reason
            ),
        )
        return str(payments_pb2.PayoutStatus.Name(response.payout.status)).removeprefix("PAYOUT_STATUS_")

    async def outcomes(self, after_seq: int) -> AsyncIterator[domain.PaymentOutcome]:
        """Every payment outcome after `after_seq`, then live ones; ends with PaymentsUnavailable
        when the stream breaks (the caller resumes from the last seq it stored). No deadline:
        it is followed for as long as the process runs."""
        call = self._stub.WatchOutcomes(payments_service_pb2.WatchOutcomesRequest(after_seq=after_seq))
        try:
            async for message in call:
                yield payment_outcome(message.outcome)
        except grpc.aio.AioRpcError as exc:
            if outage.unreachable(exc):
                raise PaymentsUnavailable(f"the outcome stream ended: {exc.details()}") from None
            raise _refused("payments", exc) from None
        finally:
            call.cancel()
        raise PaymentsUnavailable("the outcome stream ended")


_PAYOUT_OUTCOME = {
    payments_pb2.PAYOUT_STATUS_SUCCESS: domain.PayoutOutcome.SUCCEEDED,
    payments_pb2.PAYOUT_STATUS_FAILED: domain.PayoutOutcome.FAILED,
    payments_pb2.PAYOUT_STATUS_REVERSED: domain.PayoutOutcome.REVERSED,
}


def payment_outcome(message: payments_pb2.PaymentOutcome) -> domain.PaymentOutcome:
    """One WatchOutcomes message as goals reads it."""
    seq = message.seq
    kind = message.WhichOneof("outcome")
    if kind == "contribution_paid":
        paid = message.contribution_paid
        paid_at = paid.paid_at.ToDatetime(tzinfo=UTC) if paid.HasField("paid_at") else None
        return domain.ContributionPaid(seq, paid.contribution_id, paid.payment_id, paid.amount, paid.currency, paid_at)
    if kind == "contribution_payment_failed":
        failed = message.contribution_payment_failed
        return domain.ContributionPaymentFailed(seq, failed.contribution_id, failed.payment_id, failed.reason)
    if kind == "contribution_refunded":
        refunded = message.contribution_refunded
        return domain.ContributionRefunded(seq, refunded.contribution_id, refunded.payment_id, refunded.refund_id)
    if kind == "contribution_refund_failed":
        refund = message.contribution_refund_failed
        return domain.ContributionRefundFailed(
            seq, refund.contribution_id, refund.payment_id, refund.refund_id, refund.reason
        )
    if kind == "payout_settled":
        settled = message.payout_settled
        return domain.PayoutSettled(
            seq, settled.goal_id, settled.payout_id, _PAYOUT_OUTCOME.get(settled.status), settled.reason
        )
    return domain.UnknownOutcome(seq, message.outcome_id, kind or "")
