"""How Paystack prints each object, field by field.

Each function follows a sample from Paystack's documentation (the
`dist/api/<group>/<route>/response.json` samples of PaystackOSS/doc-code-snippets:
Verify Transaction, List Transactions, Create, Fetch and List Refund(s), Create
Transfer Recipient, Initiate, Verify and List Transfer(s), and the webhook event
samples), including the fields the simulator has no real value for
(`fees_split`, `plan`, `pos_transaction_data`, ...), so a client that reads a
field Paystack documents finds it here too. Paystack prints some fields twice
in two spellings (`paid_at` and `paidAt`); so do we. Where two of Paystack's
sources disagree, the function says which it follows.
"""

from __future__ import annotations

from typing import Any

from services.paystack_sim.records import (
    DOMAIN,
    Card,
    Customer,
    Recipient,
    Refund,
    RefundStatus,
    Transaction,
    TransactionStatus,
    Transfer,
    iso,
)

# The integration (merchant account) every object belongs to.
INTEGRATION_ID = 100_001
BUSINESS_NAME = "GoFund (Paystack simulator)"
# The integration owner's e-mail: Paystack names whoever refunded (`refunded_by`), an e-mail in
# its samples; the simulator's integration has one user, this one (simulator's choice).
INTEGRATION_EMAIL = "owner@gofund.test"
# The card processor a refund goes through: `processor` in refund events, the refund's `channel`
# once it settled (Paystack's Fetch Refund sample prints the processor, "migs", there).
PROCESSOR = "simulator"
# The checkout's client address; Paystack records the paying browser's.
CHECKOUT_IP_ADDRESS = "127.0.0.1"


def _iso_or_none(epoch_ms: int | None) -> str | None:
    return iso(epoch_ms) if epoch_ms is not None else None


def customer(record: Customer) -> dict[str, Any]:
    return {
        "id": record.id,
        "first_name": None,
        "last_name": None,
        "email": record.email,
        "customer_code": record.customer_code,
        "phone": None,
        "metadata": None,
        "risk_action": "default",
        "international_format_phone": None,
    }


def authorization(card: Card | None) -> dict[str, Any]:
    # Paystack prints an empty object until a charge has been attempted.
    if card is None:
        return {}
    return {
        "authorization_code": card.authorization_code,
        "bin": card.bin,
        "last4": card.last4,
        "exp_month": card.exp_month,
        "exp_year": card.exp_year,
        "channel": "card",
        "card_type": card.card_type,
        "bank": card.bank,
        "country_code": card.country_code,
        "brand": card.brand,
        "reusable": card.reusable,
        "signature": card.signature,
        "account_name": None,
        "receiver_bank_account_number": None,
        "receiver_bank": None,
    }


