"""What payments asks of the other services, over their internal gRPC APIs.

Calls go through the process's `Channels` (deadline from the incoming call or
the default budget, service credential, request id). Every call here is
idempotent on the other side, so the webhook processor may repeat any of them
after a crash; a dependency that is down surfaces as its gRPC error, which the
processor retries and an RPC passes on as UNAVAILABLE.

Payments tells goals nothing by calling it: goals follows payments' outcome
stream (`outcomes`). The one call to goals is a read, reconciliation's
ListGoalBooks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from gofund.goals.v1 import goals_pb2, goals_service_pb2, goals_service_pb2_grpc
from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc

from services.common import ledger_client
from services.common.clients import Channels
from services.common.config import Settings
from services.common.ledger_client import MAX_PAGE, LedgerClient
from services.payments.domain import OutflowRefused, UserNotFound


class Peers:
    def __init__(self, channels: Channels, settings: Settings) -> None:
        def stub(service: str, module: object, name: str) -> object:
            descriptor = module.DESCRIPTOR.services_by_name[name]  # type: ignore[attr-defined]
            return channels.get(settings.target(service), [descriptor])

        self._identity = identity_service_pb2_grpc.IdentityInternalServiceStub(
            stub("identity", identity_service_pb2, "IdentityInternalService")
        )
        self.ledger = LedgerClient.connect(channels, settings.target("ledger"))
        self._goals = goals_service_pb2_grpc.GoalsInternalServiceStub(
            stub("goals", goals_service_pb2, "GoalsInternalService")
        )

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
            await self.ledger.post(
                transaction_id,
                ledger_client.transfer(debit=debit, credit=credit, amount=amount),
                currency,
                description,
                metadata,
                pending=True,
            )
        except grpc.aio.AioRpcError as exc:
            if ledger_client.insufficient_funds(exc):
                raise OutflowRefused(
                    f"the ledger refused to reserve {amount} {currency}: {exc.details()}",
                    metadata={"transaction_id": transaction_id},
                ) from None
            raise

    # -- reads for reconciliation ----------------------------------------------------------
    async def goal_books(self) -> AsyncIterator[goals_pb2.GoalBooks]:
        """Every goal's books, oldest first."""
        async for page in ledger_client.pages(
            lambda token: self._goals.ListGoalBooks(
                goals_service_pb2.ListGoalBooksRequest(page_size=MAX_PAGE, page_token=token)
            )
        ):
            for books in page.goal_books:
                yield books
