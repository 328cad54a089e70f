"""gRPC adapter for the ledger: proto in, use case, proto out. No rules, no SQL."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable

import grpc
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

from services.common import paging
from services.common.errors import ErrorMapping, ErrorTable, FieldViolation, ValidationFailed
from services.common.ids import canonical_id
from services.common.proto import timestamp
from services.common.resume import after_seq, resume_after
from services.ledger import domain, store
from services.ledger.domain import AccountType, EntryType, Phase, Posting, TransactionKind
from services.ledger.streams import ChangeFeedUnavailable, WatcherClosed
from services.ledger.use_cases import Ledger

Code = grpc.StatusCode
ERRORS = ErrorTable(
    domain="ledger.gofund",
    entries={
        domain.AccountNotFound: ErrorMapping(Code.NOT_FOUND, "ACCOUNT_NOT_FOUND"),
        domain.TransactionNotFound: ErrorMapping(Code.NOT_FOUND, "TRANSACTION_NOT_FOUND"),
        domain.InsufficientFunds: ErrorMapping(Code.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"),
        domain.AlreadyReversed: ErrorMapping(Code.FAILED_PRECONDITION, "ALREADY_REVERSED"),
        domain.CurrencyMismatch: ErrorMapping(Code.INVALID_ARGUMENT, "CURRENCY_MISMATCH"),
        domain.NotPending: ErrorMapping(Code.FAILED_PRECONDITION, "NOT_PENDING"),
        domain.PendingAlreadyResolved: ErrorMapping(Code.FAILED_PRECONDITION, "PENDING_ALREADY_RESOLVED"),
        domain.NotReversible: ErrorMapping(Code.FAILED_PRECONDITION, "NOT_REVERSIBLE"),
        domain.InvalidAccountId: ErrorMapping(Code.INVALID_ARGUMENT, "INVALID_ACCOUNT_ID"),
        WatcherClosed: ErrorMapping(Code.UNAVAILABLE, "WATCH_INTERRUPTED"),
        ChangeFeedUnavailable: ErrorMapping(Code.UNAVAILABLE, "CHANGE_FEED_UNAVAILABLE"),
    },
)

_ACCOUNT_TYPES = {
    ledger_pb2.ACCOUNT_TYPE_USER: AccountType.USER,
    ledger_pb2.ACCOUNT_TYPE_GOAL: AccountType.GOAL,
    ledger_pb2.ACCOUNT_TYPE_ESCROW: AccountType.ESCROW,
    ledger_pb2.ACCOUNT_TYPE_REVENUE: AccountType.REVENUE,
}
_ACCOUNT_TYPE_PROTO = {v: k for k, v in _ACCOUNT_TYPES.items()}
_ENTRY_TYPES = {ledger_pb2.ENTRY_TYPE_DEBIT: EntryType.DEBIT, ledger_pb2.ENTRY_TYPE_CREDIT: EntryType.CREDIT}
_ENTRY_TYPE_PROTO = {v: k for k, v in _ENTRY_TYPES.items()}
_PHASE_PROTO = {
    Phase.POSTED: ledger_pb2.ENTRY_PHASE_POSTED,
    Phase.PENDING: ledger_pb2.ENTRY_PHASE_PENDING,
    Phase.PENDING_RESOLVED: ledger_pb2.ENTRY_PHASE_PENDING_RESOLVED,
}
_KIND_PROTO = {
    TransactionKind.POSTED: ledger_pb2.TRANSACTION_KIND_POSTED,
    TransactionKind.PENDING: ledger_pb2.TRANSACTION_KIND_PENDING,
    TransactionKind.POST_PENDING: ledger_pb2.TRANSACTION_KIND_POST_PENDING,
    TransactionKind.VOID_PENDING: ledger_pb2.TRANSACTION_KIND_VOID_PENDING,
}


def account_message(account: store.AccountRow) -> ledger_pb2.Account:
    return ledger_pb2.Account(
        id=account.id,
        account_type=_ACCOUNT_TYPE_PROTO[account.account_type],
        entity_id=account.entity_id,
        currency=account.currency,
        created_at=timestamp(account.created_at),
    )


def balance_message(balance: store.BalanceRow) -> ledger_pb2.Balance:
    return ledger_pb2.Balance(
        account_id=balance.account_id,
        currency=balance.currency,
        balance=balance.balance,
        debits=balance.debits,
        credits=balance.credits,
        seq=balance.seq,
        updated_at=timestamp(balance.updated_at),
        debits_pending=balance.debits_pending,
        credits_pending=balance.credits_pending,
        available=balance.available,
    )


def entry_message(entry: store.EntryRow) -> ledger_pb2.Entry:
    return ledger_pb2.Entry(
        id=entry.id,
        account_id=entry.account_id,
        transaction_id=entry.transaction_id,
        entry_type=_ENTRY_TYPE_PROTO[entry.entry_type],
        amount=entry.amount,
        currency=entry.currency,
        description=entry.description,
        seq=entry.seq,
        created_at=timestamp(entry.created_at),
        phase=_PHASE_PROTO[entry.phase],
    )


def transaction_message(transaction: store.TransactionRow) -> ledger_pb2.Transaction:
    return ledger_pb2.Transaction(
        id=transaction.id,
        entries=[entry_message(e) for e in transaction.entries],
        description=transaction.description,
        metadata=transaction.metadata,
        reverses_transaction_id=transaction.reverses_transaction_id or "",
        created_at=timestamp(transaction.created_at),
        kind=_KIND_PROTO[transaction.kind],
        pending_transaction_id=transaction.pending_transaction_id or "",
        resolved_by_transaction_id=transaction.resolved_by or "",
    )


# Every watcher of an account receives the same message for a change: serialize
# it once (the interceptor passes bytes through) and share it.
@functools.lru_cache(maxsize=4096)
def watch_balance_bytes(change: store.BalanceChange, heartbeat: bool = False) -> bytes:
    return ledger_service_pb2.WatchBalanceResponse(
        account_id=change.account_id,
        balance=change.balance,
        seq=change.seq,
        transaction_id=change.transaction_id,
        currency=change.currency,
        available=change.available,
        debits_pending=change.debits_pending,
        credits_pending=change.credits_pending,
        heartbeat=heartbeat,
    ).SerializeToString()


@functools.lru_cache(maxsize=4096)
def watch_balances_bytes(change: store.BalanceChange) -> bytes:
    return ledger_service_pb2.WatchBalancesResponse(
        account_id=change.account_id,
        account_type=_ACCOUNT_TYPE_PROTO[change.account_type],
        entity_id=change.entity_id,
        currency=change.currency,
        balance=change.balance,
        debits=change.debits,
        credits=change.credits,
        seq=change.seq,
        transaction_id=change.transaction_id,
        available=change.available,
        debits_pending=change.debits_pending,
        credits_pending=change.credits_pending,
    ).SerializeToString()


def account_id(value: str) -> str:
    """The id in canonical form (see services.common.ids); INVALID_ACCOUNT_ID if it is not one."""
    canonical = canonical_id(value)
    if canonical is None:
        raise domain.InvalidAccountId(f"{value!r} is not an account id")
    return canonical


def postings(request: ledger_service_pb2.PostTransactionRequest) -> list[Posting]:
    unknown = [i for i, p in enumerate(request.postings) if p.entry_type not in _ENTRY_TYPES]
    if unknown:
        raise ValidationFailed(
            [
                FieldViolation(f"postings[{i}].entry_type", "must be DEBIT or CREDIT", "INVALID_ENTRY_TYPE")
                for i in unknown
            ]
        )
    return [
        Posting(canonical_id(p.account_id) or p.account_id, _ENTRY_TYPES[p.entry_type], p.amount, p.currency)
        for p in request.postings
    ]


def account_types(values: Iterable[ledger_pb2.AccountType.ValueType]) -> list[AccountType]:
    if any(v not in _ACCOUNT_TYPES for v in values):
        raise ValidationFailed([FieldViolation("account_types", "unknown account type", "INVALID_ACCOUNT_TYPE")])
    return [_ACCOUNT_TYPES[v] for v in values]


class LedgerServicer(ledger_service_pb2_grpc.LedgerServiceServicer):
    """Public reads; each checks visibility first (a hidden account is NOT_FOUND)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def GetAccount(
        self, request: ledger_service_pb2.GetAccountRequest, context: grpc.aio.ServicerContext
    ) -> ledger_service_pb2.GetAccountResponse:
        account = await self.ledger.visible_account(account_id(request.account_id))
        return ledger_service_pb2.GetAccountResponse(account=account_message(account))

    async def GetBalance(
        self, request: ledger_service_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> ledger_service_pb2.GetBalanceResponse:
        balance = await self.ledger.visible_balance(account_id(request.account_id))
        return ledger_service_pb2.GetBalanceResponse(balance=balance_message(balance))

    async def ListEntries(
        self, request: ledger_service_pb2.ListEntriesRequest, context: grpc.aio.ServicerContext
    ) -> ledger_service_pb2.ListEntriesResponse:
        size = paging.page_size(request.page_size)
        cursor = paging.decode_token(request.page_token, {"before_seq": int})
        before = cursor["before_seq"] if cursor else None
        entries = await self.ledger.visible_entries(account_id(request.account_id), before, size + 1)
        token = paging.encode_token({"before_seq": entries[size - 1].seq}) if len(entries) > size else ""
        return ledger_service_pb2.ListEntriesResponse(
            entries=[entry_message(e) for e in entries[:size]], next_page_token=token
        )

    # Streams yield pre-serialized messages (see watch_balance_bytes), hence the override.
    async def WatchBalance(  # type: ignore[override]
        self, request: ledger_service_pb2.WatchBalanceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        watched = account_id(request.account_id)
        since = resume_after(request.after_seq, context)
        account = await self.ledger.visible_account(watched)
        async for change, heartbeat in self.ledger.watch_account(account, after_seq=since):
            yield watch_balance_bytes(change, heartbeat)


class LedgerInternalServicer(ledger_service_pb2_grpc.LedgerInternalServiceServicer):
    """Writes and service-to-service reads."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def OpenAccount(
        self, request: ledger_service_pb2.OpenAccountRequest, context: grpc.aio.ServicerContext
    ) -> ledger_service_pb2.OpenAccountResponse:
        entity_id = canonical_id(request.entity_id) or request.entity_id
        account, created = await self.ledger.open_account(
            _ACCOUNT_TYPES.get(request.account_type), entity_id, request.currency
        )
        return ledger_service_pb2.OpenAccountResponse(account=account_message(account), created=created)

    async def PostTransaction(
        self, request: ledger_service_pb2.PostTransactionRequest, context: grpc.aio.ServicerContext
    ) -> ledger_service_pb2.PostTransactionResponse:
        transaction, created = await self.ledger.post_transaction(
            request.transaction_id,
            postings(request),
            request.description,
            dict(request.metadata),
            pending=request.pending,
        )
        return ledger_service_pb2.PostTransactionResponse(transaction=transaction_message(transaction), created=created)

    async def PostPendingTransaction(
        self, request: ledger_service_pb2.PostPendingTransactionRequest, context: grpc.aio.ServicerContext
    ) -> ledger_service_pb2.PostPendingTransactionResponse:
        transaction, created = await self.ledger.resolve_pending(
            request.transaction_id,
            request.pending_transaction_id,
            TransactionKind.POST_PENDING,
            request.description,
            dict(request.metadata),
        )
        return ledger_service_pb2.PostPendingTransactionResponse(
            transaction=transaction_message(transaction), created=created
        )

    async def VoidPendingTransaction(
        self, request: ledger_service_pb2.VoidPendingTransactionRequest, context: grpc.aio.ServicerContext
    ) -> ledger_service_pb2.VoidPendingTransactionResponse:
        transaction, created = await self.ledger.resolve_pending(
            request.transaction_id,
            request.pending_transaction_id,
            TransactionKind.VOID_PENDING,
            request.description,
            dict(request.metadata),
        )
        return ledger_service_pb2.VoidPendingTransactionResponse(
            transaction=transaction_message(transaction), created=created
        )

    async def ReverseTransaction(
        self, request: ledger_service_pb2.ReverseTransactionRequest, context: grpc.aio.ServicerContext
    ) -> ledger_service_pb2.ReverseTransactionResponse:
        transaction, created = await self.ledger.reverse_transaction(
            request.transaction_id, request.original_transaction_id, request.description
        )
        return ledger_service_pb2.ReverseTransactionResponse(
            transaction=transaction_message(transaction), created=created
        )

    async def GetTransaction(
        self, request: ledger_service_pb2.GetTransactionRequest, context: grpc.aio.ServicerContext
    ) -> ledger_service_pb2.GetTransactionResponse:
        transaction = await self.ledger.transaction(request.transaction_id)
        return ledger_service_pb2.GetTransactionResponse(transaction=transaction_message(transaction))

    async def ListTransactions(
        self, request: ledger_service_pb2.ListTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> ledger_service_pb2.ListTransactionsResponse:
        size = paging.page_size(request.page_size)
        cursor = paging.decode_token(request.page_token, {"after_seq": int})
        after = cursor["after_seq"] if cursor else 0
        found = await self.ledger.transactions(after, size)
        token = paging.encode_token({"after_seq": found[-1].entries[-1].seq}) if len(found) == size else ""
        return ledger_service_pb2.ListTransactionsResponse(
            transactions=[transaction_message(t) for t in found], next_page_token=token
        )

    async def BatchGetBalances(
        self, request: ledger_service_pb2.BatchGetBalancesRequest, context: grpc.aio.ServicerContext
    ) -> ledger_service_pb2.BatchGetBalancesResponse:
        if len(request.account_ids) > paging.MAX_PAGE_SIZE:
            raise ValidationFailed([FieldViolation("account_ids", "at most 500", "TOO_MANY_ACCOUNT_IDS")])
        balances = await self.ledger.balances([account_id(a) for a in request.account_ids])
        return ledger_service_pb2.BatchGetBalancesResponse(balances=[balance_message(b) for b in balances])

    async def WatchBalances(  # type: ignore[override]
        self, request: ledger_service_pb2.WatchBalancesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        types = account_types(request.account_types)
        if not types and not request.account_ids:
            raise ValidationFailed([FieldViolation("account_types", "give account types, ids or both", "EMPTY_FILTER")])
        ids = [account_id(a) for a in request.account_ids]
        # No heartbeats: only services call this, straight over gRPC (no proxy
        # or browser to cut an idle stream), and a stream of many accounts has
        # no one latest balance to repeat.
        changes = self.ledger.watch(account_ids=ids, account_types=types, after_seq=after_seq(request.after_seq))
        async for change in changes:
            yield watch_balances_bytes(change)

    async def Reconcile(
        self, request: ledger_service_pb2.ReconcileRequest, context: grpc.aio.ServicerContext
    ) -> ledger_service_pb2.ReconcileResponse:
        differences, accounts, entries = await self.ledger.reconcile()
        return ledger_service_pb2.ReconcileResponse(
            differences=[
                ledger_pb2.BalanceDifference(
                    account_id=d.account_id,
                    stored_debits=d.stored_debits,
                    computed_debits=d.computed_debits,
                    stored_credits=d.stored_credits,
                    computed_credits=d.computed_credits,
                    stored_debits_pending=d.stored_pending[0],
                    computed_debits_pending=d.computed_pending[0],
                    stored_credits_pending=d.stored_pending[1],
                    computed_credits_pending=d.computed_pending[1],
                )
                for d in differences
            ],
            accounts_checked=accounts,
            entries_checked=entries,
        )
