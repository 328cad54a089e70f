"""Payments' MongoDB collections, their indexes, and the repository over them.

Correctness rests on the database, not on checks before writes:
- unique indexes make concurrent duplicates collide (one payment per
  contribution, one event per derived event id, one key per idempotency key);
- every status move is a conditional update (`status` in the moves allowed
  from it), so two processors racing on one payment move it once;
- work that must happen once at Paystack (initialize, refund, transfer) is
  done under a lease taken with one conditional update, so of 20 concurrent
  retries one calls Paystack and the others wait for its answer.
A lease is two fields, `<name>Until` (EPOCH when free) and `<name>Token`.
Writes are `update_one` followed by a read rather than find-and-modify, and no
filter uses `$or`: the embedded Mongo-wire server (SecantusDB) answers both
with a collection scan (about 35 ms at 2,000 documents, against 2 to 5 ms for
an indexed update), and on MongoDB the two forms are equally atomic for one
document.
Documents use Paystack-style camelCase field names, as the seed schema does.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect, DuplicateKeyError

from services.common.errors import IdempotencyKeyReused
from services.payments.domain import (
    PAYMENT_MOVES,
    PAYOUT_MOVES,
    EventStatus,
    Move,
    PaymentNotFound,
    PaymentStatus,
    PayoutNotFound,
    PayoutStatus,
)

Document = dict[str, Any]

# Each collection with the indexes the design relies on: uniqueness makes
# retries and duplicate webhooks harmless; the TTL index forgets idempotency
# keys after `expiresAt` (24 h after first use).
INDEXES: dict[str, list[IndexModel]] = {
    "payments": [
        IndexModel([("paymentId", ASCENDING)], unique=True, name="paymentId_unique"),
        IndexModel([("paystackReference", ASCENDING)], unique=True, name="paystackReference_unique"),
        IndexModel([("earlierReferences", ASCENDING)], name="earlierReferences"),
        IndexModel([("status", ASCENDING), ("createdAt", ASCENDING)], name="status_createdAt"),
        IndexModel([("createdAt", ASCENDING)], name="createdAt"),
        IndexModel([("refund.refundId", ASCENDING)], name="refundId", sparse=True),
        # The janitor's look: open payments due for a check.
        IndexModel([("status", ASCENDING), ("checkAt", ASCENDING)], name="status_checkAt"),
    ],
    "webhook_events": [
        IndexModel([("eventId", ASCENDING)], unique=True, name="eventId_unique"),
        IndexModel([("processed", ASCENDING), ("receivedAt", ASCENDING)], name="processed_receivedAt"),
        IndexModel([("status", ASCENDING), ("nextAttemptAt", ASCENDING)], name="status_nextAttemptAt"),
    ],
    "idempotency_keys": [
        IndexModel([("key", ASCENDING)], unique=True, name="key_unique"),
        IndexModel([("expiresAt", ASCENDING)], expireAfterSeconds=0, name="expiresAt_ttl"),
    ],
    "payout_recipients": [
        IndexModel([("id", ASCENDING)], unique=True, name="id_unique"),
        IndexModel([("userId", ASCENDING), ("currency", ASCENDING), ("createdAt", DESCENDING)], name="user_currency"),
    ],
    # The outbox of outcomes goals follows (PaymentsInternalService.WatchOutcomes).
    "outcomes": [
        IndexModel([("outcomeId", ASCENDING)], unique=True, name="outcomeId_unique"),
        IndexModel([("seq", ASCENDING)], unique=True, name="seq_unique"),
    ],
    "payouts": [
        IndexModel([("payoutId", ASCENDING)], unique=True, name="payoutId_unique"),
        IndexModel([("reference", ASCENDING)], unique=True, name="reference_unique"),
        IndexModel([("transferCode", ASCENDING)], name="transferCode", sparse=True),
        IndexModel([("status", ASCENDING), ("createdAt", ASCENDING)], name="status_createdAt"),
        IndexModel([("status", ASCENDING), ("checkAt", ASCENDING)], name="status_checkAt"),
    ],
}

IDEMPOTENCY_TTL = timedelta(hours=24)
# A free lease's `<name>Until`: every lease field starts here, so "free or
# lapsed" is one range condition (`< now`).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def ensure_indexes(database: AsyncDatabase[Document]) -> None:
    """Create the collections' indexes; a no-op when they already exist."""
    for collection, indexes in INDEXES.items():
        await database[collection].create_indexes(indexes)


def stored(doc: Document | None) -> Document:
    """The document an upsert just wrote; if the store cannot show it (a write lost to a
    restart), a connection-class error that callers retry, never an internal error."""
    if doc is None:
        raise AutoReconnect("the store did not keep the write; retry")
    return doc


# Keys under which Paystack sends a bank account number (transfer recipients'
# `details`, charge authorizations). Only the last four digits are ever kept.
ACCOUNT_NUMBER_KEYS = frozenset({"account_number", "accountNumber", "receiver_bank_account_number"})
VISIBLE_DIGITS = 4


def mask_account_number(value: str) -> str:
    """`0123456789` as `******6789`: the last four digits are what a person recognises."""
    if len(value) <= VISIBLE_DIGITS:
        return value
    return "*" * (len(value) - VISIBLE_DIGITS) + value[-VISIBLE_DIGITS:]


