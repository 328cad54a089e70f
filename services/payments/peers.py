"""What payments asks of the other services, over their internal gRPC APIs.

Calls go through the process's `Channels` (deadline from the incoming call or
the default budget, service credential, request id). Every call here is
idempotent on the other side, so the webhook processor may repeat any of them
after a crash; a dependency that is down surfaces as its gRPC error, which the
processor retries and an RPC passes on as UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, TypeAlias

import grpc
from gofund.goals.v1 import goals_pb2, goals_service_pb2, goals_service_pb2_grpc
from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

from services.common.clients import Channels
from services.common.config import Settings
from services.common.errors import error_info
from services.common.proto import timestamp
from services.payments.domain import OutflowRefused, UserNotFound

PLATFORM = "platform"
DEBIT = ledger_pb2.ENTRY_TYPE_DEBIT
CREDIT = ledger_pb2.ENTRY_TYPE_CREDIT
ESCROW = ledger_pb2.ACCOUNT_TYPE_ESCROW
GOAL = ledger_pb2.ACCOUNT_TYPE_GOAL
USER = ledger_pb2.ACCOUNT_TYPE_USER

MAX_PAGE = 500

PayoutOutcome: TypeAlias = goals_pb2.PayoutOutcome.ValueType
AccountType: TypeAlias = ledger_pb2.AccountType.ValueType


class Peers:
    def __init__(self, channels: Channels, settings: Settings) -> None:
        def stub(service: str, module: object, name: str) -> object:
            descriptor = module.DESCRIPTOR.services_by_name[name]  # type: ignore[attr-defined]
            return channels.get(settings.target(service), [descriptor])

        self._identity = identity_service_pb2_grpc.IdentityInternalServiceStub(
            stub("identity", identity_service_pb2, "IdentityInternalService")
        )
        self._ledger = ledger_service_pb2_grpc.LedgerInternalServiceStub(
            stub("ledger", ledger_service_pb2, "LedgerInternalService")
        )
        self._goals = goals_service_pb2_grpc.GoalsInternalServiceStub(
            stub("goals", goals_service_pb2, "GoalsInternalService")
        )
        # Accounts never move or disappear, so their ids are kept for the process's life.
        self._accounts: dict[tuple[AccountType, str, str], str] = {}

    # -- identity --------------------------------------------------------------------
    async def payer_email(self, user_id: str) -> str:
        try:
            response = await self._identity.GetUser(identity_service_pb2.GetUserRequest(user_id=user_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                raise UserNotFound(f"no user {user_id}", metadata={"user_id": user_id}) from None
            raise
        return str(response.user.email)

    # -- ledger ------------------------------------------------------------------------
    async def account(self, account_type: AccountType, entity_id: str, currency: str) -> str:
        key = (account_type, entity_id, currency)
        account_id = self._accounts.get(key)
        if account_id is None:
            response = await self._ledger.OpenAccount(
                ledger_service_pb2.OpenAccountRequest(account_type=account_type, entity_id=entity_id, currency=currency)
            )
            account_id = self._accounts[key] = str(response.account.id)
        return account_id

    async def transfer(
        self,
        transaction_id: str,
        *,
        debit: str,
        credit: str,
        amount: int,
        currency: str,
        description: str,
        metadata: dict[str, str],
    ) -> None:
        """Post `amount` from the debited to the credited account under a deterministic id."""
        await self._ledger.PostTransaction(
            ledger_service_pb2.PostTransactionRequest(
                transaction_id=transaction_id,
                postings=[
                    ledger_pb2.Posting(account_id=debit, entry_type=DEBIT, amount=amount, currency=currency),
                    ledger_pb2.Posting(account_id=credit, entry_type=CREDIT, amount=amount, currency=currency),
                ],
                description=description,
                metadata=metadata,
            )
        )

    async def reserve(
        self,
        transaction_id: str,
        *,
        debit: str,
        credit: str,
        amount: int,
        currency: str,
        description: str,
        metadata: dict[str, str],
    ) -> None:
        """Reserve `amount` leaving the debited account (a pending transaction), or OutflowRefused
        when the ledger says it is not there to give."""
        try:
            await self._ledger.PostTransaction(
                ledger_service_pb2.PostTransactionRequest(
                    transaction_id=transaction_id,
                    postings=[
                        ledger_pb2.Posting(account_id=debit, entry_type=DEBIT, amount=amount, currency=currency),
                        ledger_pb2.Posting(account_id=credit, entry_type=CREDIT, amount=amount, currency=currency),
                    ],
                    description=description,
                    metadata=metadata,
                    pending=True,
                )
            )
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            if (
                exc.code() is grpc.StatusCode.FAILED_PRECONDITION
                and info is not None
                and info.reason == "INSUFFICIENT_FUNDS"
            ):
                raise OutflowRefused(
                    f"the ledger refused to reserve {amount} {currency}: {exc.details()}",
                    metadata={"transaction_id": transaction_id},
                ) from None
            raise

    async def post_reserved(
        self, transaction_id: str, reserved: str, description: str, metadata: dict[str, str]
    ) -> None:
        """The reserved money left: post the reservation (idempotent on `transaction_id`)."""
        await self._ledger.PostPendingTransaction(
            ledger_service_pb2.PostPendingTransactionRequest(
                transaction_id=transaction_id, pending_transaction_id=reserved, description=description,
                metadata=metadata,
            )
        )  # fmt: skip

    async def void_reserved(
        self, transaction_id: str, reserved: str, description: str, metadata: dict[str, str]
    ) -> None:
        """The reserved money did not leave: void the reservation (idempotent on `transaction_id`)."""
        await self._ledger.VoidPendingTransaction(
            ledger_service_pb2.VoidPendingTransactionRequest(
                transaction_id=transaction_id, pending_transaction_id=reserved, description=description,
                metadata=metadata,
            )
        )  # fmt: skip

    # -- reads for reconciliation ----------------------------------------------------------
    async def ledger_transactions(self) -> AsyncIterator[ledger_pb2.Transaction]:
        """Every ledger transaction, in commit order."""
        async for page in _pages(
            lambda token: self._ledger.ListTransactions(
                ledger_service_pb2.ListTransactionsRequest(page_size=MAX_PAGE, page_token=token)
            )
        ):
            for transaction in page.transactions:
                yield transaction

    async def balances(self, account_ids: list[str]) -> dict[str, ledger_pb2.Balance]:
        found: dict[str, ledger_pb2.Balance] = {}
        for start in range(0, len(account_ids), MAX_PAGE):
            response = await self._ledger.BatchGetBalances(
                ledger_service_pb2.BatchGetBalancesRequest(account_ids=account_ids[start : start + MAX_PAGE])
            )
            found.update((b.account_id, b) for b in response.balances)
        return found

    async def ledger_differences(self) -> list[ledger_pb2.BalanceDifference]:
        """The ledger's own audit: accounts whose stored balance differs from their entries."""
        return list((await self._ledger.Reconcile(ledger_service_pb2.ReconcileRequest())).differences)

    async def goal_books(self) -> AsyncIterator[goals_pb2.GoalBooks]:
        """Every goal's books, oldest first."""
        async for page in _pages(
            lambda token: self._goals.ListGoalBooks(
                goals_service_pb2.ListGoalBooksRequest(page_size=MAX_PAGE, page_token=token)
            )
        ):
            for books in page.goal_books:
                yield books

    # -- goals ---------------------------------------------------------------------------
    async def confirm_contribution(
        self, contribution_id: str, payment_id: str, amount: int, currency: str, paid_at: datetime | None
    ) -> bool:
        """Tell goals the contribution's money is in its GOAL account; True if goals refunds it."""
        request = goals_service_pb2.ConfirmContributionRequest(
            contribution_id=contribution_id, payment_id=payment_id, amount=amount, currency=currency
        )
        if paid_at is not None:
            request.paid_at.CopyFrom(timestamp(paid_at))
        response = await self._goals.ConfirmContribution(request)
        return bool(response.refund_started)

    async def fail_contribution(self, contribution_id: str, payment_id: str, reason: str) -> None:
        await self._goals.FailContribution(
            goals_service_pb2.FailContributionRequest(
                contribution_id=contribution_id, payment_id=payment_id, reason=reason[:500]
            )
        )

    async def contribution_refunded(self, contribution_id: str, payment_id: str) -> None:
        await self._goals.MarkContributionRefunded(
            goals_service_pb2.MarkContributionRefundedRequest(contribution_id=contribution_id, payment_id=payment_id)
        )

    async def payout_result(self, goal_id: str, payout_id: str, outcome: PayoutOutcome, reason: str) -> None:
        await self._goals.RecordPayoutResult(
            goals_service_pb2.RecordPayoutResultRequest(
                goal_id=goal_id, payout_id=payout_id, outcome=outcome, reason=reason[:500]
            )
        )


async def _pages(fetch: Callable[[str], Awaitable[Any]]) -> AsyncIterator[Any]:
    """Every page of a list RPC, following `next_page_token` until it is empty."""
    token = ""
    while True:
        page = await fetch(token)
        yield page
        token = page.next_page_token
        if not token:
            return
