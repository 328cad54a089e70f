"""Payment rules: statuses and their moves, webhook signatures and event ids,
input validation, deterministic ids. Pure: no MongoDB, no HTTP, no gRPC.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from services.common.errors import DomainError, Validator
from services.common.ids import check_id
from services.common.money import MAX_PUBLIC_AMOUNT, SUPPORTED_CURRENCIES

MAX_KEY = 200
MAX_REASON = 500
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
_ACCOUNT_NUMBER = re.compile(r"^[0-9]{6,20}$")
_BANK_CODE = re.compile(r"^[A-Za-z0-9_-]{1,20}$")


class PaymentStatus(StrEnum):
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    ABANDONED = "ABANDONED"
    REFUND_PENDING = "REFUND_PENDING"
    REFUNDED = "REFUNDED"


class PayoutStatus(StrEnum):
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    REVERSED = "REVERSED"


class EventStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSED = "PROCESSED"
    IGNORED = "IGNORED"
    PARKED = "PARKED"
    # Processed, and Paystack does not confirm what the event claims: nothing
    # moved on its word; an operator looks (reconciliation lists it).
    FLAGGED = "FLAGGED"


@dataclass(frozen=True)
class EventResult:
    """What processing a stored event did: its final status and a note for operators."""

    status: EventStatus
    note: str = ""


class NotYetConfirmed(Exception):
    """Paystack's answer does not (yet) confirm what the event says; the processor tries again later."""


# Statuses in which the capture of the payment is (or must be) in the ledger.
CAPTURED = frozenset({PaymentStatus.SUCCESS, PaymentStatus.REFUND_PENDING, PaymentStatus.REFUNDED})

# What an operator needs to list and retry webhook events and read reconciliation.
ADMIN_PERMISSION = "payments:admin"

# Paystack statuses of a refund or transfer that is not decided yet.
UNDECIDED = frozenset({"pending", "processing", "queued", "otp", "received"})

StatusT = TypeVar("StatusT", PaymentStatus, PayoutStatus)


@dataclass(frozen=True)
class Move(Generic[StatusT]):
    """One status move: from any of `sources` to `target`."""

    sources: frozenset[StatusT]
    target: StatusT


def _move(sources: set[StatusT], target: StatusT) -> Move[StatusT]:
    return Move(frozenset(sources), target)


# Every status move, by name, one table per record. The store's conditional
# updates take their `status in sources` filter and their new status from here
# and nowhere else, so two writers racing on one record move it once, and only
# along these edges. FAILED, ABANDONED and REFUNDED payments and FAILED and
# REVERSED payouts never move again.
PAYMENT_MOVES: Mapping[str, Move[PaymentStatus]] = {
    # Paystack's verify says it was paid / it failed / the checkout was given up.
    "capture": _move({PaymentStatus.PENDING}, PaymentStatus.SUCCESS),
    "fail": _move({PaymentStatus.PENDING}, PaymentStatus.FAILED),
    "abandon": _move({PaymentStatus.PENDING}, PaymentStatus.ABANDONED),
    # A refund is asked for; the ledger refused its reservation (it never reached
    # Paystack); Paystack processed it; Paystack failed it.
    "start_refund": _move({PaymentStatus.SUCCESS}, PaymentStatus.REFUND_PENDING),
    "drop_refund": _move({PaymentStatus.REFUND_PENDING}, PaymentStatus.SUCCESS),
    "refunded": _move({PaymentStatus.REFUND_PENDING}, PaymentStatus.REFUNDED),
    "refund_failed": _move({PaymentStatus.REFUND_PENDING}, PaymentStatus.SUCCESS),
}
PAYOUT_MOVES: Mapping[str, Move[PayoutStatus]] = {
    "succeed": _move({PayoutStatus.PENDING}, PayoutStatus.SUCCESS),
    # Paystack failed the transfer, or refused it before it existed.
    "fail": _move({PayoutStatus.PENDING}, PayoutStatus.FAILED),
    # A reversal comes after a success (or, its events out of order, before it).
    "reverse": _move({PayoutStatus.PENDING, PayoutStatus.SUCCESS}, PayoutStatus.REVERSED),
}
# The move that settles a payout as each final status of Paystack's Verify Transfer says.
TRANSFER_SETTLES: Mapping[str, Move[PayoutStatus]] = {
    "success": PAYOUT_MOVES["succeed"],
    "failed": PAYOUT_MOVES["fail"],
    "reversed": PAYOUT_MOVES["reverse"],
}


