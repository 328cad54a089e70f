"""How Paystack prints each object, field by field.

Each function follows a sample from Paystack's documentation (Verify
Transaction, Create Refund, Create Transfer Recipient, Initiate Transfer and
the webhook event samples), including the fields the simulator has no real
value for (`fees_split`, `plan`, `pos_transaction_data`, ...), so a client that
reads a field Paystack documents finds it here too. Paystack prints some fields
twice in two spellings (`paid_at` and `paidAt`); so do we.
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


def refund(record: Refund, refunded: Transaction, owner: Customer) -> dict[str, Any]:
    """Create Refund's and Fetch Refund's `data`."""
    return {
        "transaction": _refunded_transaction(refunded, owner),
        "integration": INTEGRATION_ID,
        "deducted_amount": 0,
        "channel": None,
        "merchant_note": record.merchant_note,
        "customer_note": record.customer_note,
        "status": record.status.value,
        # Paystack names the dashboard user who refunded; an API refund has none here.
        "refunded_by": None,
        "refunded_at": _iso_or_none(record.refunded_at),
        # Paystack quotes up to ten working days for a card refund.
        "expected_at": iso(record.created_at + 9 * 24 * 3600 * 1000),
        "currency": record.currency,
        "domain": DOMAIN,
        "amount": record.amount,
        "fully_deducted": False,
        "id": record.id,
        "createdAt": iso(record.created_at),
        "updatedAt": iso(record.updated_at),
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
        "processor": "simulator",
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
