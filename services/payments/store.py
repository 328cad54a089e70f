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

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect, DuplicateKeyError

from services.common.errors import IdempotencyKeyReused
from services.payments.domain import EventStatus, PaymentStatus, PayoutStatus

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
    refund: Mapping[str, Any] | None
    # Refund ids Paystack reported failed: a replay of one answers without a new refund.
    failed_refund_ids: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    # Paystack's verify of the charge, as it settled the payment.
    verification: Mapping[str, Any] | None = None
    # Paystack's ids of our refunds that failed, and of refunds we never asked for.
    failed_paystack_refund_ids: tuple[str, ...] = ()
    foreign_refund_ids: tuple[str, ...] = ()
    # Our refunds Paystack failed (each as it was when it failed).
    failed_refunds: tuple[Mapping[str, Any], ...] = ()
    # References Paystack already held from an earlier attempt (see domain.payment_reference).
    earlier_references: tuple[str, ...] = ()

    @classmethod
    def of(cls, doc: Document) -> Payment:
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
            refund=doc.get("refund"),
            failed_refund_ids=tuple(r.get("refundId", "") for r in doc.get("failedRefunds", [])),
            created_at=doc["createdAt"],
            updated_at=doc["updatedAt"],
            verification=doc.get("verification"),
            failed_paystack_refund_ids=tuple(
                str(r["paystackRefundId"]) for r in doc.get("failedRefunds", []) if r.get("paystackRefundId")
            ),
            foreign_refund_ids=tuple(str(r.get("id")) for r in doc.get("foreignRefunds", [])),
            failed_refunds=tuple(doc.get("failedRefunds", [])),
            earlier_references=tuple(doc.get("earlierReferences", [])),
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
    async def lease_checkout(self, payment_id: str, duration: timedelta) -> tuple[Document | None, str]:
        """The lease to initialize a payment at Paystack (while it has no checkout URL)."""
        return await self.take_lease(
            self.payments, {"paymentId": payment_id, "authorizationUrl": None}, "initLease", duration
        )

    async def lease_refund(self, payment_id: str, refund_id: str, duration: timedelta) -> tuple[Document | None, str]:
        """The lease to ask Paystack for a refund (until it has accepted one)."""
        match = {"paymentId": payment_id, "refund.refundId": refund_id, "refund.requested": False}
        return await self.take_lease(self.payments, match, "refundLease", duration)

    async def lease_transfer(self, payout_id: str, duration: timedelta) -> tuple[Document | None, str]:
        """The lease to ask Paystack for a payout's transfer (until it has accepted it)."""
        return await self.take_lease(
            self.payouts, {"payoutId": payout_id, "requested": False}, "transferLease", duration
        )

    async def lease_free(self, collection: str, key: str, name: str) -> bool:
        """Is the lease `name` on the record free (released, or run out)?"""
        field = {"payments": "paymentId", "payouts": "payoutId"}[collection]
        doc = await self.database[collection].find_one({field: key}, {f"{name}Until": 1})
        return doc is None or doc.get(f"{name}Until", EPOCH) < now()

    @staticmethod
    async def take_lease(
        collection: AsyncCollection[Document], match: Mapping[str, Any], name: str, duration: timedelta
    ) -> tuple[Document | None, str]:
        """Atomically take the lease `name` on the document matching `match`.

        Returns the document and a token that later writes must present, or
        (None, "") if another holder's lease is still running (or nothing matches).
        """
        stamp = now()
        token = secrets.token_hex(8)
        taken = await collection.update_one(
            {**match, f"{name}Until": {"$lt": stamp}},
            {"$set": {f"{name}Until": stamp + duration, f"{name}Token": token}},
        )
        if not taken.modified_count:
            return None, ""
        return await collection.find_one({**match, f"{name}Token": token}), token

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

    @staticmethod
    def _conditions(statuses: Sequence[str] | None, lease: tuple[str, str] | None) -> dict[str, Any]:
        conditions: dict[str, Any] = {}
        if statuses is not None:
            conditions["status"] = {"$in": list(statuses)}
        if lease is not None:
            conditions[f"{lease[0]}Token"] = lease[1]
        return conditions

    @staticmethod
    def _set(changes: Mapping[str, Any], lease: tuple[str, str] | None, release_lease: bool) -> dict[str, Any]:
        values = {**changes, "updatedAt": now()}
        if release_lease and lease is not None:
            values[f"{lease[0]}Until"] = EPOCH
        return values

    # -- payments ------------------------------------------------------------------------------
    async def insert_payment(self, doc: Document) -> Payment:
        """Insert the payment unless one with its id exists; return what is stored."""
        written = await self._write(
            self.payments,
            {"paymentId": doc["paymentId"]},
            {"$setOnInsert": {**doc, "initLeaseUntil": EPOCH, "refundLeaseUntil": EPOCH}},
            upsert=True,
        )
        return Payment.of(stored(written))

    async def payment(self, payment_id: str) -> Payment | None:
        doc = await self.payments.find_one({"paymentId": payment_id})
        return Payment.of(doc) if doc else None

    async def payment_by_reference(self, reference: str) -> Payment | None:
        doc = await self.payments.find_one({"paystackReference": reference}) or await self.payments.find_one(
            {"earlierReferences": reference}
        )
        return Payment.of(doc) if doc else None

    async def update_payment(
        self,
        payment_id: str,
        changes: Mapping[str, Any],
        *,
        statuses: Sequence[PaymentStatus] | None = None,
        lease: tuple[str, str] | None = None,
        release_lease: bool = False,
        unset: Sequence[str] = (),
        push: Mapping[str, Any] | None = None,
        push_each: Mapping[str, Sequence[Any]] | None = None,
        match: Mapping[str, Any] | None = None,
    ) -> Payment | None:
        """Apply `changes` if the payment is in one of `statuses`, meets `match` (and the
        lease `(name, token)` is still ours, released if asked); the updated payment, or
        None if not applied."""
        update: dict[str, Any] = {"$set": self._set(changes, lease, release_lease)}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        pushed = {**(push or {}), **{field: {"$each": list(values)} for field, values in (push_each or {}).items()}}
        if pushed:
            update["$push"] = pushed
        doc = await self._write(
            self.payments,
            {"paymentId": payment_id},
            update,
            {**self._conditions(None if statuses is None else [str(s) for s in statuses], lease), **(match or {})},
        )
        return Payment.of(doc) if doc else None

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
        payment = await self.payment(payment_id)
        if (
            payment is None
            or payment.status is not PaymentStatus.REFUND_PENDING
            or (payment.refund or {}).get("refundId") != refund_id
        ):
            return None
        assert payment.refund is not None
        stamp = now()
        doc = await self._write(
            self.payments,
            {"paymentId": payment_id},
            {
                "$set": {"status": str(PaymentStatus.SUCCESS), "updatedAt": stamp},
                "$push": {"failedRefunds": {**payment.refund, "failedAt": stamp, "data": dict(data)}},
                "$unset": {"refund": ""},
            },
            {"status": str(PaymentStatus.REFUND_PENDING), "refund.refundId": payment.refund.get("refundId")},
        )
        return Payment.of(doc) if doc else None

    async def claim_due_event(self, lease: timedelta, candidates: int = 8) -> Document | None:
        """The oldest pending event whose next attempt is due, leased to the caller
        (its `leaseToken`). Several candidates are tried, since another worker may
        take the first between our read and our write."""
        stamp = now()
        due = {"status": str(EventStatus.PENDING), "nextAttemptAt": {"$lte": stamp}, "leaseUntil": {"$lt": stamp}}
        cursor = self.events.find(due, {"eventId": 1}).sort("nextAttemptAt", ASCENDING).limit(candidates)
        for candidate in await cursor.to_list():
            token = secrets.token_hex(8)
            taken = await self.events.update_one(
                {"eventId": candidate["eventId"], **due},
                {"$set": {"leaseUntil": stamp + lease, "leaseToken": token}},
            )
            if taken.modified_count:
                return await self.events.find_one({"eventId": candidate["eventId"]})
        return None

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
    async def due_for_check(self, collection: str, statuses: Sequence[str], at: datetime, limit: int) -> list[Document]:
        """Open records (payments or payouts in `statuses`) whose next check is due."""
        cursor = (
            self.database[collection]
            .find({"status": {"$in": list(statuses)}, "checkAt": {"$lte": at}})
            .sort("checkAt", ASCENDING)
            .limit(limit)
        )
        return await cursor.to_list()

    async def claim_check(self, collection: str, key: Mapping[str, Any], seen_at: datetime, next_at: datetime) -> bool:
        """Take this round's check of one record: moving its `checkAt` on from the value
        read is a compare-and-set, so of several janitors (replicas) one wins."""
        taken = await self.database[collection].update_one(
            {**key, "checkAt": seen_at}, {"$set": {"checkAt": next_at}, "$inc": {"checks": 1}}
        )
        return bool(taken.modified_count)

    async def backfill_checks(self, first_check: datetime) -> None:
        """Records written before the janitor existed get their first check."""
        for collection in ("payments", "payouts"):
            await self.database[collection].update_many(
                {"checkAt": {"$exists": False}}, {"$set": {"checkAt": first_check, "checks": 0}}
            )

    # -- payout recipients ------------------------------------------------------------------------
    async def insert_recipient(self, doc: Document) -> Recipient:
        written = await self._write(self.recipients, {"id": doc["id"]}, {"$setOnInsert": doc}, upsert=True)
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
    async def insert_payout(self, doc: Document) -> Payout:
        written = await self._write(
            self.payouts,
            {"payoutId": doc["payoutId"]},
            {"$setOnInsert": {**doc, "transferLeaseUntil": EPOCH}},
            upsert=True,
        )
        return Payout.of(stored(written))

    async def payout(self, payout_id: str) -> Payout | None:
        doc = await self.payouts.find_one({"payoutId": payout_id})
        return Payout.of(doc) if doc else None

    async def payout_by_transfer(self, transfer_code: str, reference: str) -> Payout | None:
        doc = None
        if transfer_code:
            doc = await self.payouts.find_one({"transferCode": transfer_code})
        if doc is None and reference:
            doc = await self.payouts.find_one({"reference": reference})
        return Payout.of(doc) if doc else None

    async def update_payout(
        self,
        payout_id: str,
        changes: Mapping[str, Any],
        *,
        statuses: Sequence[PayoutStatus] | None = None,
        lease: tuple[str, str] | None = None,
        release_lease: bool = False,
    ) -> Payout | None:
        doc = await self._write(
            self.payouts,
            {"payoutId": payout_id},
            {"$set": self._set(changes, lease, release_lease)},
            self._conditions(None if statuses is None else [str(s) for s in statuses], lease),
        )
        return Payout.of(doc) if doc else None

    # -- the outbox of outcomes --------------------------------------------------------------
    async def append_outcome(self, outcome_id: str, kind: str, payload: bytes) -> int:
        """Append an outcome once, with the next sequence number; its seq (the first one's on a repeat).

        The counter is incremented and the outcome inserted in one transaction, so a
        seq is never taken without its outcome (no gaps), and two appends racing for
        the counter conflict and run one after the other (commit order is seq order):
        whoever sees seq n can already see every seq below it.
        """
        existing = await self.outcomes.find_one({"outcomeId": outcome_id}, {"seq": 1})
        if existing is not None:
            return int(existing["seq"])

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
            async with self.database.client.start_session() as session:
                return await session.with_transaction(append)
        except DuplicateKeyError:
            # The same step, repeated concurrently, appended it first.
            return int(stored(await self.outcomes.find_one({"outcomeId": outcome_id}, {"seq": 1}))["seq"])

    async def outcomes_after(self, after_seq: int, limit: int) -> list[tuple[int, datetime, bytes]]:
        """Up to `limit` outcomes after `after_seq`, in order: (seq, published at, payload)."""
        cursor = self.outcomes.find({"seq": {"$gt": after_seq}}).sort("seq", ASCENDING).limit(limit)
        return [(int(d["seq"]), d["publishedAt"], bytes(d["payload"])) async for d in cursor]
