"""The payments service on the real Mongo-wire server, with the ledger and the Paystack simulator.

Payments' own promises, asked of it directly: an idempotent checkout, a webhook that
moves a payment once and posts once, a duplicate or forged delivery that changes
nothing, a refund reserved in the ledger before Paystack is asked and settled from
Paystack's answer. (Goals is running because payments tells it of outcomes; the money
flows through goals are covered in test_goals_payments and test_money_safety.)
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import httpx
import pytest
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2
from gofund.payments.v1 import payments_pb2, payments_service_pb2
from google.api import httpbody_pb2

from services.payments import domain
from tests.helpers import eventually, reason, rejected
from tests.integration.fixtures.goals import Platform, User
from tests.integration.fixtures.payments import checkout, pay, payments_db, settle

pytestmark = pytest.mark.asyncio

PAYMENTS = "payments.gofund"
PENDING = payments_pb2.PAYMENT_STATUS_PENDING
SUCCESS = payments_pb2.PAYMENT_STATUS_SUCCESS
REFUND_PENDING = payments_pb2.PAYMENT_STATUS_REFUND_PENDING
REFUNDED = payments_pb2.PAYMENT_STATUS_REFUNDED


def initialize_request(payer: User, **changes: Any) -> Any:
    fields: dict[str, Any] = {
        "idempotency_key": f"contribution:{uuid.uuid4()}",
        "user_id": payer.id,
        "goal_id": str(uuid.uuid4()),
        "contribution_id": str(uuid.uuid4()),
        "amount": 2500,
        "currency": "NGN",
    }
    fields.update(changes)
    return payments_service_pb2.InitializePaymentRequest(**fields)


async def payment(platform: Platform, payer: User, payment_id: str) -> Any:
    response = await platform.payments.GetPayment(
        payments_service_pb2.GetPaymentRequest(payment_id=payment_id), metadata=payer.auth
    )
    return response.payment


async def payment_in(platform: Platform, payer: User, payment_id: str, status: int) -> Any:
    found = await payment(platform, payer, payment_id)
    return found if found.status == status else None


async def ledger_transactions_of(platform: Platform, payment_id: str) -> list[str]:
    rows = await platform.sql(
        platform.ledger_url,
        "SELECT id FROM ledger_transactions WHERE metadata->>'payment_id' = %s ORDER BY id",
        payment_id,
    )
    return [row[0] for row in rows]


async def ledger_transaction(platform: Platform, transaction_id: str) -> Any:
    response = await platform.ledger.GetTransaction(
        ledger_service_pb2.GetTransactionRequest(transaction_id=transaction_id)
    )
    return response.transaction


async def stored_events(platform: Platform, reference: str) -> list[dict[str, Any]]:
    client, db = payments_db(platform)
    try:
        found: list[dict[str, Any]] = await db.webhook_events.find({"data.reference": reference}).to_list()
        return found
    finally:
        await client.close()


async def paystack_transactions(platform: Platform, reference: str) -> list[dict[str, Any]]:
    """The transactions Paystack (the simulator) holds under `reference`, as its List Transactions shows them."""
    assert platform.simulator is not None
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{platform.simulator.base_url}/transaction",
            params={"perPage": "100"},
            headers={"authorization": f"Bearer {platform.settings.paystack_secret_key}"},
        )
    assert response.status_code == 200, response.text
    return [t for t in response.json()["data"] if t["reference"] == reference]


async def deliver(platform: Platform, body: bytes, signature: str) -> None:
    """POST a webhook to payments as Envoy's webhook route passes it: raw body, signature as metadata."""
    await platform.payments.HandlePaystackWebhook(
        payments_service_pb2.HandlePaystackWebhookRequest(
            body=httpbody_pb2.HttpBody(content_type="application/json", data=body)
        ),
        metadata=(("x-paystack-signature", signature),),
        timeout=10,
    )


async def paid(platform: Platform) -> tuple[User, Any]:
    """A payment paid at the simulator's checkout and SUCCESS at payments (made through goals'
    checkout, so the outcome payments reports has a contribution to land on)."""
    owner, payer = await platform.users(2)
    goal = await platform.goal(owner, target=100_000)
    started = await checkout(platform, payer, goal, 4000)
    await pay(started)
    found = await eventually(
        lambda: payment_in(platform, payer, started.contribution.payment_id, SUCCESS),
        15,
        "the payment to be SUCCESS",
    )
    # The payment moves before its event is marked done (goals is told in between).
    await eventually(lambda: processed_event(platform, found.reference), 15, "the charge.success to be processed")
    return payer, found


