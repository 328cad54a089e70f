"""The ledger as goals and payments call it: one client over LedgerInternalService.

Both services move money the same way: open (or find) an account, post a
balanced transaction under a deterministic id, or reserve money (a pending
transaction) and later post or void the reservation under ids derived from it.
The ledger is idempotent on those ids, which is what makes a replayed saga step
or webhook safe: the requests built here must stay byte-for-byte what they
were (tests/unit/test_ledger_client.py pins them), or a replay would post twice.

Errors come back as the gRPC error the ledger answered; each service maps them
to its own domain (goals to LedgerUnavailable/Refused, payments retries them in
its outbox), because what a refusal means differs between the two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

from services.common.clients import Channels
from services.common.errors import error_info

# The entity of the platform's own accounts (its ESCROW cash at Paystack, its REVENUE
# from fees); the ledger accepts no other entity id for a platform account type.
PLATFORM_ENTITY = "platform"

DEBIT = ledger_pb2.ENTRY_TYPE_DEBIT
CREDIT = ledger_pb2.ENTRY_TYPE_CREDIT
ESCROW = ledger_pb2.ACCOUNT_TYPE_ESCROW
GOAL = ledger_pb2.ACCOUNT_TYPE_GOAL
USER = ledger_pb2.ACCOUNT_TYPE_USER
REVENUE = ledger_pb2.ACCOUNT_TYPE_REVENUE

# The ledger's largest page (ListTransactions, BatchGetBalances).
MAX_PAGE = 500

AccountType: TypeAlias = ledger_pb2.AccountType.ValueType
EntryType: TypeAlias = ledger_pb2.EntryType.ValueType


@dataclass(frozen=True)
class Posting:
    """One leg of a transaction, in the transaction's currency."""

    account_id: str
    entry_type: EntryType
    amount: int


def transfer(*, debit: str, credit: str, amount: int) -> list[Posting]:
    """`amount` leaving the debited account for the credited one (two legs, debit first)."""
    return [Posting(debit, DEBIT, amount), Posting(credit, CREDIT, amount)]


def post_request(
    transaction_id: str,
    postings: Sequence[Posting],
    currency: str,
    description: str,
    metadata: dict[str, str],
    *,
    pending: bool = False,
) -> ledger_service_pb2.PostTransactionRequest:
    return ledger_service_pb2.PostTransactionRequest(
        transaction_id=transaction_id,
        postings=[
            ledger_pb2.Posting(account_id=p.account_id, entry_type=p.entry_type, amount=p.amount, currency=currency)
            for p in postings
        ],
        description=description,
        metadata=metadata,
        pending=pending,
    )


def post_reserved_request(
    transaction_id: str, reserved: str, description: str, metadata: dict[str, str]
) -> ledger_service_pb2.PostPendingTransactionRequest:
    return ledger_service_pb2.PostPendingTransactionRequest(
        transaction_id=transaction_id, pending_transaction_id=reserved, description=description, metadata=metadata
    )


def void_reserved_request(
    transaction_id: str, reserved: str, description: str, metadata: dict[str, str]
) -> ledger_service_pb2.VoidPendingTransactionRequest:
    return ledger_service_pb2.VoidPendingTransactionRequest(
        transaction_id=transaction_id, pending_transaction_id=reserved, description=description, metadata=metadata
    )


def insufficient_funds(exc: grpc.aio.AioRpcError) -> bool:
    """The ledger refused an outflow because the money is not in the debited account."""
    info = error_info(exc)
    return (
        exc.code() is grpc.StatusCode.FAILED_PRECONDITION and info is not None and info.reason == "INSUFFICIENT_FUNDS"
    )


class LedgerClient:
    def __init__(self, stub: ledger_service_pb2_grpc.LedgerInternalServiceStub) -> None:
        self._stub = stub
        # Accounts never move or disappear, so their ids are kept for the process's life.
        self._accounts: dict[tuple[AccountType, str, str], str] = {}

    @classmethod
    def connect(cls, channels: Channels, target: str) -> LedgerClient:
        """The client over the process's shared channel to `target`."""
        service = ledger_service_pb2.DESCRIPTOR.services_by_name["LedgerInternalService"]
        return cls(ledger_service_pb2_grpc.LedgerInternalServiceStub(channels.get(target, [service])))

    async def account(self, account_type: AccountType, entity_id: str, currency: str) -> str:
        """The id of the entity's account in `currency`, opened if it is not there yet."""
        key = (account_type, entity_id, currency)
        account_id = self._accounts.get(key)
        if account_id is None:
            response = await self._stub.OpenAccount(
                ledger_service_pb2.OpenAccountRequest(account_type=account_type, entity_id=entity_id, currency=currency)
            )
            account_id = self._accounts[key] = str(response.account.id)
        return account_id

    async def post(
        self,
        transaction_id: str,
        postings: Sequence[Posting],
        currency: str,
        description: str,
        metadata: dict[str, str],
        *,
        pending: bool = False,
    ) -> None:
        """Post a balanced transaction (idempotent on `transaction_id`); `pending` reserves it."""
        await self._stub.PostTransaction(
            post_request(transaction_id, postings, currency, description, metadata, pending=pending)
        )

    async def post_reserved(
        self, transaction_id: str, reserved: str, description: str, metadata: dict[str, str]
    ) -> None:
        """The reserved money left: post the reservation (idempotent on `transaction_id`)."""
        await self._stub.PostPendingTransaction(post_reserved_request(transaction_id, reserved, description, metadata))

    async def void_reserved(
        self, transaction_id: str, reserved: str, description: str, metadata: dict[str, str]
    ) -> None:
        """The reserved money did not leave: void the reservation (idempotent on `transaction_id`)."""
        await self._stub.VoidPendingTransaction(void_reserved_request(transaction_id, reserved, description, metadata))

    async def balances(self, account_ids: Sequence[str]) -> dict[str, ledger_pb2.Balance]:
        """The balances of the accounts the ledger knows among `account_ids`, by id."""
        ids = list(account_ids)
        found: dict[str, ledger_pb2.Balance] = {}
        for start in range(0, len(ids), MAX_PAGE):
            response = await self._stub.BatchGetBalances(
                ledger_service_pb2.BatchGetBalancesRequest(account_ids=ids[start : start + MAX_PAGE])
            )
            found.update((b.account_id, b) for b in response.balances)
        return found

    def watch_balances(self, account_types: Sequence[AccountType], after_seq: int) -> Any:
        """The WatchBalances call (every change after `after_seq`, then live ones); the caller
        iterates it and cancels it when done."""
        return self._stub.WatchBalances(
            ledger_service_pb2.WatchBalancesRequest(account_types=list(account_types), after_seq=after_seq)
        )

    async def transactions(self) -> AsyncIterator[ledger_pb2.Transaction]:
        """Every ledger transaction, in commit order."""
        async for page in pages(
            lambda token: self._stub.ListTransactions(
                ledger_service_pb2.ListTransactionsRequest(page_size=MAX_PAGE, page_token=token)
            )
        ):
            for transaction in page.transactions:
                yield transaction

    async def differences(self) -> list[ledger_pb2.BalanceDifference]:
        """The ledger's own audit: accounts whose stored balance differs from their entries."""
        return list((await self._stub.Reconcile(ledger_service_pb2.ReconcileRequest())).differences)


async def pages(fetch: Callable[[str], Awaitable[Any]]) -> AsyncIterator[Any]:
    """Every page of a list RPC, following `next_page_token` until it is empty."""
    token = ""
    while True:
        page = await fetch(token)
        yield page
        token = page.next_page_token
        if not token:
            return