# -- errors ---------------------------------------------------------------------
class PaymentNotFound(DomainError):
    pass


class PayoutNotFound(DomainError):
    pass


class WebhookEventNotFound(DomainError):
    pass


class WebhookEventIgnored(DomainError):
    """An IGNORED event cannot be retried: nothing would process it."""


class PaymentNotRefundable(DomainError):
    pass


class NoPayoutRecipient(DomainError):
    pass


class InvalidSignature(DomainError):
    pass


class MalformedEvent(DomainError):
    pass


class UserNotFound(DomainError):
    pass


class PaystackUnavailable(DomainError):
    """Paystack could not be reached or answered 5xx; nothing was decided there."""


class PaystackRejected(DomainError):
    """Paystack answered and refused the request; its message and its error `code` are kept."""

    def __init__(self, message: str, *, code: str = "", metadata: Mapping[str, str] | None = None) -> None:
        # Paystack's code reaches our caller too, in the ErrorInfo's metadata.
        super().__init__(message, metadata={**(metadata or {}), **({"paystack_code": code} if code else {})})
        self.code = code


class RecipientRejected(PaystackRejected):
    """Paystack refused to register the bank account as a transfer recipient."""


class AccountNotResolved(PaystackRejected):
    """Paystack's Resolve Account Number found no account with that number at that bank."""


class PaystackNotFound(PaystackRejected):
    """Paystack answered 404: it holds no such object (a transfer or refund reference)."""


class EventStoreUnavailable(DomainError):
    pass


class OutflowRefused(DomainError):
    """The ledger refused to reserve the money (INSUFFICIENT_FUNDS): it is not there to
    send, so Paystack is never asked. A bug or race upstream asked for it twice."""


class PaystackCallInProgress(DomainError):
    """Another call holds the lease for this step at Paystack (a checkout, a refund, a
    transfer) and has not answered within this call's deadline; a retry gets its answer."""


# -- ids --------------------------------------------------------------------------
_NAMESPACE = uuid.UUID("0b6f6f3e-5b6e-4b8a-9d3c-6f0a1c2d3e4f")


def new_id() -> str:
    return str(uuid.uuid4())


def payment_reference(payment_id: str, attempt: int = 0) -> str:
    """Our Paystack reference for a payment, fixed before Paystack is first called.

    A later attempt gets a new reference only when Paystack already holds the
    first (an initialize whose answer was lost): that transaction's checkout URL
    was never shown to anyone, so it can never be paid.
    """
    # Paystack allows letters, digits and `-.=` in transaction references.
    base = "gf-" + uuid.UUID(payment_id).hex
    return base if attempt == 0 else f"{base}-{attempt}"


def duplicate_reference(refusal: PaystackRejected) -> bool:
    """Paystack refused a reference it already holds: an earlier attempt of ours reached it.

    By Paystack's error code (`duplicate_reference`), or by its wording where an
    answer carries no code.
    """
    message = refusal.message.lower()
    return refusal.code == "duplicate_reference" or "duplicate" in message or "reference already exists" in message


def already_refunded(paystack_message: str) -> bool:
    """Paystack refused a refund because earlier refunds cover the charge (one of ours, whose answer was lost)."""
    message = paystack_message.lower()
    return "fully reversed" in message or "not yet refunded" in message


def reference_not_found(refusal: PaystackRejected) -> bool:
    """Paystack's verify does not know the reference (its code, or Verify Transaction's own message)."""
    return refusal.code == "transaction_not_found" or "reference not found" in refusal.message.lower()


def payout_reference(payout_id: str) -> str:
    # Paystack allows letters, digits, `-` and `_` in transfer references.
    return "gfpo-" + uuid.UUID(payout_id).hex


# Ledger ids. Money in is posted at once (the capture); money out is reserved
# before Paystack is asked, then posted (settle / transfer) or voided.
def capture_transaction_id(payment_id: str) -> str:
    return f"payment:{payment_id}:capture"


