"""The simulator's books: what it remembers about each Paystack object.

Plain dataclasses holding only what Paystack's responses are built from
(`shapes` prints them). Times are wall-clock epoch milliseconds, so that a
schedule written before a restart (a webhook retry, an automatic settlement)
means the same moment after it. Amounts are integers in the currency's
subunit (kobo, pesewas, cents), as Paystack's API takes and returns them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# Paystack's test domain: every object the simulator makes is a test-mode object.
DOMAIN = "test"


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(epoch_ms: int) -> str:
    """Paystack's timestamp format: UTC, milliseconds, `Z` (`2022-08-09T14:21:32.000Z`)."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


class TransactionStatus(StrEnum):
    # Paystack reports an initialized transaction nobody has paid yet as
    # `abandoned` ("The customer has not completed the transaction"); it can
    # still be paid and become `success`.
    ABANDONED = "abandoned"
    SUCCESS = "success"
    FAILED = "failed"
    # Paystack's word for a transaction refunded in full.
    REVERSED = "reversed"


class RefundStatus(StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    FAILED = "failed"


class TransferStatus(StrEnum):
    PENDING = "pending"
    SUCCESS = "success"
    FAILED = "failed"
    REVERSED = "reversed"


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # not yet answered with 200; another attempt is scheduled
    DELIVERED = "delivered"  # an attempt got 200
    FAILED = "failed"  # every attempt Paystack would make failed; no more tries
    # Lost on purpose by /_sim/webhooks/drop, as a webhook Paystack never sends: no (more) attempts.
    DROPPED = "dropped"


class RefundOrigin(StrEnum):
    """Who asked for a refund; Paystack prints no difference, the simulator remembers it for tests."""

    API = "api"  # POST /refund: the merchant's code
    DASHBOARD = "dashboard"  # /_sim/refunds: someone on Paystack's dashboard, behind the code's back


@dataclass
class Customer:
    id: int
    customer_code: str
    email: str


@dataclass
class Card:
    """The authorization a successful card charge leaves behind (Paystack's test Visa)."""

    authorization_code: str
    signature: str
    bin: str = "408408"
    last4: str = "4081"
    exp_month: str = "12"
    exp_year: str = "2030"
    card_type: str = "visa "
    bank: str = "TEST BANK"
    country_code: str = "NG"
    brand: str = "visa"
    reusable: bool = True


@dataclass
class Transaction:
    id: int
    reference: str
    access_code: str
    customer_email: str
    # What the merchant initialized and what the charge captured; they differ
    # only when the checkout's `amount` control says so.
    requested_amount: int
    amount: int
    currency: str
    callback_url: str | None
    metadata: Any
    status: TransactionStatus
    gateway_response: str
    created_at: int
    paid_at: int | None = None
    fees: int | None = None
    card: Card | None = None


@dataclass
class Refund:
    id: int
    transaction_reference: str
    amount: int
    currency: str
    status: RefundStatus
    merchant_note: str
    customer_note: str
    created_at: int
    updated_at: int
    # Paystack fills the processor's reference in only once the refund settles.
    refund_reference: str | None = None
    refunded_at: int | None = None
    # When it settles by itself (GOFUND_PAYSTACK_SIM_SETTLE_MS), if it does.
    settle_at: int | None = None
    origin: RefundOrigin = RefundOrigin.API


@dataclass
class Recipient:
    id: int
    recipient_code: str
    type: str
    name: str
    account_number: str
    account_name: str
    bank_code: str
    bank_name: str
    currency: str
    description: str
    email: str | None
    metadata: Any
    created_at: int
    updated_at: int


@dataclass
class Transfer:
    id: int
    transfer_code: str
    reference: str
    amount: int
    currency: str
    source: str
    reason: str
    recipient_code: str
    status: TransferStatus
    created_at: int
    updated_at: int
    transferred_at: int | None = None
    # The interbank session id, known once the bank answered.
    session_id: str | None = None
    settle_at: int | None = None
    # Paystack's fee for the transfer, fixed when it is initiated (Verify Transfer's `fee_charged`).
    fee_charged: int = 0


@dataclass
class Attempt:
    at: int
    http_status: int | None
    error: str | None


@dataclass
class Event:
    """One webhook to deliver: the exact bytes sent on every attempt, and how each attempt went."""

    index: int
    event: str
    # The transaction, refund or transfer reference it is about (for lookups).
    reference: str
    body: str
    created_at: int
    status: DeliveryStatus = DeliveryStatus.PENDING
    next_attempt_at: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    # Set on a copy made by /_sim/webhooks/redeliver: the event it repeats.
    redelivery_of: int | None = None
    dropped_at: int | None = None

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Event:
        attempts = [Attempt(**attempt) for attempt in values.pop("attempts")]
        status = DeliveryStatus(values.pop("status"))
        return cls(**values, attempts=attempts, status=status)


@dataclass
class Drop:
    """An armed /_sim/webhooks/drop: the next event recorded (about `reference`, if set) is never delivered."""

    reference: str | None
    armed_at: int

    def matches(self, reference: str) -> bool:
        return self.reference in (None, reference)


def transaction_from_json(values: dict[str, Any]) -> Transaction:
    card = values.pop("card")
    status = TransactionStatus(values.pop("status"))
    return Transaction(**values, status=status, card=Card(**card) if card is not None else None)


def refund_from_json(values: dict[str, Any]) -> Refund:
    # `origin` is absent from state files written before dashboard refunds existed: those were API refunds.
    origin = RefundOrigin(values.get("origin", RefundOrigin.API))
    return Refund(**{**values, "status": RefundStatus(values["status"]), "origin": origin})


def transfer_from_json(values: dict[str, Any]) -> Transfer:
    return Transfer(**{**values, "status": TransferStatus(values["status"])})
