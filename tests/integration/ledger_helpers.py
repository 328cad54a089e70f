"""Small factories for ledger tests: accounts with unique owners, funding, transfers."""

from __future__ import annotations

import uuid
from typing import Any

from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2

DEBIT = ledger_pb2.ENTRY_TYPE_DEBIT
CREDIT = ledger_pb2.ENTRY_TYPE_CREDIT
TYPE = {
    "USER": ledger_pb2.ACCOUNT_TYPE_USER,
    "GOAL": ledger_pb2.ACCOUNT_TYPE_GOAL,
    "ESCROW": ledger_pb2.ACCOUNT_TYPE_ESCROW,
    "REVENUE": ledger_pb2.ACCOUNT_TYPE_REVENUE,
}


def new_id() -> str:
    return str(uuid.uuid4())


async def open_account(internal: Any, kind: str, currency: str = "NGN", entity_id: str | None = None) -> str:
    if entity_id is None:
        entity_id = "platform" if kind in ("ESCROW", "REVENUE") else new_id()
    response = await internal.OpenAccount(
        ledger_service_pb2.OpenAccountRequest(account_type=TYPE[kind], entity_id=entity_id, currency=currency)
    )
    return str(response.account.id)


def posting(account_id: str, side: int, amount: int, currency: str = "NGN") -> ledger_pb2.Posting:
    return ledger_pb2.Posting(account_id=account_id, entry_type=side, amount=amount, currency=currency)


def transfer(transaction_id: str, source: str, target: str, amount: int, currency: str = "NGN") -> Any:
    """Money moves from a credit-normal `source` to a credit-normal `target`."""
    return ledger_service_pb2.PostTransactionRequest(
        transaction_id=transaction_id,
        postings=[posting(source, DEBIT, amount, currency), posting(target, CREDIT, amount, currency)],
        description="transfer",
    )


async def fund(internal: Any, escrow: str, account: str, amount: int, currency: str = "NGN") -> Any:
    """Cash arrives at Paystack for `account`: ESCROW debit, account credit."""
    return await internal.PostTransaction(
        ledger_service_pb2.PostTransactionRequest(
            transaction_id=f"fund:{new_id()}",
            postings=[posting(escrow, DEBIT, amount, currency), posting(account, CREDIT, amount, currency)],
            description="contribution captured",
        )
    )
