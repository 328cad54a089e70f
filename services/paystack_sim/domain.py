"""Paystack's rules, as far as GoFund meets them: take a payment, refund it, pay out.

Request bodies arrive as parsed JSON (or form fields) and are validated the way
Paystack validates them, failing with Paystack's own error messages where its
documentation (the API reference and its published error list) gives one.
Where it gives none the message is the simulator's choice, marked so below.

Status words are Paystack's:

- transaction: `abandoned` from initialize until the checkout is completed
  (Paystack's word for "not completed yet"; it can still succeed), then
  `success` or `failed`; `reversed` once refunds processed cover the whole
  amount (a partly refunded transaction stays `success`).
- refund: `pending`, then `processed` or `failed`.
- transfer: `pending` (OTP disabled), then `success` or `failed`; `reversed`
  straight from `pending`, or after `success` (Paystack sends
  `transfer.reversed` with `transferred_at` set, so a transfer that went
  through can still come back).

Every change is saved once, together with the webhook events it causes
(`_commit`); only then are the events sent.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from functools import partial
from typing import Any, Protocol

from services.paystack_sim import banks, shapes
from services.paystack_sim.errors import AlreadySettled, ErrorCode, NotFound, PaystackError, missing
from services.paystack_sim.listing import Period
from services.paystack_sim.records import (
    Card,
    Customer,
    Event,
    Recipient,
    Refund,
    RefundOrigin,
    RefundStatus,
    Transaction,
    TransactionStatus,
    Transfer,
    TransferStatus,
    now_ms,
)
from services.paystack_sim.state import Record, State, random_code

SUPPORTED_CURRENCIES = ("NGN", "GHS", "ZAR", "KES", "USD")
# The integration's default currency, used when initialize names none.
DEFAULT_CURRENCY = "NGN"
# Recipient types Paystack documents for bank and mobile-money payouts, with
# the currency each implies. (`authorization`, paying out to a card, is not simulated.)
RECIPIENT_TYPES = {"nuban": "NGN", "ghipss": "GHS", "mobile_money": "GHS", "basa": "ZAR", "kepss": "KES"}
# The countries (by currency) whose banks hold each type of account: mobile money is Ghana's and Kenya's.
_TYPE_BANK_CURRENCIES = {
    "nuban": {"NGN"},
    "ghipss": {"GHS"},
    "mobile_money": {"GHS", "KES"},
    "basa": {"ZAR"},
    "kepss": {"KES"},
}
# Paystack: "Only -, ., = and alphanumeric characters are allowed" in a transaction reference.
_TRANSACTION_REFERENCE = re.compile(r"[A-Za-z0-9.=-]+")
# Paystack: "-, _ and alphanumeric characters" in a transfer reference. Its docs ask for
# lower case but its own samples use upper case, so both are accepted.
_TRANSFER_REFERENCE = re.compile(r"[A-Za-z0-9_-]+")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_INTEGER = re.compile(r"-?[0-9]+")


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    REVERSED = "reversed"


class EventPublisher(Protocol):
    def record(self, event: str, data: dict[str, Any], reference: str) -> Event:
        """Add the event to the state without saving it (the change that caused it saves both)."""
        ...

    def dispatch(self, record: Event) -> None:
        """Start delivering an event the state file now holds."""
        ...


class Scheduler(Protocol):
    def call_at(self, due_at_ms: int, action: Callable[[], Awaitable[None]]) -> None: ...


def parse_amount(value: Any) -> int | None:
    """An amount in subunits as Paystack takes it: a JSON integer or a string of digits ("10000")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def fees(amount: int, currency: str) -> int:
    """A realistic-looking fee, not an accounting figure: Paystack's Nigerian card pricing
    (1.5 % plus ₦100, the ₦100 waived under ₦2,500, capped at ₦2,000); 1.5 % elsewhere."""
    percentage = amount * 15 // 1000
    if currency != "NGN":
        return percentage
    flat = 10_000 if amount >= 250_000 else 0
    return min(percentage + flat, 200_000)