def refund_key(payment_id: str, refund_id: str) -> str:
    """Our id for one refund of a payment (the caller's refund id may be up to 200 characters)."""
    return str(uuid.uuid5(_NAMESPACE, f"refund:{payment_id}:{refund_id}"))


def refund_reserve_id(key: str) -> str:
    return f"refund:{key}:reserve"


def refund_settle_id(key: str) -> str:
    return f"refund:{key}:settle"


def refund_void_id(key: str) -> str:
    return f"refund:{key}:void"


def payout_reserve_id(payout_id: str) -> str:
    return f"payout:{payout_id}:reserve"


def payout_transaction_id(payout_id: str) -> str:
    """Posts the payout's reservation: the transfer left escrow."""
    return f"payout:{payout_id}:transfer"


def payout_void_id(payout_id: str) -> str:
    return f"payout:{payout_id}:void"


def payout_reversal_transaction_id(payout_id: str) -> str:
    return f"payout:{payout_id}:reversal"


# -- webhooks -----------------------------------------------------------------------
# Work the service gives its own processor (the outbox), so that a step begun
# in an RPC is finished even if the RPC's caller goes away or the process dies.
SETTLE_PAYMENT = "gofund.payment.settle"  # tell goals how a verified payment ended
PAYOUT_REJECTED = "gofund.payout.rejected"  # Paystack refused a transfer outright
CHECK_PAYMENT = "gofund.payment.check"  # the janitor's look at an open payment or its refund
CHECK_PAYOUT = "gofund.payout.check"  # the janitor's look at an open payout

HANDLED_EVENTS = frozenset(
    {
        "charge.success",
        "refund.processed",
        "refund.failed",
        "transfer.success",
        "transfer.failed",
        "transfer.reversed",
    }
)


def signature_valid(secret: str, body: bytes, signature: str) -> bool:
    """Paystack signs the exact raw body: hex HMAC-SHA512 keyed by the secret key."""
    if not signature:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.strip().lower().encode())


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    event: str
    data: dict[str, Any]

    @property
    def handled(self) -> bool:
        return self.event in HANDLED_EVENTS


def parse_event(body: bytes) -> ParsedEvent:
    """The event in a signed body, with its derived id (Paystack sends none).

    The id is the event name and the most specific identity of its object:
    refunds and transfers by their own id or code, charges by our reference.
    The same delivery twice derives the same id; two different happenings
    (the refund of a charge, and the charge) never share one.
    """
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedEvent("the body is not JSON") from None
    if not isinstance(envelope, dict):
        raise MalformedEvent("the body is not a Paystack event")
    event, data = envelope.get("event"), envelope.get("data")
    if not isinstance(event, str) or not event or not isinstance(data, dict):
        raise MalformedEvent("a Paystack event has a string `event` and an object `data`")
    family = event.split(".", 1)[0]
    candidates: tuple[str, ...]
    if family == "refund":
        candidates = ("id", "refund_reference")
    elif family == "transfer":
        candidates = ("transfer_code", "reference", "id")
    else:
        candidates = ("reference", "id", "code")
    for name in candidates:
        value = data.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return ParsedEvent(event_id=f"{event}:{value}", event=event, data=data)
    charge = data.get("transaction_reference")
    if family == "refund" and isinstance(charge, str) and charge:
        # Paystack's refund events may carry neither id nor refund reference: the
        # charge's reference alone would make a second refund of it look like a
        # duplicate, so the exact bytes (the same on every redelivery) complete it.
        return ParsedEvent(f"{event}:{charge}:{hashlib.sha256(body).hexdigest()[:16]}", event, data)
    raise MalformedEvent(f"the {event} event carries no id, reference or code to identify it")


# -- Paystack's view of a charge -------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What a verify answer means for a payment of ours."""

    status: PaymentStatus | None  # the status to move to; None: leave it as it is
    mismatch: str = ""  # non-empty: Paystack disagrees with us; flag, never credit


def judge_verification(
    paystack_status: str, paystack_amount: int, paystack_currency: str, amount: int, currency: str
) -> Verdict:
    """Compare Paystack's verify with the payment. Only `success` with our
    amount and currency credits; `failed` fails it; anything else (abandoned,
    ongoing, pending...) leaves it pending, since the payer may still pay."""
    if paystack_status == "success":
        if paystack_amount != amount:
            return Verdict(None, f"Paystack captured {paystack_amount}, the payment is for {amount}")
        if paystack_currency.upper() != currency:
            return Verdict(None, f"Paystack captured {paystack_currency}, the payment is in {currency}")
        return Verdict(PaymentStatus.SUCCESS)
    if paystack_status in ("failed", "reversed"):
        return Verdict(PaymentStatus.FAILED)
    return Verdict(None)