def _log(record: Transaction) -> dict[str, Any] | None:
    """The checkout's activity log; Paystack prints null until the customer acted."""
    if record.paid_at is None and record.status is TransactionStatus.ABANDONED:
        return None
    finished_at = record.paid_at or record.created_at
    succeeded = record.status in (TransactionStatus.SUCCESS, TransactionStatus.REVERSED)
    seconds = max(1, (finished_at - record.created_at) // 1000)
    last = (
        {"type": "success", "message": "Successfully paid with card", "time": seconds}
        if succeeded
        else {"type": "error", "message": "Error: Declined", "time": seconds}
    )
    return {
        "start_time": record.created_at // 1000,
        "time_spent": seconds,
        "attempts": 1,
        "errors": 0 if succeeded else 1,
        "success": succeeded,
        "mobile": False,
        "input": [],
        "history": [{"type": "action", "message": "Attempted to pay with card", "time": seconds}, last],
    }


def transaction(record: Transaction, owner: Customer) -> dict[str, Any]:
    """Verify Transaction's `data`, and the `data` of `charge.success`."""
    paid_at = _iso_or_none(record.paid_at)
    created_at = iso(record.created_at)
    return {
        "id": record.id,
        "domain": DOMAIN,
        "status": record.status.value,
        "reference": record.reference,
        "receipt_number": None,
        "amount": record.amount,
        "message": None,
        "gateway_response": record.gateway_response,
        "paid_at": paid_at,
        "created_at": created_at,
        "channel": "card",
        "currency": record.currency,
        "ip_address": CHECKOUT_IP_ADDRESS,
        # Paystack prints "" for a transaction initialized without metadata.
        "metadata": record.metadata if record.metadata is not None else "",
        "log": _log(record),
        "fees": record.fees,
        "fees_split": None,
        "authorization": authorization(record.card),
        "customer": customer(owner),
        "plan": None,
        "split": {},
        "order_id": None,
        "paidAt": paid_at,
        "createdAt": created_at,
        "requested_amount": record.requested_amount,
        "pos_transaction_data": None,
        "source": None,
        "fees_breakdown": None,
        "connect": None,
        "transaction_date": created_at,
        "plan_object": {},
        "subaccount": {},
    }


# List Transactions' sample prints fewer fields than Verify Transaction's, in this order.
_LISTED_TRANSACTION_FIELDS = (
    "id",
    "domain",
    "status",
    "reference",
    "amount",
    "message",
    "gateway_response",
    "paid_at",
    "created_at",
    "channel",
    "currency",
    "ip_address",
    "metadata",
    "log",
    "fees",
    "fees_split",
    "customer",
    "authorization",
    "plan",
    "split",
    "subaccount",
    "order_id",
    "paidAt",
    "createdAt",
    "requested_amount",
    "source",
    "connect",
    "pos_transaction_data",
)


def listed_transaction(record: Transaction, owner: Customer) -> dict[str, Any]:
    """One of List Transactions' `data`: the verify shape cut to the list sample's fields.

    The list sample prints `metadata: null` where verify prints "", `plan` as an
    object where verify prints null, and `source` as an object naming the route
    that created the transaction (every one here came through initialize).
    """
    full = transaction(record, owner)
    listed = {name: full[name] for name in _LISTED_TRANSACTION_FIELDS}
    listed["metadata"] = record.metadata
    listed["plan"] = {}
    listed["source"] = {
        "source": "merchant_api",
        "type": "api",
        "identifier": None,
        "entry_point": "transaction_initialize",
    }
    return listed


def fetched_transaction(record: Transaction, owner: Customer) -> dict[str, Any]:
    """Fetch Transaction's `data`: verify's fields without `transaction_date` and `plan_object`.

    The fetch sample adds `helpdesk_link`, prints `plan` as an object, `source` as
    the route that created the transaction, and the customer's `metadata` as an
    object (Paystack's OpenAPI spec: not nullable there).
    """
    fetched = {name: value for name, value in transaction(record, owner).items() if name not in _VERIFY_ONLY}
    fetched["helpdesk_link"] = None
    fetched["plan"] = {}
    fetched["source"] = {"type": "api", "source": "merchant_api", "identifier": None}
    fetched["customer"] = {**fetched["customer"], "metadata": {}}
    return fetched


_VERIFY_ONLY = ("transaction_date", "plan_object")


def _refunded_transaction(record: Transaction, owner: Customer) -> dict[str, Any]:
    """The transaction as Create Refund embeds it: a summary, not the whole object."""
    paid_at = _iso_or_none(record.paid_at)
    return {
        "id": record.id,
        "domain": DOMAIN,
        "reference": record.reference,
        "amount": record.amount,
        "paid_at": paid_at,
        "channel": "card",
        "currency": record.currency,
        "authorization": authorization(record.card),
        "customer": customer(owner),
        "plan": {},
        "subaccount": {"currency": None},
        "split": {},
        "order_id": None,
        "paidAt": paid_at,
        "pos_transaction_data": None,
        "source": None,
        "fees_breakdown": None,
    }


def _expected_at(record: Refund) -> str:
    # Paystack quotes up to ten working days for a card refund.
    return iso(record.created_at + 9 * 24 * 3600 * 1000)


def _deducted(record: Refund) -> int:
    """What the refund took from the merchant's balance: all of it once processed (Fetch Refund's
    sample: `deducted_amount` = `amount`, `fully_deducted` true), nothing before (Create Refund's: 0, false)."""
    return record.amount if record.status is RefundStatus.PROCESSED else 0


def _refund_channel(record: Refund) -> str | None:
    return PROCESSOR if record.status is not RefundStatus.PENDING else None


def refund(record: Refund, refunded: Transaction, owner: Customer) -> dict[str, Any]:
    """Create Refund's `data`: the transaction embedded as a summary, no `refunded_at` (the sample has none)."""
    return {
        "transaction": _refunded_transaction(refunded, owner),
        "integration": INTEGRATION_ID,
        "deducted_amount": _deducted(record),
        "channel": _refund_channel(record),
        "merchant_note": record.merchant_note,
        "customer_note": record.customer_note,
        "status": record.status.value,
        "refunded_by": INTEGRATION_EMAIL,
        "expected_at": _expected_at(record),
        "currency": record.currency,
        "domain": DOMAIN,
        "amount": record.amount,
        "fully_deducted": _deducted(record) == record.amount,
        "id": record.id,
        "createdAt": iso(record.created_at),
        "updatedAt": iso(record.updated_at),
    }


def fetched_refund(record: Refund, refunded: Transaction) -> dict[str, Any]:
    """Fetch Refund's `data`: `transaction` is the transaction's numeric id, `dispute` and `settlement` null.

    Paystack's OpenAPI spec (PaystackOSS/openapi, RefundFetchResponse) lists more
    fields than the sample (`transaction_reference`, `customer`, `refund_type`,
    ...); the simulator prints the sample's, so a client cannot come to lean on
    fields the sample does not promise.
    """
    return {
        "integration": INTEGRATION_ID,
        "transaction": refunded.id,
        "dispute": None,
        "settlement": None,
        "domain": DOMAIN,
        "amount": record.amount,
        "deducted_amount": _deducted(record),
        "fully_deducted": _deducted(record) == record.amount,
        "currency": record.currency,
        "channel": _refund_channel(record),
        "status": record.status.value,
        "refunded_by": INTEGRATION_EMAIL,
        "refunded_at": _iso_or_none(record.refunded_at),
        "expected_at": _expected_at(record),
        "customer_note": record.customer_note,
        "merchant_note": record.merchant_note,
        "id": record.id,
        "createdAt": iso(record.created_at),
        "updatedAt": iso(record.updated_at),
    }


def listed_refund(record: Refund, refunded: Transaction) -> dict[str, Any]:
    """One of List Refunds' `data`, as its sample prints it.

    The sample differs from Fetch Refund's: times in snake case, and
    `deducted_amount`/`fully_deducted` null until processed, then the amount and
    1 (a number). The OpenAPI spec's list item spells the time `createdAt`;
    both spellings are printed.
    """
    processed = record.status is RefundStatus.PROCESSED
    return {
        "id": record.id,
        "integration": INTEGRATION_ID,
        "domain": DOMAIN,
        "transaction": refunded.id,
        "dispute": None,
        "amount": record.amount,
        "deducted_amount": record.amount if processed else None,
        "currency": record.currency,
        "channel": _refund_channel(record),
        "fully_deducted": 1 if processed else None,
        "refunded_by": INTEGRATION_EMAIL,
        "refunded_at": _iso_or_none(record.refunded_at),
        "expected_at": _expected_at(record),
        "settlement": None,
        "customer_note": record.customer_note,
        "merchant_note": record.merchant_note,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "createdAt": iso(record.created_at),
        "status": record.status.value,
    }


def refund_event(record: Refund, owner: Customer) -> dict[str, Any]:
    """The `data` of `refund.processed` and `refund.failed`.

    Paystack's samples print `amount` as a string in `refund.processed` (and
    in `refund.pending`/`refund.processing`) but as a number in `refund.failed`;
    the simulator copies that, so a receiver must accept both. The event names
    the refund only by `transaction_reference` (and the processor's
    `refund_reference`), never by the refund's `id`.
    """
    return {
        "status": record.status.value,
        "transaction_reference": record.transaction_reference,
        "refund_reference": record.refund_reference,
        "amount": str(record.amount) if record.status is RefundStatus.PROCESSED else record.amount,
        "currency": record.currency,
        "processor": PROCESSOR,
        "customer": {"first_name": None, "last_name": None, "email": owner.email},
        "integration": INTEGRATION_ID,
        "domain": DOMAIN,
    }


def recipient(record: Recipient) -> dict[str, Any]:
    """Create Transfer Recipient's `data`; also embedded in transfer events."""
    return {
        "active": True,
        "createdAt": iso(record.created_at),
        "currency": record.currency,
        "description": record.description,
        "domain": DOMAIN,
        "email": record.email,
        "id": record.id,
        "integration": INTEGRATION_ID,
        "metadata": record.metadata,
        "name": record.name,
        "recipient_code": record.recipient_code,
        "type": record.type,
        "updatedAt": iso(record.updated_at),
        "is_deleted": False,
        "details": {
            "authorization_code": None,
            "account_number": record.account_number,
            "account_name": record.account_name,
            "bank_code": record.bank_code,
            "bank_name": record.bank_name,
        },
    }


def transfer(record: Transfer, to: Recipient) -> dict[str, Any]:
    """Initiate Transfer's `data`: the recipient appears as its numeric id."""
    return {
        "transfersessionid": [],
        "transfertrials": [],
        "domain": DOMAIN,
        "amount": record.amount,
        "currency": record.currency,
        "reference": record.reference,
        "source": record.source,
        "source_details": None,
        "reason": record.reason,
        "status": record.status.value,
        "failures": None,
        "transfer_code": record.transfer_code,
        "titan_code": None,
        "transferred_at": _iso_or_none(record.transferred_at),
        "id": record.id,
        "integration": INTEGRATION_ID,
        "request": record.id,
        "recipient": to.id,
        "createdAt": iso(record.created_at),
        "updatedAt": iso(record.updated_at),
    }


def transfer_event(record: Transfer, to: Recipient) -> dict[str, Any]:
    """The `data` of `transfer.success`, `transfer.failed` and `transfer.reversed` (and Verify Transfer's)."""
    to_json = recipient(to)
    # The event samples spell the recipient's times in snake case.
    to_json["created_at"] = to_json.pop("createdAt")
    to_json["updated_at"] = to_json.pop("updatedAt")
    return {
        "amount": record.amount,
        "currency": record.currency,
        "domain": DOMAIN,
        "failures": None,
        "id": record.id,
        "integration": {"id": INTEGRATION_ID, "is_live": False, "business_name": BUSINESS_NAME},
        "reason": record.reason,
        "reference": record.reference,
        "source": record.source,
        "source_details": None,
        "status": record.status.value,
        "titan_code": None,
        "transfer_code": record.transfer_code,
        "transferred_at": _iso_or_none(record.transferred_at),
        "recipient": to_json,
        "session": {"provider": "nip" if record.session_id else None, "id": record.session_id},
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
    }


def _verified_recipient(to: Recipient) -> dict[str, Any]:
    """The recipient as Verify Transfer embeds it: camel-case times, and `is_deleted` spelled twice."""
    return {**recipient(to), "isDeleted": False}


def verified_transfer(record: Transfer, to: Recipient) -> dict[str, Any]:
    """Verify Transfer's `data`: camel-case times, `integration` a number, the recipient embedded.

    Unlike the webhook data (`transfer_event`), which keeps its own samples' snake case.
    """
    return {
        **listed_transfer(record, to),
        "gateway_response": None,
    }


def listed_transfer(record: Transfer, to: Recipient) -> dict[str, Any]:
    """One of List Transfers' `data`: Verify Transfer's fields without `gateway_response`.

    Paystack's List Transfers sample is an older, shorter print (no `reference`,
    no `session`); the OpenAPI spec's list item (TransferListResponseArray) has
    Verify Transfer's fields, and is what the simulator follows.
    """
    return {
        "amount": record.amount,
        "createdAt": iso(record.created_at),
        "currency": record.currency,
        "domain": DOMAIN,
        "failures": None,
        "id": record.id,
        "integration": INTEGRATION_ID,
        "reason": record.reason,
        "reference": record.reference,
        "source": record.source,
        "source_details": None,
        "status": record.status.value,
        "titan_code": None,
        "transfer_code": record.transfer_code,
        "request": record.id,
        "transferred_at": _iso_or_none(record.transferred_at),
        "updatedAt": iso(record.updated_at),
        "recipient": _verified_recipient(to),
        "session": {"provider": "nip" if record.session_id else None, "id": record.session_id},
        "fee_charged": record.fee_charged,
        "fees_breakdown": None,
    }