def transfer_fee(amount: int, currency: str) -> int:
    """A realistic-looking fee, not an accounting figure: Paystack's Nigerian transfer pricing as the
    simulator takes it (₦10 up to ₦5,000, ₦25 up to ₦50,000, ₦50 above; Verify Transfer's sample
    charges 1000 kobo on 100000), and nothing elsewhere (simulator's choice)."""
    if currency != "NGN":
        return 0
    if amount <= 500_000:
        return 1_000
    if amount <= 5_000_000:
        return 2_500
    return 5_000


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    return value.strip() if isinstance(value, str) else ""


class Paystack:
    def __init__(
        self, state: State, events: EventPublisher, scheduler: Scheduler, *, settle_ms: int, base_url: str
    ) -> None:
        self._state = state
        self._events = events
        self._scheduler = scheduler
        self._settle_ms = settle_ms
        self.base_url = base_url

    # Transactions.

    def initialize(self, body: Mapping[str, Any]) -> Transaction:
        email = _text(body, "email")
        if not email:
            raise missing("Email is not allowed to be empty")
        if not _EMAIL.fullmatch(email):
            raise PaystackError("Invalid Email Address Passed")
        amount = parse_amount(body.get("amount"))
        if amount is None:
            raise PaystackError("Invalid Amount Sent")
        if amount <= 0:
            raise PaystackError("You must specify a valid amount")
        currency = body.get("currency") or DEFAULT_CURRENCY
        if currency not in SUPPORTED_CURRENCIES:
            raise PaystackError("Currency not supported by merchant")
        reference = body.get("reference") or random_code(10)
        if not isinstance(reference, str) or not _TRANSACTION_REFERENCE.fullmatch(reference):
            raise PaystackError("Invalid character in transaction reference")
        if reference in self._state.transactions:
            raise PaystackError("Duplicate Transaction Reference", code=ErrorCode.DUPLICATE_REFERENCE)
        callback_url = body.get("callback_url")
        record = Transaction(
            id=self._state.next_id(),
            reference=reference,
            access_code=random_code(15),
            customer_email=self._customer(email).email,
            requested_amount=amount,
            amount=amount,
            currency=currency,
            callback_url=callback_url if isinstance(callback_url, str) and callback_url else None,
            metadata=_metadata(body.get("metadata")),
            status=TransactionStatus.ABANDONED,
            gateway_response="The transaction was not completed",
            created_at=now_ms(),
        )
        self._state.transactions[reference] = record
        self._state.save(self.customer_of(record), record)
        return record

    def authorization_url(self, record: Transaction) -> str:
        return f"{self.base_url}/checkout/{record.access_code}"

    def transaction(self, reference: str) -> Transaction:
        record = self._state.transactions.get(reference)
        if record is None:
            raise PaystackError("Transaction reference not found", code=ErrorCode.TRANSACTION_NOT_FOUND)
        return record

    def transaction_by_id(self, key: str) -> Transaction:
        """Fetch Transaction's lookup: by Paystack's numeric id."""
        found = self._state.transaction_by_id(int(key)) if key.isdigit() else None
        if found is None:
            raise NotFound("Transaction not found", ErrorCode.TRANSACTION_NOT_FOUND)
        return found

    def customer_of(self, record: Transaction) -> Customer:
        return self._state.customers[record.customer_email.lower()]

    def checkout(self, access_code: str) -> Transaction:
        record = self._state.transaction_by_access_code(access_code)
        if record is None:
            raise NotFound("No transaction has this access code")
        return record

    def pay(self, access_code: str, outcome: Any, amount: Any = None) -> Transaction:
        """Complete the checkout: the customer's card is charged, or declined.

        `amount` (subunits) makes the charge capture a different amount than was
        initialized: a test control for a client that must not trust the
        amount it asked for. Paystack sends a webhook only for a successful
        charge ("we currently send webhook events for just successful
        transactions"), so a declined one sends none.
        """
        record = self.checkout(access_code)
        if outcome not in (Outcome.SUCCESS, Outcome.FAILED):
            raise PaystackError('outcome must be "success" or "failed"')
        captured = record.requested_amount if amount in (None, "") else parse_amount(amount)
        if captured is None or captured <= 0:
            raise PaystackError("amount must be a positive integer in subunits")
        if record.status is not TransactionStatus.ABANDONED:
            # Simulator's choice: a completed checkout cannot be paid again.
            raise PaystackError(f"Transaction has already been completed ({record.status.value})")
        at = now_ms()
        card = Card(authorization_code="AUTH_" + random_code(10), signature="SIG_" + random_code(20))
        if outcome == Outcome.SUCCESS:
            record.status, record.gateway_response = TransactionStatus.SUCCESS, "Successful"
            record.amount, record.paid_at, record.card = captured, at, card
            record.fees = fees(captured, record.currency)
        else:
            card.reusable = False
            record.status, record.gateway_response, record.card = TransactionStatus.FAILED, "Declined", card
        caused: list[Event] = []
        if record.status is TransactionStatus.SUCCESS:
            data = shapes.transaction(record, self.customer_of(record))
            caused.append(self._events.record("charge.success", data, record.reference))
        self._commit(record, *caused)
        return record

    def list_transactions(self, status: str | None, within: Period) -> list[Transaction]:
        """List Transactions' records, newest first."""
        return sorted(
            (
                t
                for t in self._state.transactions.values()
                if status in (None, t.status.value) and within.holds(t.created_at)
            ),
            key=lambda t: t.id,
            reverse=True,
        )

    def _commit(self, *changed: Record) -> None:
        """Save the records just changed and the events they caused in one write, then send the events.

        One journal line holds both, so a kill can lose neither alone; sending
        only after the write means no webhook goes out for a change the disk lacks.
        """
        self._state.save(*changed)
        for record in changed:
            if isinstance(record, Event):
                self._events.dispatch(record)

    def _customer(self, email: str) -> Customer:
        key = email.lower()
        found = self._state.customers.get(key)
        if found is None:
            found = Customer(id=self._state.next_id(), customer_code="CUS_" + random_code(15), email=key)
            self._state.customers[key] = found
        return found

    # Refunds.

    def create_refund(self, body: Mapping[str, Any]) -> Refund:
        """POST /refund: the merchant's code asks for a refund."""
        return self._new_refund(body, RefundOrigin.API)

    def dashboard_refund(self, body: Mapping[str, Any]) -> Refund:
        """/_sim/refunds: a refund issued on Paystack's dashboard, which the merchant's code never asked for.

        Paystack prints it like any other (the same `refunded_by`, statuses and
        refund events); it settles like any other too.
        """
        return self._new_refund(body, RefundOrigin.DASHBOARD)

    def _new_refund(self, body: Mapping[str, Any], origin: RefundOrigin) -> Refund:
        key = body.get("transaction")
        if key is None or key == "":
            raise missing("transaction is required")  # simulator's choice of words
        refunded = self._refundable(key)
        refunds = self._state.refunds_of(refunded.reference)
        left = refunded.amount - sum(r.amount for r in refunds if r.status is not RefundStatus.FAILED)
        if refunded.status is TransactionStatus.REVERSED or left <= 0:
            raise PaystackError("Transaction has been fully reversed")
        amount = left if body.get("amount") in (None, "") else parse_amount(body.get("amount"))
        if amount is None or amount <= 0:
            raise PaystackError("Invalid Amount Sent")
        if amount > left:
            # Simulator's choice of words; Paystack documents the rule, not its message.
            raise PaystackError("Refund amount cannot be more than the transaction amount not yet refunded")
        currency = body.get("currency") or refunded.currency
        if currency != refunded.currency:
            raise PaystackError("Refund currency must be the transaction's currency")  # simulator's choice
        at = now_ms()
        # The notes Paystack's Create Refund sample prints when none were given.
        default_note = f"Refund for transaction {refunded.reference}"
        merchant_default = f"{default_note} by {shapes.INTEGRATION_EMAIL}"
        record = Refund(
            id=self._state.next_id(),
            transaction_reference=refunded.reference,
            amount=amount,
            currency=currency,
            status=RefundStatus.PENDING,
            merchant_note=_text(body, "merchant_note") or merchant_default,
            customer_note=_text(body, "customer_note") or default_note,
            created_at=at,
            updated_at=at,
            settle_at=at + self._settle_ms if self._settle_ms > 0 else None,
            origin=origin,
        )
        self._state.refunds[record.id] = record
        self._state.save(record)
        self._schedule_refund(record)
        return record

    def _refundable(self, key: Any) -> Transaction:
        """The transaction `key` names, by id (a number) or reference, if it can be refunded."""
        found: Transaction | None = None
        if isinstance(key, int) and not isinstance(key, bool):
            found = self._state.transaction_by_id(key)
        elif isinstance(key, str):
            found = self._state.transactions.get(key)
            if found is None and key.isdigit():
                found = self._state.transaction_by_id(int(key))
        if found is None:
            raise PaystackError("Transaction not found", code=ErrorCode.TRANSACTION_NOT_FOUND)
        if found.status not in (TransactionStatus.SUCCESS, TransactionStatus.REVERSED):
            # Simulator's choice of words: only a paid transaction can be refunded.
            raise PaystackError(f"Cannot refund a transaction that is {found.status.value}")
        return found

    def refund_by_id(self, key: str) -> Refund:
        """Fetch Refund's lookup: the refund's id only."""
        found = self._state.refunds.get(int(key)) if key.isdigit() else None
        if found is None:
            raise NotFound("Refund not found")  # simulator's choice of words
        return found

    def list_refunds(self, transaction: str | None, within: Period) -> list[Refund]:
        """List Refunds' records, newest first; `transaction` (an id or a reference) narrows them to one charge."""
        of: str | None = None
        if transaction is not None:
            found = self._state.transactions.get(transaction)
            if found is None and transaction.isdigit():
                found = self._state.transaction_by_id(int(transaction))
            if found is None:
                return []
            of = found.reference
        return sorted(
            (
                r
                for r in self._state.refunds.values()
                if of in (None, r.transaction_reference) and within.holds(r.created_at)
            ),
            key=lambda r: r.id,
            reverse=True,
        )

    def refund(self, key: str) -> Refund:
        """A refund by its id, or (for tests that know only the payment) the oldest pending one of a transaction."""
        if key.isdigit() and int(key) in self._state.refunds:
            return self._state.refunds[int(key)]
        refunds = self._state.refunds_of(key)
        pending = [r for r in refunds if r.status is RefundStatus.PENDING]
        if pending:
            return pending[0]
        if refunds:
            return refunds[-1]
        raise NotFound("Refund not found")

    def refunded_transaction(self, record: Refund) -> Transaction:
        return self._state.transactions[record.transaction_reference]

    def settle_refund(self, key: str, outcome: Any) -> Refund:
        record = self.refund(key)
        if outcome not in (Outcome.SUCCESS, Outcome.FAILED):
            raise PaystackError('a refund settles with outcome "success" or "failed"')
        if record.status is not RefundStatus.PENDING:
            raise AlreadySettled(f"Refund {record.id} is already {record.status.value}")
        at = now_ms()
        refunded = self.refunded_transaction(record)
        record.updated_at, record.settle_at = at, None
        if outcome == Outcome.SUCCESS:
            record.status, record.refunded_at = RefundStatus.PROCESSED, at
            # Paystack fills in the card processor's reference (a long number) once processed.
            record.refund_reference = "".join(secrets.choice("0123456789") for _ in range(12))
            refunds = self._state.refunds_of(refunded.reference)
            if sum(r.amount for r in refunds if r.status is RefundStatus.PROCESSED) >= refunded.amount:
                refunded.status = TransactionStatus.REVERSED
        else:
            # Paystack's refund.failed sample names the failed instant transfer here.
            record.status, record.refund_reference = RefundStatus.FAILED, "TRF_" + random_code(15)
        data = shapes.refund_event(record, self.customer_of(refunded))
        event = self._events.record(f"refund.{record.status.value}", data, record.transaction_reference)
        self._commit(record, refunded, event)
        return record

    def _schedule_refund(self, record: Refund) -> None:
        if record.settle_at is not None:
            action = partial(self._settle_by_itself, self.settle_refund, str(record.id))
            self._scheduler.call_at(record.settle_at, action)

    # Transfers.

    def create_recipient(self, body: Mapping[str, Any]) -> Recipient:
        """A payout destination.

        Paystack: "A duplicate account number will lead to the retrieval of the existing record."
        """
        kind = _text(body, "type")
        if kind not in RECIPIENT_TYPES:
            raise PaystackError(f"Recipient type must be one of {', '.join(RECIPIENT_TYPES)}")  # simulator's choice
        name = _text(body, "name")
        if not name:
            raise missing("name is required")  # simulator's choice, in Paystack's style
        account_number = _text(body, "account_number")
        if not account_number:
            raise missing("Account number is required")
        if not account_number.isdigit():
            raise PaystackError("Account number should be numeric")
        if kind == "nuban" and len(account_number) != 10:
            raise PaystackError("Account number is invalid")
        bank_code = _text(body, "bank_code")
        if not bank_code:
            raise missing("bank_code is required")
        bank = banks.bank(bank_code)
        if bank is None or bank.currency not in _TYPE_BANK_CURRENCIES[kind]:
            raise PaystackError(f"Unknown bank code: {bank_code}")
        if account_number == banks.UNRESOLVABLE_ACCOUNT_NUMBER:
            raise PaystackError("Cannot resolve account", code=ErrorCode.UNRESOLVABLE_ACCOUNT)
        currency = body.get("currency") or RECIPIENT_TYPES[kind]
        if currency not in SUPPORTED_CURRENCIES:
            raise PaystackError("Currency not supported by merchant")
        for existing in self._state.recipients.values():
            same = (existing.type, existing.account_number, existing.bank_code, existing.currency)
            if same == (kind, account_number, bank_code, currency):
                return existing
        at = now_ms()
        email = body.get("email")
        record = Recipient(
            id=self._state.next_id(),
            recipient_code="RCP_" + random_code(15),
            type=kind,
            name=name,
            account_number=account_number,
            # The name the bank holds, as Paystack resolves it (`name` is the merchant's label).
            account_name=banks.account_holder(account_number),
            bank_code=bank_code,
            bank_name=bank.name,
            currency=currency,
            description=_text(body, "description"),
            email=email if isinstance(email, str) and email else None,
            metadata=body.get("metadata"),
            created_at=at,
            updated_at=at,
        )
        self._state.recipients[record.recipient_code] = record
        self._state.save(record)
        return record

    def initiate_transfer(self, body: Mapping[str, Any]) -> Transfer:
        if body.get("source") != "balance":
            # Paystack: "Where should we transfer from? Only balance for now".
            raise PaystackError('source must be "balance"')  # simulator's choice of words
        amount = parse_amount(body.get("amount"))
        if amount is None or amount <= 0:
            raise PaystackError("Invalid amount passed.")
        to = self._state.recipients.get(_text(body, "recipient"))
        if to is None:
            raise PaystackError("Recipient specified is invalid", code=ErrorCode.INVALID_TRANSFER_RECIPIENT)
        reference = body.get("reference") or random_code(20)
        if not isinstance(reference, str) or not _TRANSFER_REFERENCE.fullmatch(reference):
            raise PaystackError("Your reference contains illegal special characters")
        if self._state.transfer_by_reference(reference) is not None:
            raise PaystackError(
                "Please provide a unique reference. Reference already exists on a transfer",
                code=ErrorCode.DUPLICATE_REFERENCE,
            )
        currency = body.get("currency") or to.currency
        if currency != to.currency:
            raise PaystackError("Transfer currency must be the recipient's currency")  # simulator's choice
        at = now_ms()
        record = Transfer(
            id=self._state.next_id(),
            transfer_code="TRF_" + random_code(15),
            reference=reference,
            amount=amount,
            currency=currency,
            source="balance",
            reason=_text(body, "reason"),
            recipient_code=to.recipient_code,
            status=TransferStatus.PENDING,
            created_at=at,
            updated_at=at,
            settle_at=at + self._settle_ms if self._settle_ms > 0 else None,
            fee_charged=transfer_fee(amount, currency),
        )
        self._state.transfers[record.transfer_code] = record
        self._state.save(record)
        self._schedule_transfer(record)
        return record

    def recipient_of(self, record: Transfer) -> Recipient:
        return self._state.recipients[record.recipient_code]

    def transfer(self, key: str) -> Transfer:
        """A transfer by its code, its reference or its id (the /_sim settle control's lookup)."""
        found = self._state.transfers.get(key) or self._state.transfer_by_reference(key)
        if found is None and key.isdigit():
            found = next((t for t in self._state.transfers.values() if t.id == int(key)), None)
        if found is None:
            raise NotFound("Transfer not found")
        return found

    def verified_transfer(self, reference: str) -> Transfer:
        """Verify Transfer's lookup: by reference only; Paystack's sample answers 404 "Transfer not found"."""
        found = self._state.transfer_by_reference(reference)
        if found is None:
            raise NotFound("Transfer not found")
        return found

    def list_transfers(self, status: str | None, recipient_code: str | None, within: Period) -> list[Transfer]:
        """List Transfers' records, newest first."""
        return sorted(
            (
                t
                for t in self._state.transfers.values()
                if status in (None, t.status.value)
                and recipient_code in (None, t.recipient_code)
                and within.holds(t.created_at)
            ),
            key=lambda t: t.id,
            reverse=True,
        )

    def settle_transfer(self, key: str, outcome: Any) -> Transfer:
        record = self.transfer(key)
        if outcome not in (Outcome.SUCCESS, Outcome.FAILED, Outcome.REVERSED):
            raise PaystackError('a transfer settles with outcome "success", "failed" or "reversed"')
        can_settle = record.status is TransferStatus.PENDING or (
            record.status is TransferStatus.SUCCESS and outcome == Outcome.REVERSED
        )
        if not can_settle:
            raise AlreadySettled(f"Transfer {record.transfer_code} is already {record.status.value}")
        at = now_ms()
        record.status, record.updated_at, record.settle_at = TransferStatus(outcome), at, None
        if record.status is TransferStatus.SUCCESS:
            record.transferred_at = at
        if record.session_id is None and record.status is not TransferStatus.FAILED:
            record.session_id = "".join(secrets.choice("0123456789") for _ in range(30))
        data = shapes.transfer_event(record, self.recipient_of(record))
        self._commit(record, self._events.record(f"transfer.{record.status.value}", data, record.reference))
        return record

    def _schedule_transfer(self, record: Transfer) -> None:
        if record.settle_at is not None:
            action = partial(self._settle_by_itself, self.settle_transfer, record.transfer_code)
            self._scheduler.call_at(record.settle_at, action)

    async def _settle_by_itself(self, settle: Callable[[str, Any], object], key: str) -> None:
        """Automatic settlement: success, unless a /_sim control settled it first."""
        with contextlib.suppress(AlreadySettled):
            settle(key, Outcome.SUCCESS)

    def resume_settlements(self) -> None:
        """Schedule again the automatic settlements that were due when the simulator last stopped."""
        for refund in self._state.refunds.values():
            if refund.status is RefundStatus.PENDING:
                self._schedule_refund(refund)
        for transfer in self._state.transfers.values():
            if transfer.status is TransferStatus.PENDING:
                self._schedule_transfer(transfer)


def _metadata(value: Any) -> Any:
    """Paystack takes metadata as an object or as "stringified JSON"; either way it prints the object."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