def given_up(paystack_status: str, created_at: datetime, abandon_before: datetime | None) -> bool:
    """A checkout still `abandoned` at Paystack (it could still be paid) is given up once it
    was created before `abandon_before`: the payer had the whole idempotency window."""
    return paystack_status == "abandoned" and abandon_before is not None and created_at <= abandon_before


# -- validation --------------------------------------------------------------------
def check_key(
    check: Validator, value: str, field: str = "idempotency_key", reason: str = "INVALID_IDEMPOTENCY_KEY"
) -> None:
    check.require(
        bool(_KEY.match(value)), field, f"is required: 1 to {MAX_KEY} printable characters without spaces", reason
    )


def check_currency(check: Validator, currency: str) -> None:
    check.require(
        currency in SUPPORTED_CURRENCIES,
        "currency",
        f"must be one of {', '.join(sorted(SUPPORTED_CURRENCIES))}",
        "UNSUPPORTED_CURRENCY",
    )


def check_amount(check: Validator, amount: int) -> None:
    check.require(
        0 < amount <= MAX_PUBLIC_AMOUNT, "amount", f"must be positive and at most {MAX_PUBLIC_AMOUNT}", "INVALID_AMOUNT"
    )


def validate_initialize(
    *, idempotency_key: str, user_id: str, goal_id: str, contribution_id: str, amount: int, currency: str, callback: str
) -> None:
    check = Validator()
    check_key(check, idempotency_key)
    check_id(check, user_id, "user_id", "INVALID_USER_ID")
    check_id(check, goal_id, "goal_id", "INVALID_GOAL_ID")
    check_id(check, contribution_id, "contribution_id", "INVALID_CONTRIBUTION_ID")
    check_amount(check, amount)
    check_currency(check, currency)
    check.require(
        not callback or (callback.startswith(("https://", "http://")) and len(callback) <= 2048),
        "callback_url",
        "must be an http(s) URL of at most 2,048 characters",
        "INVALID_CALLBACK_URL",
    )
    check.raise_if_invalid()


def validate_recipient(*, account_number: str, bank_code: str, name: str, currency: str, idempotency_key: str) -> None:
    check = Validator()
    check.require(
        bool(_ACCOUNT_NUMBER.match(account_number)),
        "account_number",
        "must be 6 to 20 digits",
        "INVALID_ACCOUNT_NUMBER",
    )
    check.require(
        bool(_BANK_CODE.match(bank_code)),
        "bank_code",
        "must be Paystack's bank code (1 to 20 letters, digits, _ or -)",
        "INVALID_BANK_CODE",
    )
    check.require(0 < len(name.strip()) <= 100, "name", "must be 1 to 100 characters", "INVALID_NAME")
    check_currency(check, currency)
    check_key(check, idempotency_key)
    check.raise_if_invalid()


def validate_payout(*, payout_id: str, goal_id: str, user_id: str, amount: int, currency: str, reason: str) -> None:
    check = Validator()
    check_id(check, payout_id, "payout_id", "INVALID_PAYOUT_ID")
    check_id(check, goal_id, "goal_id", "INVALID_GOAL_ID")
    check_id(check, user_id, "user_id", "INVALID_USER_ID")
    check_amount(check, amount)
    check_currency(check, currency)
    check.require(len(reason) <= MAX_REASON, "reason", f"must be at most {MAX_REASON} characters", "INVALID_REASON")
    check.raise_if_invalid()


# Where Paystack's Resolve Account Number works (Nigeria and Ghana): a recipient's account is resolved first.
RESOLVED_CURRENCIES = frozenset({"NGN", "GHS"})

# Paystack's transfer recipient type for a bank account in each currency.
RECIPIENT_TYPES: Mapping[str, str] = {
    "NGN": "nuban",
    "GHS": "ghipss",
    "ZAR": "basa",
    "KES": "mobile_money",
    "USD": "nuban",
}