def masked(value: Any) -> Any:
    """`value` (a document, a list, a Mongo update) with every account number masked."""
    if isinstance(value, Mapping):
        return {
            key: mask_account_number(str(item))
            if key in ACCOUNT_NUMBER_KEYS and isinstance(item, str | int) and not isinstance(item, bool)
            else masked(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [masked(item) for item in value]
    return value


def masked_body(body: str) -> str:
    """A webhook body with its account numbers masked; byte for byte the same when it has none."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    hidden = masked(parsed)
    return body if hidden == parsed else json.dumps(hidden, ensure_ascii=False, separators=(",", ":"))


def now() -> datetime:
    # Mongo keeps milliseconds; truncating here keeps what we compare equal to what we stored.
    current = datetime.now(UTC)
    return current.replace(microsecond=current.microsecond // 1000 * 1000)


# -- records ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RefundRequest:
    """A refund of a payment's charge we asked for (or are asking for)."""

    refund_id: str
    # Names its ledger transactions (domain.refund_key).
    key: str
    amount: int
    reason: str
    # The ledger holds its reservation (GOAL -> ESCROW, pending).
    reserved: bool
    # Paystack accepted the request.
    requested: bool
    # Paystack's id of the refund ("" until Paystack's answer, or a review, names it).
    paystack_refund_id: str

    @classmethod
    def of(cls, doc: Mapping[str, Any], amount: int) -> RefundRequest:
        return cls(
            refund_id=str(doc.get("refundId") or ""),
            key=str(doc.get("key") or ""),
            amount=int(doc.get("amount") or amount),
            reason=str(doc.get("reason") or ""),
            reserved=bool(doc.get("reserved")),
            requested=bool(doc.get("requested")),
            paystack_refund_id=str(doc.get("paystackRefundId") or ""),
        )


@dataclass(frozen=True)
class Payment:
    payment_id: str
    reference: str
    user_id: str
    goal_id: str
    contribution_id: str
    amount: int
    currency: str
    status: PaymentStatus
    fingerprint: str
    authorization_url: str
    access_code: str
    reference_attempt: int
    flagged: bool
    flag_reason: str
    paid_at: datetime | None
    # The refund under way (REFUND_PENDING) or done (REFUNDED).
    refund: RefundRequest | None
    # Refund ids Paystack reported failed: a replay of one answers without a new refund.
    failed_refund_ids: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    # Paystack's verify of the charge, as it settled the payment.
    verification: Mapping[str, Any] | None = None
    # Paystack's ids of our refunds that failed, and of refunds we never asked for.
    failed_paystack_refund_ids: tuple[str, ...] = ()
    foreign_refund_ids: tuple[str, ...] = ()
    # Our refunds Paystack failed.
    failed_refunds: tuple[RefundRequest, ...] = ()
    # References Paystack already held from an earlier attempt (see domain.payment_reference).
    earlier_references: tuple[str, ...] = ()
    # What Paystack's Initialize Transaction is given.
    email: str = ""
    callback_url: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, doc: Document) -> Payment:
        failed = tuple(RefundRequest.of(r, doc["amount"]) for r in doc.get("failedRefunds", []))
        return cls(
            payment_id=doc["paymentId"],
            reference=doc["paystackReference"],
            user_id=doc["userId"],
            goal_id=doc["goalId"],
            contribution_id=doc["contributionId"],
            amount=doc["amount"],
            currency=doc["currency"],
            status=PaymentStatus(doc["status"]),
            fingerprint=doc["fingerprint"],
            authorization_url=doc.get("authorizationUrl") or "",
            access_code=doc.get("accessCode") or "",
            reference_attempt=doc.get("referenceAttempt", 0),
            flagged=bool(doc.get("flagged")),
            flag_reason=doc.get("flagReason") or "",
            paid_at=doc.get("paidAt"),
            refund=RefundRequest.of(doc["refund"], doc["amount"]) if doc.get("refund") else None,
            failed_refund_ids=tuple(r.refund_id for r in failed),
            created_at=doc["createdAt"],
            updated_at=doc["updatedAt"],
            verification=doc.get("verification"),
            failed_paystack_refund_ids=tuple(r.paystack_refund_id for r in failed if r.paystack_refund_id),
            foreign_refund_ids=tuple(str(r.get("id")) for r in doc.get("foreignRefunds", [])),
            failed_refunds=failed,
            earlier_references=tuple(doc.get("earlierReferences", [])),
            email=doc.get("email") or "",
            callback_url=doc.get("callbackUrl") or "",
            metadata=dict(doc.get("metadata") or {}),
        )


@dataclass(frozen=True)
class Recipient:
    id: str
    user_id: str
    name: str
    account_number_last4: str
    bank_code: str
    currency: str
    recipient_code: str
    created_at: datetime
    # As the bank holds it (Resolve Account Number); "" where not resolved, and on recipients stored before.
    account_name: str
    bank_name: str

    @classmethod
    def of(cls, doc: Document) -> Recipient:
        return cls(
            id=doc["id"],
            user_id=doc["userId"],
            name=doc["name"],
            account_number_last4=doc["accountNumberLast4"],
            bank_code=doc["bankCode"],
            currency=doc["currency"],
            recipient_code=doc["recipientCode"],
            created_at=doc["createdAt"],
            account_name=doc.get("accountName", ""),
            bank_name=doc.get("bankName", ""),
        )


@dataclass(frozen=True)
class Payout:
    payout_id: str
    goal_id: str
    user_id: str
    recipient_id: str
    recipient_code: str
    amount: int
    currency: str
    reason: str
    fingerprint: str
    status: PayoutStatus
    reference: str
    transfer_code: str
    requested: bool
    failure_reason: str
    created_at: datetime
    updated_at: datetime
    # The ledger holds its reservation (USER -> ESCROW, pending).
    reserved: bool = False
    # Paystack's transfer disagrees with it (amount, currency): nothing moves, an operator looks.
    flagged: bool = False
    flag_reason: str = ""

    @classmethod
    def of(cls, doc: Document) -> Payout:
        return cls(
            payout_id=doc["payoutId"],
            goal_id=doc["goalId"],
            user_id=doc["userId"],
            recipient_id=doc["recipientId"],
            recipient_code=doc["recipientCode"],
            amount=doc["amount"],
            currency=doc["currency"],
            reason=doc.get("reason", ""),
            fingerprint=doc["fingerprint"],
            status=PayoutStatus(doc["status"]),
            reference=doc["reference"],
            transfer_code=doc.get("transferCode") or "",
            requested=bool(doc.get("requested")),
            failure_reason=doc.get("failureReason") or "",
            created_at=doc["createdAt"],
            updated_at=doc["updatedAt"],
            reserved=bool(doc.get("reserved")),
            flagged=bool(doc.get("flagged")),
            flag_reason=doc.get("flagReason") or "",
        )


@dataclass(frozen=True)
class Lease:
    """The right to ask Paystack for one thing about one record, held by one caller at a time.

    Two fields of the record: `<name>Until` (EPOCH when free) and `<name>Token`;
    `token` is the holder's ("" while not taken).
    """

    collection: str
    key: Mapping[str, str]
    name: str
    # What the record must still be for the lease to be worth taking.
    match: Mapping[str, Any]
    token: str = ""

    @property
    def record_id(self) -> str:
        return next(iter(self.key.values()))


def checkout_lease(payment_id: str) -> Lease:
    """To initialize a payment at Paystack (while it has no checkout URL)."""
    return Lease("payments", {"paymentId": payment_id}, "initLease", {"authorizationUrl": None})


def refund_lease(payment_id: str, refund_id: str) -> Lease:
    """To ask Paystack for a refund (until it has accepted one)."""
    match = {"refund.refundId": refund_id, "refund.requested": False}
    return Lease("payments", {"paymentId": payment_id}, "refundLease", match)


def transfer_lease(payout_id: str) -> Lease:
    """To ask Paystack for a payout's transfer (until it has accepted it)."""
    return Lease("payouts", {"payoutId": payout_id}, "transferLease", {"requested": False})


@dataclass(frozen=True)
class DueCheck:
    """An open record whose next check by the janitor is due."""

    kind: str  # "payments" or "payouts"
    record_id: str
    check_at: datetime
    checks: int


# Where each kind of checked record lives (collection, id field), and the statuses in which it is open.
_CHECKED = {"payments": ("payments", "paymentId"), "payouts": ("payouts", "payoutId")}
_OPEN = {
    "payments": [str(PaymentStatus.PENDING), str(PaymentStatus.REFUND_PENDING)],
    "payouts": [str(PayoutStatus.PENDING)],
}


# The turn to run scheduled reconciliation: one replica at a time.
RECONCILIATION_LEASE = Lease("jobs", {"_id": "reconciliation"}, "lease", {})


@dataclass(frozen=True)
class ReconciliationRun:
    """What the last scheduled reconciliation found."""

    last_run_at: datetime
    last_clean_at: datetime | None
    # Every drift it found, by (kind, ids).
    drifts: frozenset[tuple[str, tuple[tuple[str, ...], ...]]]
    # How many of each kind the run before it had found too.
    persistent_counts: Mapping[str, int]


@dataclass(frozen=True)
class WebhookEvent:
    event_id: str
    event: str
    data: Mapping[str, Any]
    status: EventStatus
    attempts: int
    last_error: str
    received_at: datetime
    processed_at: datetime | None

    @classmethod
    def of(cls, doc: Document) -> WebhookEvent:
        return cls(
            event_id=doc["eventId"],
            event=doc["event"],
            data=doc.get("data") or {},
            status=EventStatus(doc["status"]),
            attempts=doc.get("attempts", 0),
            last_error=doc.get("lastError") or "",
            received_at=doc["receivedAt"],
            processed_at=doc.get("processedAt"),
        )


# What a processor worker reads of the event it claims.
CLAIM_FIELDS = {"eventId": 1, "event": 1, "data": 1, "attempts": 1, "failures": 1, "nextAttemptAt": 1}


@dataclass(frozen=True)
class ClaimedEvent:
    """A stored event (or outbox entry) leased to one processor worker."""

    event_id: str
    # What the worker's later writes present (its lease).
    token: str
    event: str
    data: Mapping[str, Any]
    attempts: int
    # Failures that count towards parking it (transient ones do not).
    failures: int


@dataclass(frozen=True)
class EventBacklog:
    """Webhook events not yet applied (for the metrics)."""

    pending: int
    parked: int
    oldest_pending_received_at: datetime | None


# -- the repository ----------------------------------------------------------------------------
class PaymentsStore:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self.database = database
        self.payments: AsyncCollection[Document] = database["payments"]
        self.events: AsyncCollection[Document] = database["webhook_events"]
        self.keys: AsyncCollection[Document] = database["idempotency_keys"]
        self.recipients: AsyncCollection[Document] = database["payout_recipients"]
        self.payouts: AsyncCollection[Document] = database["payouts"]
        self.outcomes: AsyncCollection[Document] = database["outcomes"]
        self.counters: AsyncCollection[Document] = database["counters"]
        self.jobs: AsyncCollection[Document] = database["jobs"]
        self._appending = asyncio.Lock()

    # -- idempotency keys ------------------------------------------------------------------
    async def keyed_resource(self, key: str, fingerprint: str) -> str | None:
        """The resource `key` already names (None if unclaimed), without claiming it.

        The same key with another fingerprint is refused, as by `claim_key`.
        """
        existing = await self.keys.find_one({"key": key})
        if existing is None:
            return None
        if existing["fingerprint"] != fingerprint:
            raise IdempotencyKeyReused("this idempotency key was used with different input", metadata={"key": key})
        return str(existing["resourceId"])

    async def claim_key(self, key: str, fingerprint: str, resource_id: str) -> str:
        """Record `key` for `resource_id`, or return the resource it already names.

        The same key with another fingerprint (different input) is refused.
        Kept for 24 h (TTL index); the resources themselves have their own
        unique ids, so an expired key cannot create a duplicate payment.
        """
        while True:
            stamp = now()
            try:
                await self.keys.insert_one(
                    {
                        "key": key,
                        "fingerprint": fingerprint,
                        "resourceId": resource_id,
                        "createdAt": stamp,
                        "expiresAt": stamp + IDEMPOTENCY_TTL,
                    }
                )
                return resource_id
            except DuplicateKeyError:
                claimed = await self.keyed_resource(key, fingerprint)
                if claimed is None:
                    continue  # expired between the two calls; claim it afresh
                return claimed

    # -- leases and conditional writes --------------------------------------------------
    async def take(self, lease: Lease, duration: timedelta) -> Lease | None:
        """Atomically take `lease` for `duration` (one conditional update); the lease with
        the token later writes present, or None if another holder's lease is still
        running (or the record no longer needs it)."""
        stamp = now()
        token = secrets.token_hex(8)
        taken = await self.database[lease.collection].update_one(
            {**lease.key, **lease.match, f"{lease.name}Until": {"$lt": stamp}},
            {"$set": {f"{lease.name}Until": stamp + duration, f"{lease.name}Token": token}},
        )
        return replace(lease, token=token) if taken.modified_count else None

    async def lease_free(self, lease: Lease) -> bool:
        """Is `lease` free (released, or run out)?"""
        doc = await self.database[lease.collection].find_one(lease.key, {f"{lease.name}Until": 1})
        return doc is None or doc.get(f"{lease.name}Until", EPOCH) < now()

    async def release(self, lease: Lease) -> None:
        """Give `lease` up without changing the record (Paystack refused, or did not answer)."""
        await self._change(lease.collection, lease.key, {}, lease=lease)

    @staticmethod
    async def _write(
        collection: AsyncCollection[Document],
        key: Mapping[str, Any],
        update: Mapping[str, Any],
        conditions: Mapping[str, Any] | None = None,
        *,
        upsert: bool = False,
    ) -> Document | None:
        """Apply `update` to the document `key` names if it meets `conditions`; the
        document as it then stands, or None if the update did not apply."""
        # Paystack's answers (transfer, verification, recipient data) are stored as they
        # came, less the full account numbers some of them carry.
        update = masked(update)
        try:
            result = await collection.update_one({**key, **(conditions or {})}, update, upsert=upsert)
        except DuplicateKeyError:
            # Two upserts of one new document raced and the other inserted it first.
            result = await collection.update_one({**key, **(conditions or {})}, update)
        if not (result.matched_count or result.upserted_id):
            if upsert:
                # An upsert always leaves the document there. A retried write (the server
                # restarted under the first attempt, which had applied) can answer that it
                # matched nothing: the document as stored is the answer.
                return await collection.find_one(key)
            return None
        return await collection.find_one(key)

    async def _change(
        self,
        collection: str,
        key: Mapping[str, Any],
        changes: Mapping[str, Any],
        *,
        move: Move[Any] | None = None,
        match: Mapping[str, Any] | None = None,
        lease: Lease | None = None,
        unset: Sequence[str] = (),
        push: Mapping[str, Any] | None = None,
    ) -> Document | None:
        """Apply `changes` to one record if it can make `move` (its status is one of the
        move's sources; it then takes the target), meets `match`, and `lease` is still
        ours (released by this write); the record as it then stands, or None."""
        conditions = dict(match or {})
        values = {**changes, "updatedAt": now()}
        if move is not None:
            conditions["status"] = {"$in": [str(status) for status in move.sources]}
            values["status"] = str(move.target)
        if lease is not None:
            conditions[f"{lease.name}Token"] = lease.token
            values[f"{lease.name}Until"] = EPOCH
        update: dict[str, Any] = {"$set": values}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        if push:
            update["$push"] = dict(push)
        return await self._write(self.database[collection], key, update, conditions)

    # -- payments ------------------------------------------------------------------------------
    async def create_payment(
        self,
        *,
        payment_id: str,
        reference: str,
        user_id: str,
        goal_id: str,
        contribution_id: str,
        amount: int,
        currency: str,
        fingerprint: str,
        idempotency_key: str,
        email: str,
        callback_url: str,
        metadata: Mapping[str, str],
        first_check_after: timedelta,
    ) -> Payment:
        """Insert the payment (PENDING) unless one with its id exists; return what is stored."""
        stamp = now()
        doc = {
            "paymentId": payment_id,
            "paystackReference": reference,
            "referenceAttempt": 0,
            "earlierReferences": [],
            "userId": user_id,
            "goalId": goal_id,
            "contributionId": contribution_id,
            "amount": amount,
            "currency": currency,
            "status": str(PaymentStatus.PENDING),
            "fingerprint": fingerprint,
            "idempotencyKey": idempotency_key,
            "email": email,
            "callbackUrl": callback_url,
            "metadata": dict(metadata),
            "authorizationUrl": None,
            "accessCode": None,
            "paystackData": None,
            "flagged": False,
            "flagReason": "",
            "paidAt": None,
            "createdAt": stamp,
            "updatedAt": stamp,
            # The janitor verifies a payment nobody settled from then on.
            "checkAt": stamp + first_check_after,
            "checks": 0,
            "initLeaseUntil": EPOCH,
            "refundLeaseUntil": EPOCH,
        }
        written = await self._write(self.payments, {"paymentId": payment_id}, {"$setOnInsert": doc}, upsert=True)
        return Payment.of(stored(written))

    async def payment(self, payment_id: str) -> Payment | None:
        doc = await self.payments.find_one({"paymentId": payment_id})
        return Payment.of(doc) if doc else None

    async def get_payment(self, payment_id: str) -> Payment:
        """The payment, or PaymentNotFound."""
        payment = await self.payment(payment_id)
        if payment is None:
            raise PaymentNotFound(f"no payment {payment_id}", metadata={"payment_id": payment_id})
        return payment

    async def payment_by_reference(self, reference: str) -> Payment | None:
        doc = await self.payments.find_one({"paystackReference": reference}) or await self.payments.find_one(
            {"earlierReferences": reference}
        )
        return Payment.of(doc) if doc else None

    async def _change_payment(self, payment_id: str, changes: Mapping[str, Any], **how: Any) -> Payment | None:
        doc = await self._change("payments", {"paymentId": payment_id}, changes, **how)
        return Payment.of(doc) if doc else None

    async def record_checkout(
        self, lease: Lease, authorization_url: str, access_code: str, data: Mapping[str, Any]
    ) -> Payment | None:
        """Paystack initialized the payment: its checkout, stored under the checkout lease."""
        changes = {"authorizationUrl": authorization_url, "accessCode": access_code, "paystackData": dict(data)}
        return await self._change_payment(lease.record_id, changes, lease=lease)

    async def next_reference(self, lease: Lease, earlier: str, reference: str, attempt: int) -> Payment | None:
        """Paystack already holds the payment's reference `earlier` (an attempt whose answer
        was lost, never shown to the payer): the payment goes on under `reference`."""
        return await self._change_payment(
            lease.record_id,
            {"paystackReference": reference, "referenceAttempt": attempt},
            lease=lease,
            push={"earlierReferences": earlier},
        )

    async def mark_captured(
        self, payment_id: str, paid_at: datetime, verification: Mapping[str, Any]
    ) -> Payment | None:
        changes = {"paidAt": paid_at, "verification": dict(verification)}
        return await self._change_payment(payment_id, changes, move=PAYMENT_MOVES["capture"])

    async def mark_failed(self, payment_id: str, reason: str, verification: Mapping[str, Any]) -> Payment | None:
        changes = {"failureReason": reason[:500], "verification": dict(verification)}
        return await self._change_payment(payment_id, changes, move=PAYMENT_MOVES["fail"])

    async def mark_abandoned(
        self, payment_id: str, reason: str, verification: Mapping[str, Any] | None = None
    ) -> Payment | None:
        changes: dict[str, Any] = {"failureReason": reason[:500]}
        if verification is not None:
            changes["verification"] = dict(verification)
        return await self._change_payment(payment_id, changes, move=PAYMENT_MOVES["abandon"])

    async def flag_payment(self, payment_id: str, reason: str, verification: Mapping[str, Any]) -> Payment | None:
        """Paystack's answer disagrees with the payment: nothing moves on it, an operator looks."""
        changes = {"flagged": True, "flagReason": reason[:500], "verification": dict(verification)}
        return await self._change_payment(payment_id, changes)

    async def start_refund(
        self, payment_id: str, *, refund_id: str, key: str, amount: int, reason: str, first_check_after: timedelta
    ) -> Payment | None:
        """REFUND_PENDING with the refund to ask for (not reserved, not requested yet)."""
        stamp = now()
        refund = {"refundId": refund_id, "key": key, "amount": amount, "reason": reason[:500], "reserved": False,
                  "requested": False, "createdAt": stamp}  # fmt: skip
        changes = {"refund": refund, "checkAt": stamp + first_check_after, "checks": 0}
        return await self._change_payment(payment_id, changes, move=PAYMENT_MOVES["start_refund"])

    async def drop_refund(self, payment_id: str, refund_id: str) -> Payment | None:
        """The ledger refused the refund's reservation: it never reaches Paystack; SUCCESS again."""
        return await self._change_payment(
            payment_id,
            {},
            move=PAYMENT_MOVES["drop_refund"],
            match={"refund.refundId": refund_id, "refund.reserved": False},
            unset=["refund"],
        )

    async def mark_refund_reserved(self, payment_id: str, refund_id: str) -> Payment | None:
        return await self._change_payment(
            payment_id,
            {"refund.reserved": True},
            match={"status": str(PaymentStatus.REFUND_PENDING), "refund.refundId": refund_id},
        )

    async def record_refund_requested(
        self, lease: Lease, paystack_refund_id: str, data: Mapping[str, Any]
    ) -> Payment | None:
        """Paystack accepted the refund (stored under the refund lease)."""
        changes = {"refund.requested": True, "refund.paystackRefundId": paystack_refund_id, "refund.data": dict(data)}
        return await self._change_payment(lease.record_id, changes, lease=lease)

    async def adopt_paystack_refund(self, payment_id: str, refund_id: str, paystack_refund_id: str) -> Payment | None:
        """Our request reached Paystack but its answer did not reach us: the refund Paystack holds is ours."""
        return await self._change_payment(
            payment_id, {"refund.paystackRefundId": paystack_refund_id}, match={"refund.refundId": refund_id}
        )

    async def record_foreign_refunds(
        self, payment_id: str, refunds: Sequence[Mapping[str, Any]], reason: str
    ) -> Payment | None:
        """Refunds of the charge we never asked for: recorded, and the payment flagged."""
        return await self._change_payment(
            payment_id,
            {"flagged": True, "flagReason": reason[:500]},
            push={"foreignRefunds": {"$each": [dict(r) for r in refunds]}},
        )

    async def mark_refunded(self, payment_id: str, refund_id: str, data: Mapping[str, Any]) -> Payment | None:
        return await self._change_payment(
            payment_id,
            {"refundedAt": now(), "refundData": dict(data)},
            move=PAYMENT_MOVES["refunded"],
            match={"refund.refundId": refund_id},
        )

    async def all_payments(self) -> list[Payment]:
        return [Payment.of(doc) async for doc in self.payments.find({}).sort("createdAt", ASCENDING)]

    async def all_payouts(self) -> list[Payout]:
        return [Payout.of(doc) async for doc in self.payouts.find({}).sort("createdAt", ASCENDING)]

    async def events_in(self, statuses: Sequence[EventStatus]) -> list[WebhookEvent]:
        cursor = self.events.find({"status": {"$in": [str(s) for s in statuses]}}).sort("receivedAt", ASCENDING)
        return [WebhookEvent.of(doc) async for doc in cursor]

    # -- webhook events ------------------------------------------------------------------------
    async def insert_event(self, event_id: str, event: str, body: str, data: Document, status: EventStatus) -> bool:
        """Store a received event; False if it was received before and is done or in hand
        (a duplicate delivery). A new delivery of an event that was parked, or that is
        waiting out a backoff after failures, revives it (True): it is due again, with
        this delivery's content, since the earlier one may have come before Paystack
        could confirm it (a charge.success sent before the charge was paid).

        Account numbers are masked in the body and the data: the signature was checked
        on the raw bytes before, and nothing reads an account number back (a transfer
        is found by its code and reference)."""
        body, data = masked_body(body), masked(data)
        stamp = now()
        try:
            await self.events.insert_one(
                {
                    "eventId": event_id,
                    "event": event,
                    "body": body,
                    "data": data,
                    "status": str(status),
                    "processed": status is EventStatus.IGNORED,
                    "attempts": 0,
                    "failures": 0,
                    "lastError": "",
                    "nextAttemptAt": stamp,
                    "leaseUntil": EPOCH,
                    "leaseToken": "",
                    "receivedAt": stamp,
                    "processedAt": stamp if status is EventStatus.IGNORED else None,
                    "deliveries": 1,
                }
            )
        except DuplicateKeyError:
            stamp = now()
            content = {"body": body, "data": data, "nextAttemptAt": stamp}
            revived = await self.events.update_one(
                {"eventId": event_id, "status": str(EventStatus.PARKED)},
                {"$set": {**content, "status": str(EventStatus.PENDING), "failures": 0, "leaseUntil": EPOCH,
                          "revivedAt": stamp},
                 "$inc": {"deliveries": 1}},
            )  # fmt: skip
            if revived.modified_count:
                return True
            retried = await self.events.update_one(
                {"eventId": event_id, "status": str(EventStatus.PENDING), "failures": {"$gt": 0}},
                {"$set": {**content, "failures": 0}, "$inc": {"deliveries": 1}},
            )
            if retried.modified_count:
                return True
            await self.events.update_one({"eventId": event_id}, {"$inc": {"deliveries": 1}})
            return False
        return True

    async def arm_event(self, event_id: str, event: str, data: Document) -> None:
        """Store (or make due again) work for the processor that the service itself
        creates, under a deterministic id: the outbox for steps an RPC starts."""
        data = masked(data)
        stamp = now()
        await self.events.update_one(
            {"eventId": event_id},
            {
                "$set": {
                    "status": str(EventStatus.PENDING), "processed": False, "nextAttemptAt": stamp, "data": data,
                    # A new piece of work: failures of the last one do not count towards parking it.
                    "failures": 0,
                },
                "$setOnInsert": {
                    "event": event, "body": "", "attempts": 0, "lastError": "",
                    "leaseUntil": EPOCH, "leaseToken": "", "receivedAt": stamp, "processedAt": None, "deliveries": 1,
                },
            },
            upsert=True,
        )  # fmt: skip

    async def fail_refund(self, payment_id: str, refund_id: str, data: Mapping[str, Any]) -> Payment | None:
        """The refund `refund_id` Paystack reported failed: the payment is SUCCESS again and the
        refund is kept among the failed ones (so a replay of its id refunds nothing). Only that
        refund: a later one the caller has started meanwhile is left alone."""
        doc = await self.payments.find_one({"paymentId": payment_id, "refund.refundId": refund_id})
        if doc is None:
            return None
        stamp = now()
        return await self._change_payment(
            payment_id,
            {},
            move=PAYMENT_MOVES["refund_failed"],
            match={"refund.refundId": refund_id},
            unset=["refund"],
            push={"failedRefunds": {**doc["refund"], "failedAt": stamp, "data": dict(data)}},
        )

    @staticmethod
    def _due(stamp: datetime) -> dict[str, Any]:
        """The filter of an event a worker may take now: pending, due, and under no live lease."""
        return {"status": str(EventStatus.PENDING), "nextAttemptAt": {"$lte": stamp}, "leaseUntil": {"$lt": stamp}}

    async def claim_due_event(self, lease: timedelta, candidates: int = 8) -> ClaimedEvent | None:
        """The oldest pending event whose next attempt is due, leased to the caller
        (its `token`). Several candidates are tried, since another worker may
        take the first between our read and our write.

        On SecantusDB this query costs time in proportion to every pending event (it
        reads them all before it sorts and limits: about 20 ms with 500 pending), so
        the processor asks it only when no stored event was handed to it by id
        (`claim_event`)."""
        stamp = now()
        cursor = self.events.find(self._due(stamp), CLAIM_FIELDS).sort("nextAttemptAt", ASCENDING).limit(candidates)
        for doc in await cursor.to_list():
            if (claimed := await self._lease_event(doc, stamp, lease)) is not None:
                return claimed
        return None

    async def claim_event(self, event_id: str, lease: timedelta) -> ClaimedEvent | None:
        """The event `event_id` leased to the caller if it is due and nobody holds it
        (None otherwise): found by its unique id, so its cost does not grow with the
        backlog as `claim_due_event`'s does."""
        stamp = now()
        doc = await self.events.find_one({"eventId": event_id, **self._due(stamp)}, CLAIM_FIELDS)
        return None if doc is None else await self._lease_event(doc, stamp, lease)

    async def _lease_event(self, doc: Document, stamp: datetime, lease: timedelta) -> ClaimedEvent | None:
        """Lease the due event `doc` as it was read at `stamp`; None if another worker
        took it, or anything wrote it, since.

        The event as read is the one leased, not read again after the lease (a round
        trip per event): every write that changes a pending event's content or counts
        also sets its nextAttemptAt (a new delivery, arm_event, a failed attempt), so
        the lease is taken only if nothing wrote the event since it was read; the due
        filter alone would not do, since a replica whose clock is behind leaves the
        event due."""
        token = secrets.token_hex(8)
        taken = await self.events.update_one(
            {"eventId": doc["eventId"], **self._due(stamp), "nextAttemptAt": doc["nextAttemptAt"]},
            {"$set": {"leaseUntil": stamp + lease, "leaseToken": token}},
        )
        if not taken.modified_count:
            return None
        return ClaimedEvent(
            event_id=doc["eventId"],
            token=token,
            event=doc["event"],
            data=doc.get("data") or {},
            attempts=doc.get("attempts", 0),
            failures=doc.get("failures", 0),
        )

    async def renew_event_lease(self, event_id: str, token: str, lease: timedelta) -> None:
        await self.events.update_one(
            {"eventId": event_id, "leaseToken": token}, {"$set": {"leaseUntil": now() + lease}}
        )

    async def make_pending_events_due(self) -> int:
        """At start-up: every pending event waiting out a backoff is due now."""
        stamp = now()
        result = await self.events.update_many(
            {"status": str(EventStatus.PENDING), "nextAttemptAt": {"$gt": stamp}}, {"$set": {"nextAttemptAt": stamp}}
        )
        return int(result.modified_count)

    async def event_done(self, event_id: str, token: str, status: EventStatus, note: str = "") -> None:
        stamp = now()
        await self.events.update_one(
            {"eventId": event_id, "leaseToken": token},
            {
                "$set": {
                    "status": str(status),
                    "processed": True,
                    "processedAt": stamp,
                    "lastError": note,
                    "leaseUntil": EPOCH,
                },
                "$inc": {"attempts": 1},
            },
        )

    async def event_failed(
        self, event_id: str, token: str, error: str, retry_at: datetime | None, *, count_failure: bool
    ) -> None:
        """Record a failed attempt; `retry_at` None parks the event. `failures`
        counts only the attempts that failed through the event's own fault."""
        changes: dict[str, Any] = {"lastError": error[:1000], "leaseUntil": EPOCH}
        if retry_at is None:
            changes["status"] = str(EventStatus.PARKED)
        else:
            changes["nextAttemptAt"] = retry_at
        await self.events.update_one(
            {"eventId": event_id, "leaseToken": token},
            {"$set": changes, "$inc": {"attempts": 1, "failures": int(count_failure)}},
        )

    async def next_event_due(self) -> datetime | None:
        doc = await self.events.find_one(
            {"status": str(EventStatus.PENDING)}, sort=[("nextAttemptAt", ASCENDING)], projection={"nextAttemptAt": 1}
        )
        return doc["nextAttemptAt"] if doc else None

    async def event_backlog(self) -> EventBacklog:
        """One aggregation over the `processed_receivedAt` index (only PENDING and
        PARKED events are unprocessed), so its cost follows the backlog, not the
        collection: on SecantusDB 5 ms with 6 of 20,000 events unprocessed, about
        0.13 ms per unprocessed event beyond that. Counting each status with
        `count_documents` and finding the oldest separately costs as much in
        three round trips."""
        cursor = await self.events.aggregate(
            [
                {"$match": {"processed": False}},
                {"$group": {"_id": "$status", "count": {"$sum": 1}, "oldest": {"$min": "$receivedAt"}}},
            ]
        )
        by_status = {doc["_id"]: doc async for doc in cursor}
        pending = by_status.get(str(EventStatus.PENDING), {})
        return EventBacklog(
            pending=int(pending.get("count", 0)),
            parked=int(by_status.get(str(EventStatus.PARKED), {}).get("count", 0)),
            oldest_pending_received_at=pending.get("oldest"),
        )

    async def event(self, event_id: str) -> WebhookEvent | None:
        doc = await self.events.find_one({"eventId": event_id})
        return WebhookEvent.of(doc) if doc else None

    async def list_events(
        self, status: EventStatus | None, before: tuple[datetime, str] | None, limit: int
    ) -> list[WebhookEvent]:
        query: dict[str, Any] = {}
        if status is not None:
            query["status"] = str(status)
        if before is not None:  # an operator's page: the one place a scan is acceptable
            received, event_id = before
            query["$or"] = [
                {"receivedAt": {"$lt": received}},
                {"receivedAt": received, "eventId": {"$lt": event_id}},
            ]
        cursor = self.events.find(query).sort([("receivedAt", DESCENDING), ("eventId", DESCENDING)]).limit(limit)
        return [WebhookEvent.of(doc) async for doc in cursor]

    async def unpark_event(self, event_id: str) -> WebhookEvent | None:
        doc = await self._write(
            self.events,
            {"eventId": event_id},
            {"$set": {"status": str(EventStatus.PENDING), "attempts": 0, "failures": 0, "nextAttemptAt": now(),
                      "leaseUntil": EPOCH}},
            {"status": str(EventStatus.PARKED)},
        )  # fmt: skip
        return WebhookEvent.of(doc) if doc else None

    # -- the janitor's looks ------------------------------------------------------------------
    async def due_checks(self, kind: str, at: datetime, limit: int) -> list[DueCheck]:
        """Open records of `kind` ("payments": PENDING or REFUND_PENDING; "payouts": PENDING)
        whose next check is due at `at`, the most overdue first."""
        collection, id_field = _CHECKED[kind]
        cursor = (
            self.database[collection]
            .find({"status": {"$in": _OPEN[kind]}, "checkAt": {"$lte": at}}, {id_field: 1, "checkAt": 1, "checks": 1})
            .sort("checkAt", ASCENDING)
            .limit(limit)
        )
        return [DueCheck(kind, d[id_field], d["checkAt"], int(d.get("checks") or 0)) async for d in cursor]

    async def claim_check(self, due: DueCheck, next_at: datetime) -> bool:
        """Take this round's check of one record: moving its `checkAt` on from the value
        read is a compare-and-set, so of several janitors (replicas) one wins."""
        collection, id_field = _CHECKED[due.kind]
        taken = await self.database[collection].update_one(
            {id_field: due.record_id, "checkAt": due.check_at}, {"$set": {"checkAt": next_at}, "$inc": {"checks": 1}}
        )
        return bool(taken.modified_count)

    async def backfill_checks(self, first_check: datetime) -> None:
        """Records written before the janitor existed get their first check."""
        for collection in ("payments", "payouts"):
            await self.database[collection].update_many(
                {"checkAt": {"$exists": False}}, {"$set": {"checkAt": first_check, "checks": 0}}
            )

    # -- payout recipients ------------------------------------------------------------------------
    async def create_recipient(
        self,
        *,
        recipient_id: str,
        user_id: str,
        name: str,
        account_number_last4: str,
        bank_code: str,
        currency: str,
        recipient_code: str,
        account_name: str,
        bank_name: str,
        details: Mapping[str, Any],
    ) -> Recipient:
        """Insert the recipient unless one with its id exists; return what is stored."""
        doc = {
            "id": recipient_id,
            "userId": user_id,
            "name": name,
            "accountNumberLast4": account_number_last4,
            "bankCode": bank_code,
            "currency": currency,
            "recipientCode": recipient_code,
            "accountName": account_name,
            "bankName": bank_name,
            "details": dict(details),
            "createdAt": now(),
        }
        written = await self._write(self.recipients, {"id": recipient_id}, {"$setOnInsert": doc}, upsert=True)
        return Recipient.of(stored(written))

    async def recipient(self, recipient_id: str) -> Recipient | None:
        doc = await self.recipients.find_one({"id": recipient_id})
        return Recipient.of(doc) if doc else None

    async def current_recipient(self, user_id: str, currency: str) -> Recipient | None:
        """The user's newest recipient in `currency`: a new one replaces the earlier for future payouts."""
        doc = await self.recipients.find_one(
            {"userId": user_id, "currency": currency}, sort=[("createdAt", DESCENDING), ("id", DESCENDING)]
        )
        return Recipient.of(doc) if doc else None

    # -- payouts ------------------------------------------------------------------------------------
    async def create_payout(
        self,
        *,
        payout_id: str,
        goal_id: str,
        user_id: str,
        recipient: Recipient,
        amount: int,
        currency: str,
        reason: str,
        fingerprint: str,
        reference: str,
        first_check_after: timedelta,
    ) -> Payout:
        """Insert the payout (PENDING) unless one with its id exists; return what is stored."""
        stamp = now()
        doc = {
            "payoutId": payout_id,
            "goalId": goal_id,
            "userId": user_id,
            "recipientId": recipient.id,
            "recipientCode": recipient.recipient_code,
            "amount": amount,
            "currency": currency,
            "reason": reason,
            "fingerprint": fingerprint,
            "status": str(PayoutStatus.PENDING),
            "reference": reference,
            "transferCode": None,
            "requested": False,
            "reserved": False,
            "failureReason": "",
            "createdAt": stamp,
            "updatedAt": stamp,
            "checkAt": stamp + first_check_after,
            "checks": 0,
            "transferLeaseUntil": EPOCH,
        }
        written = await self._write(self.payouts, {"payoutId": payout_id}, {"$setOnInsert": doc}, upsert=True)
        return Payout.of(stored(written))

    async def payout(self, payout_id: str) -> Payout | None:
        doc = await self.payouts.find_one({"payoutId": payout_id})
        return Payout.of(doc) if doc else None

    async def get_payout(self, payout_id: str) -> Payout:
        """The payout, or PayoutNotFound."""
        payout = await self.payout(payout_id)
        if payout is None:
            raise PayoutNotFound(f"no payout {payout_id}", metadata={"payout_id": payout_id})
        return payout

    async def payout_by_transfer(self, transfer_code: str, reference: str) -> Payout | None:
        doc = None
        if transfer_code:
            doc = await self.payouts.find_one({"transferCode": transfer_code})
        if doc is None and reference:
            doc = await self.payouts.find_one({"reference": reference})
        return Payout.of(doc) if doc else None

    async def _change_payout(self, payout_id: str, changes: Mapping[str, Any], **how: Any) -> Payout | None:
        doc = await self._change("payouts", {"payoutId": payout_id}, changes, **how)
        return Payout.of(doc) if doc else None

    async def mark_payout_reserved(self, payout_id: str) -> Payout | None:
        return await self._change_payout(payout_id, {"reserved": True})

    async def record_transfer_requested(
        self, lease: Lease, transfer_code: str | None = None, data: Mapping[str, Any] | None = None
    ) -> Payout | None:
        """Paystack holds the transfer (stored under the transfer lease): with its code and
        answer, or without them when an earlier attempt's answer was lost."""
        changes: dict[str, Any] = {"requested": True}
        if transfer_code is not None:
            changes.update(transferCode=transfer_code, transferData=dict(data or {}))
        return await self._change_payout(lease.record_id, changes, lease=lease)

    async def reject_payout(self, payout_id: str, reason: str) -> Payout | None:
        """The transfer never reached Paystack (refused, or the ledger refused its reservation)."""
        changes = {"failureReason": f"the transfer was refused: {reason}"[:500]}
        return await self._change_payout(payout_id, changes, move=PAYOUT_MOVES["fail"])

    async def settle_payout(
        self, payout_id: str, move: Move[PayoutStatus], verification: Mapping[str, Any], failure_reason: str = ""
    ) -> Payout | None:
        """Settle the payout as Paystack's Verify Transfer reports it."""
        changes: dict[str, Any] = {"verification": dict(verification)}
        if move.target is not PayoutStatus.SUCCESS:
            changes["failureReason"] = failure_reason[:500]
        return await self._change_payout(payout_id, changes, move=move)

    async def flag_payout(self, payout_id: str, reason: str) -> Payout | None:
        """Paystack's transfer disagrees with the payout: nothing moves on it, an operator looks."""
        return await self._change_payout(payout_id, {"flagged": True, "flagReason": reason[:500]})

    # -- scheduled reconciliation (one document in `jobs`) ----------------------------------------
    async def take_reconciliation_turn(self, duration: timedelta) -> tuple[Lease, ReconciliationRun | None] | None:
        """This replica's turn to reconcile (the job's lease, for `duration`) and the run before
        it; None while another replica's turn lasts."""
        await self.jobs.update_one(
            RECONCILIATION_LEASE.key,
            {"$setOnInsert": {"leaseUntil": EPOCH, "drifts": [], "lastCleanAt": None}},
            upsert=True,
        )
        held = await self.take(RECONCILIATION_LEASE, duration)
        if held is None:
            return None
        return held, await self.last_reconciliation()

    async def record_reconciliation(
        self,
        turn: Lease,
        checked_at: datetime,
        drifts: Sequence[tuple[str, Sequence[tuple[str, str]]]],
        persistent_counts: Mapping[str, int],
    ) -> None:
        """Store a run's result (if the turn is still ours): every drift found (kind, ids),
        the counts of those the run before found too, and whether it was clean."""
        changes: dict[str, Any] = {
            "lastRunAt": checked_at,
            "drifts": [{"kind": kind, "ids": [list(i) for i in ids]} for kind, ids in drifts],
            "persistentCounts": dict(persistent_counts),
        }
        if not drifts:
            changes["lastCleanAt"] = checked_at
        await self.jobs.update_one({**turn.key, f"{turn.name}Token": turn.token}, {"$set": changes})

    async def last_reconciliation(self) -> ReconciliationRun | None:
        job = await self.jobs.find_one(RECONCILIATION_LEASE.key)
        if job is None or job.get("lastRunAt") is None:
            return None
        return ReconciliationRun(
            last_run_at=job["lastRunAt"],
            last_clean_at=job.get("lastCleanAt"),
            drifts=frozenset((d["kind"], tuple(tuple(i) for i in d["ids"])) for d in job.get("drifts", [])),
            persistent_counts=dict(job.get("persistentCounts") or {}),
        )

    # -- the outbox of outcomes --------------------------------------------------------------
    async def append_outcome(self, outcome_id: str, kind: str, payload: bytes) -> int:
        """Append an outcome once, with the next sequence number; its seq (the first one's on a repeat).

        The counter is incremented and the outcome inserted in one transaction, so a
        seq is never taken without its outcome (no gaps), and two appends racing for
        the counter conflict and run one after the other (commit order is seq order):
        whoever sees seq n can already see every seq below it.
        """

        async def append(session: AsyncClientSession) -> int:
            counter = await self.counters.find_one_and_update(
                {"_id": "outcomes"}, {"$inc": {"seq": 1}},
                upsert=True, return_document=ReturnDocument.AFTER, session=session,
            )  # fmt: skip
            seq = int(stored(counter)["seq"])
            await self.outcomes.insert_one(
                {"outcomeId": outcome_id, "seq": seq, "kind": kind, "payload": payload, "publishedAt": now()},
                session=session,
            )
            return seq

        try:
            # One append at a time in this process: appends racing for the counter conflict
            # and are retried whole (a third more round trips per outcome at 8 concurrent
            # webhooks); other replicas' appends still conflict and are retried.
            async with self._appending, self.database.client.start_session() as session:
                return await session.with_transaction(append)
        except DuplicateKeyError:
            # Appended before (a repeated step; no read first, since repeats are rare): the
            # transaction is rolled back, counter and all, and the first append's seq stands.
            return int(stored(await self.outcomes.find_one({"outcomeId": outcome_id}, {"seq": 1}))["seq"])

    async def outcomes_after(self, after_seq: int, limit: int) -> list[tuple[int, datetime, bytes]]:
        """Up to `limit` outcomes after `after_seq`, in order: (seq, published at, payload)."""
        cursor = self.outcomes.find({"seq": {"$gt": after_seq}}).sort("seq", ASCENDING).limit(limit)
        return [(int(d["seq"]), d["publishedAt"], bytes(d["payload"])) async for d in cursor]