async def processed_event(platform: Platform, reference: str) -> bool:
    return [e["status"] for e in await stored_events(platform, reference)] == ["PROCESSED"]


# -- InitializePayment ------------------------------------------------------------------
async def test_the_same_idempotency_key_answers_the_same_payment_and_checkout(paying_platform: Platform) -> None:
    platform = paying_platform
    (payer,) = await platform.users(1)
    request = initialize_request(payer)
    first = await platform.payments_internal.InitializePayment(request)
    again = await platform.payments_internal.InitializePayment(request)
    assert first.payment.status == PENDING
    assert (again.payment.payment_id, again.payment.reference) == (first.payment.payment_id, first.payment.reference)
    assert (again.authorization_url, again.access_code) == (first.authorization_url, first.access_code)
    # Paystack was asked once: one transaction under the payment's reference.
    assert len(await paystack_transactions(platform, first.payment.reference)) == 1


@pytest.mark.parametrize(
    "change",
    [{"amount": 2600}, {"currency": "GHS"}, {"goal_id": str(uuid.uuid4())}, {"contribution_id": str(uuid.uuid4())}],
    ids=["amount", "currency", "goal", "contribution"],
)
async def test_the_same_key_with_different_input_is_refused_as_reused_and_the_first_payment_stands(
    paying_platform: Platform, change: dict[str, Any]
) -> None:
    platform = paying_platform
    (payer,) = await platform.users(1)
    request = initialize_request(payer)
    first = await platform.payments_internal.InitializePayment(request)
    changed = payments_service_pb2.InitializePaymentRequest()
    changed.CopyFrom(request)
    for field, value in change.items():
        setattr(changed, field, value)
    refused = await rejected(platform.payments_internal.InitializePayment(changed))
    assert (refused.code(), reason(refused, PAYMENTS)) == (grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED")
    again = await platform.payments_internal.InitializePayment(request)
    assert (again.payment.payment_id, again.payment.amount) == (first.payment.payment_id, first.payment.amount)
    assert len(await paystack_transactions(platform, first.payment.reference)) == 1


async def test_the_same_key_from_another_payer_is_refused_as_reused(paying_platform: Platform) -> None:
    platform = paying_platform
    payer, other = await platform.users(2)
    request = initialize_request(payer)
    await platform.payments_internal.InitializePayment(request)
    refused = await rejected(platform.payments_internal.InitializePayment(initialize_request(
        other, idempotency_key=request.idempotency_key, goal_id=request.goal_id, contribution_id=request.contribution_id
    )))  # fmt: skip
    assert (refused.code(), reason(refused, PAYMENTS)) == (grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED")


# -- webhooks ---------------------------------------------------------------------------
async def test_a_signed_charge_success_makes_the_payment_success_once_with_one_capture_posting(
    paying_platform: Platform,
) -> None:
    platform = paying_platform
    _, succeeded = await paid(platform)
    assert (succeeded.amount, succeeded.currency) == (4000, "NGN")
    assert succeeded.HasField("paid_at")  # when Paystack says it was paid
    # One capture in the ledger, under the id derived from the payment.
    capture_id = domain.capture_transaction_id(succeeded.payment_id)
    assert await ledger_transactions_of(platform, succeeded.payment_id) == [capture_id]
    capture = await ledger_transaction(platform, capture_id)
    assert capture.kind == ledger_pb2.TRANSACTION_KIND_POSTED
    assert sorted(e.amount for e in capture.entries) == [4000, 4000]
    # The event is stored once and processed.
    (event,) = await stored_events(platform, succeeded.reference)
    assert (event["event"], event["status"], event["deliveries"]) == ("charge.success", "PROCESSED", 1)


async def test_a_duplicate_delivery_is_acknowledged_and_changes_nothing(paying_platform: Platform) -> None:
    platform = paying_platform
    payer, succeeded = await paid(platform)
    (event,) = await stored_events(platform, succeeded.reference)
    body = event["body"].encode()
    before = await ledger_transactions_of(platform, succeeded.payment_id)

    await deliver(platform, body, domain.sign(platform.settings.paystack_secret_key, body))

    # The delivery is counted on the stored event (its acknowledgement means it was
    # seen) and the event is not made due again: nothing is left to process it later.
    (again,) = await stored_events(platform, succeeded.reference)
    assert again["deliveries"] == 2
    assert {k: again[k] for k in ("status", "attempts", "processedAt", "nextAttemptAt")} == {
        k: event[k] for k in ("status", "attempts", "processedAt", "nextAttemptAt")
    }
    now = await payment(platform, payer, succeeded.payment_id)
    assert (now.status, now.amount, now.paid_at) == (succeeded.status, succeeded.amount, succeeded.paid_at)
    assert await ledger_transactions_of(platform, succeeded.payment_id) == before


@pytest.mark.parametrize("signature", ["forged", "", "wrong-key"])
async def test_a_charge_success_without_a_valid_signature_is_refused_and_nothing_is_stored(
    paying_platform: Platform, signature: str
) -> None:
    platform = paying_platform
    (payer,) = await platform.users(1)
    started = (await platform.payments_internal.InitializePayment(initialize_request(payer))).payment
    body = json.dumps(
        {
            "event": "charge.success",
            "data": {
                "id": 900_000_000 + uuid.uuid4().int % 1_000_000,
                "reference": started.reference,
                "status": "success",
                "amount": started.amount,
                "currency": started.currency,
            },
        }
    ).encode()
    sent = {
        "forged": "0" * 128,
        "": "",
        "wrong-key": domain.sign("sk_test_not_our_key", body),
    }[signature]
    refused = await rejected(deliver(platform, body, sent))
    assert (refused.code(), reason(refused, PAYMENTS)) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_SIGNATURE")
    # Refused before anything is written: no event, the payment untouched, no posting.
    assert await stored_events(platform, started.reference) == []
    assert (await payment(platform, payer, started.payment_id)).status == PENDING
    assert await ledger_transactions_of(platform, started.payment_id) == []


# -- RefundPayment ----------------------------------------------------------------------
async def test_a_refund_is_reserved_in_the_ledger_then_posted_when_paystack_settles_it(
    paying_platform: Platform,
) -> None:
    platform = paying_platform
    payer, succeeded = await paid(platform)
    refund_id = str(uuid.uuid4())
    request = payments_service_pb2.RefundPaymentRequest(
        payment_id=succeeded.payment_id, refund_id=refund_id, reason="the goal closed"
    )
    answered = (await platform.payments_internal.RefundPayment(request)).payment
    assert answered.status == REFUND_PENDING
    key = domain.refund_key(succeeded.payment_id, refund_id)
    reserved = await ledger_transaction(platform, domain.refund_reserve_id(key))
    assert (reserved.kind, reserved.resolved_by_transaction_id) == (ledger_pb2.TRANSACTION_KIND_PENDING, "")
    assert sorted(e.amount for e in reserved.entries) == [4000, 4000]
    # A replay while Paystack has not settled asks nothing new and reserves nothing more.
    replayed = (await platform.payments_internal.RefundPayment(request)).payment
    assert replayed.status == REFUND_PENDING
    capture_id = domain.capture_transaction_id(succeeded.payment_id)
    assert await ledger_transactions_of(platform, succeeded.payment_id) == sorted(
        [capture_id, domain.refund_reserve_id(key)]
    )

    await settle(platform, "refunds", succeeded.reference, "success")

    refunded = await eventually(
        lambda: payment_in(platform, payer, succeeded.payment_id, REFUNDED), 15, "the payment to be REFUNDED"
    )
    assert refunded.amount == 4000
    settled_id = domain.refund_settle_id(key)
    assert (await ledger_transaction(platform, domain.refund_reserve_id(key))).resolved_by_transaction_id == settled_id
    assert (await ledger_transaction(platform, settled_id)).kind == ledger_pb2.TRANSACTION_KIND_POST_PENDING
    assert await ledger_transactions_of(platform, succeeded.payment_id) == sorted(
        [capture_id, domain.refund_reserve_id(key), settled_id]
    )
    # Replayed after settling: the payment as it stands, no second refund.
    assert (await platform.payments_internal.RefundPayment(request)).payment.status == REFUNDED
    assert len(await ledger_transactions_of(platform, succeeded.payment_id)) == 3


async def test_a_refund_of_a_payment_not_yet_paid_is_refused_and_reserves_nothing(paying_platform: Platform) -> None:
    platform = paying_platform
    (payer,) = await platform.users(1)
    started = (await platform.payments_internal.InitializePayment(initialize_request(payer))).payment
    refused = await rejected(
        platform.payments_internal.RefundPayment(
            payments_service_pb2.RefundPaymentRequest(
                payment_id=started.payment_id, refund_id=str(uuid.uuid4()), reason="changed plans"
            )
        )
    )
    assert (refused.code(), reason(refused, PAYMENTS)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAYMENT_NOT_REFUNDABLE",
    )
    assert (await payment(platform, payer, started.payment_id)).status == PENDING
    assert await ledger_transactions_of(platform, started.payment_id) == []
