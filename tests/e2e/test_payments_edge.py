"""Payments through real Envoy with the Paystack simulator: checkout, signed webhooks,
exactly-once capture, flagged disagreements, refunds, recipients, operator routes."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from gofund.payments.v1 import payments_service_pb2, payments_service_pb2_grpc

from services.payments import domain
from services.payments.domain import capture_transaction_id, sign
from services.paystack_sim.banks import account_holder
from services.stack.stack import Stack
from tests.conftest import sync_service_channel
from tests.e2e.money import (
    User,
    api,
    balance,
    contribute,
    contributed,
    deliver,
    entries,
    make_admin,
    new_user,
    ok,
    open_goal,
    pay,
    payment,
    payment_status,
    payments_db,
    platform_account,
    sim_events,
    sim_transactions,
    transaction,
)
from tests.helpers import eventually_sync, reason_of


def charge_body(stack: Stack, reference: str) -> bytes:
    """The charge.success the simulator sent for `reference`, as bytes to deliver again."""
    (event,) = eventually_sync(
        lambda: sim_events(stack, event="charge.success", reference=reference), what="charge.success"
    )
    return json.dumps(event["payload"]).encode()


def test_a_contribution_paid_at_checkout_is_captured_once_and_the_payment_succeeds(stack: Stack) -> None:
    owner, payer = new_user(stack), new_user(stack)
    goal = open_goal(stack, owner, target=1_000_000)
    started = contribute(stack, payer, goal, 250_000)
    payment_id = started["contribution"]["payment_id"]
    assert payment(stack, payer, payment_id)["status"] == "PAYMENT_STATUS_PENDING"
    checkout = httpx.get(started["authorization_url"], timeout=10)
    assert checkout.status_code == 200
    assert "2,500.00" in checkout.text

    pay(started["authorization_url"])
    paid = payment_status(stack, payer, payment_id, "SUCCESS")
    assert (paid["amount"], paid["currency"], paid["reference"]) == ("250000", "NGN", started["payment_reference"])
    assert paid["paid_at"]
    capture = transaction(stack, capture_transaction_id(payment_id))
    assert {(e.account_id, e.amount) for e in capture.entries} == {
        (platform_account(stack, "ESCROW"), 250_000),
        (goal["account_id"], 250_000),
    }
    assert [e["transaction_id"] for e in entries(stack, goal["account_id"])] == [capture_transaction_id(payment_id)]


def test_fifty_concurrent_deliveries_and_a_restart_capture_once(stack: Stack) -> None:
    owner, payer = new_user(stack), new_user(stack)
    goal = open_goal(stack, owner, target=1_000_000)
    started = contribute(stack, payer, goal, 40_000)
    pay(started["authorization_url"])
    payment_id = started["contribution"]["payment_id"]
    payment_status(stack, payer, payment_id, "SUCCESS")
    body = charge_body(stack, started["payment_reference"])

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: deliver(stack, body).status_code, range(50)))
    assert answers == [200] * 50
    stack.services["payments"].stop()
    stack.start_service("payments")
    stack.wait_edge_healthy()
    assert deliver(stack, body).status_code == 200

    assert [e["transaction_id"] for e in entries(stack, goal["account_id"])] == [capture_transaction_id(payment_id)]
    assert balance(stack, goal["account_id"]) == 40_000
    with payments_db(stack) as db:
        stored = db.webhook_events.find_one({"eventId": f"charge.success:{started['payment_reference']}"})
    assert stored["deliveries"] >= 52  # the simulator's own, 50, and one after the restart
    assert stored["status"] == "PROCESSED"


def test_a_forged_missing_or_altered_signature_is_refused_and_stores_nothing(stack: Stack) -> None:
    reference = f"gf-forged-{uuid.uuid4().hex}"
    body = json.dumps({"event": "charge.success", "data": {"reference": reference, "amount": 100}}).encode()
    forged = deliver(stack, body, signature=sign("sk_test_not_ours", body))
    missing = deliver(stack, body, signature="")
    altered = deliver(stack, body.replace(b"100", b"900"), signature=sign(stack.settings.paystack_secret_key, body))
    for response in (forged, missing, altered):
        assert response.status_code == 401, response.text
        assert reason_of(response) == "INVALID_SIGNATURE"
    with payments_db(stack) as db:
        assert db.webhook_events.count_documents({"eventId": {"$regex": reference}}) == 0


def test_a_signed_body_that_is_not_an_event_is_400_and_unknown_events_are_kept_not_processed(stack: Stack) -> None:
    malformed = deliver(stack, b'{"data": {}}')
    assert malformed.status_code == 400
    assert reason_of(malformed) == "MALFORMED_EVENT"
    code = f"SUB_{uuid.uuid4().hex[:10]}"
    unknown = deliver(stack, json.dumps({"event": "subscription.create", "data": {"code": code}}).encode())
    assert unknown.status_code == 200
    assert unknown.json() == {}
    with payments_db(stack) as db:
        stored = db.webhook_events.find_one({"eventId": f"subscription.create:{code}"})
    assert stored["status"] == "IGNORED"


def test_the_payer_can_verify_before_the_webhook_and_nobody_else_sees_the_payment(stack: Stack) -> None:
    owner, payer, stranger = new_user(stack), new_user(stack), new_user(stack)
    goal = open_goal(stack, owner, target=1_000_000)
    started = contribute(stack, payer, goal, 12_300)
    payment_id = started["contribution"]["payment_id"]
    assert ok(api(stack, "POST", f"/v1/payments/{payment_id}:verify", payer, json={}))["payment"]["status"] == (
        "PAYMENT_STATUS_PENDING"  # not paid yet: Paystack says abandoned, which may still be paid
    )
    pay(started["authorization_url"])
    verified = ok(api(stack, "POST", f"/v1/payments/{payment_id}:verify", payer, json={}))["payment"]
    assert verified["status"] == "PAYMENT_STATUS_SUCCESS"
    assert transaction(stack, capture_transaction_id(payment_id)) is not None
    hidden = api(stack, "GET", f"/v1/payments/{payment_id}", stranger)
    assert hidden.status_code == 404
    assert reason_of(hidden) == "PAYMENT_NOT_FOUND"
    assert api(stack, "GET", f"/v1/payments/{payment_id}").status_code == 401


def internal_payments(stack: Stack) -> tuple[grpc.Channel, payments_service_pb2_grpc.PaymentsInternalServiceStub]:
    channel = sync_service_channel(f"127.0.0.1:{stack.settings.payments_port}")
    return channel, payments_service_pb2_grpc.PaymentsInternalServiceStub(channel)


def test_twenty_concurrent_initializations_with_one_key_make_one_payment_and_one_paystack_call(stack: Stack) -> None:
    payer = new_user(stack)
    key, contribution_id, goal_id = uuid.uuid4().hex, str(uuid.uuid4()), str(uuid.uuid4())
    request = payments_service_pb2.InitializePaymentRequest(
        idempotency_key=key, user_id=payer.id, goal_id=goal_id, contribution_id=contribution_id, amount=5_000,
        currency="NGN",
    )  # fmt: skip
    other_amount = payments_service_pb2.InitializePaymentRequest()
    other_amount.CopyFrom(request)
    other_amount.amount = 6_000
    channel, internal = internal_payments(stack)
    with channel, ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: internal.InitializePayment(request, timeout=20), range(20)))
        with pytest.raises(grpc.RpcError) as reused:
            internal.InitializePayment(other_amount, timeout=20)
    assert reused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert len({a.payment.payment_id for a in answers}) == 1
    assert len({a.authorization_url for a in answers}) == 1
    assert all(a.payment.status == 1 for a in answers)  # PENDING
    at_paystack = [t for t in sim_transactions(stack) if t["metadata"].get("contribution_id") == contribution_id]
    assert len(at_paystack) == 1


def test_refund_of_a_paid_contribution_returns_the_money_once_and_a_failed_refund_can_be_retried(
    stack: Stack,
) -> None:
    owner, payer = new_user(stack), new_user(stack)
    goal = open_goal(stack, owner, target=1_000_000)
    contribution = contributed(stack, payer, goal, 70_000)
    payment_id = contribution["payment_id"]
    channel, internal = internal_payments(stack)
    with channel:
        first = internal.RefundPayment(
            payments_service_pb2.RefundPaymentRequest(payment_id=payment_id, refund_id="r1", reason="test"), timeout=20
        )
        assert first.payment.status == 5  # REFUND_PENDING
        reference = first.payment.reference
        settle = httpx.post(
            f"{stack.settings.paystack_url}/_sim/refunds/{reference}/settle", json={"outcome": "failed"}, timeout=10
        )
        assert settle.status_code == 200, settle.text
        payment_status(stack, payer, payment_id, "SUCCESS")
        replay = internal.RefundPayment(
            payments_service_pb2.RefundPaymentRequest(payment_id=payment_id, refund_id="r1", reason="test"), timeout=20
        )
        assert replay.payment.status == 2  # SUCCESS: r1 failed; the caller retries under a new id
        second = internal.RefundPayment(
            payments_service_pb2.RefundPaymentRequest(payment_id=payment_id, refund_id="r2", reason="test"), timeout=20
        )
        assert second.payment.status == 5
    settle = httpx.post(
        f"{stack.settings.paystack_url}/_sim/refunds/{reference}/settle", json={"outcome": "success"}, timeout=10
    )
    assert settle.status_code == 200, settle.text
    payment_status(stack, payer, payment_id, "REFUNDED")
    # Each refund was reserved before Paystack was asked: r1's reservation was voided
    # when Paystack failed it, r2's posted when Paystack processed it.
    failed, settled = (domain.refund_key(payment_id, r) for r in ("r1", "r2"))
    assert transaction(stack, domain.refund_void_id(failed)).pending_transaction_id == domain.refund_reserve_id(failed)
    assert transaction(stack, domain.refund_settle_id(settled)).pending_transaction_id == domain.refund_reserve_id(
        settled
    )
    assert transaction(stack, domain.refund_settle_id(failed)) is None
    assert balance(stack, goal["account_id"]) == 0
    eventually_sync(
        lambda: (
            ok(api(stack, "GET", f"/v1/contributions/{contribution['id']}", payer))["contribution"]["status"]
            == "CONTRIBUTION_STATUS_REFUNDED"
        ),
        what="the contribution to be refunded",
    )


def recipient(stack: Stack, user: User, account_number: str, key: str | None = None) -> httpx.Response:
    body = {
        "account_number": account_number,
        "bank_code": "058",
        "name": "Ada Obi",
        "currency": "NGN",
        "idempotency_key": key or uuid.uuid4().hex,
    }
    return api(stack, "POST", "/v1/payout-recipients", user, json=body)


def test_payout_recipients_keep_only_the_last_four_digits_and_replay_by_key(stack: Stack) -> None:
    owner = new_user(stack)
    created = ok(recipient(stack, owner, "0123456789", key="rcp-1"))["recipient"]
    assert (created["account_number_last4"], created["user_id"]) == ("6789", owner.id)
    assert created["recipient_code"].startswith("RCP_")
    assert ok(recipient(stack, owner, "0123456789", key="rcp-1"))["recipient"] == created
    reused = recipient(stack, owner, "0123456780", key="rcp-1")
    assert (reused.status_code, reason_of(reused)) == (400, "IDEMPOTENCY_KEY_REUSED")
    # The name the bank holds, from Paystack's Resolve Account Number, comes back for the owner to check.
    assert (created["account_name"], created["bank_name"]) == (account_holder("0123456789"), "Guaranty Trust Bank")
    invalid = recipient(stack, owner, "12-34")
    assert (invalid.status_code, reason_of(invalid)) == (400, "INVALID_ACCOUNT_NUMBER")
    with payments_db(stack) as db:
        assert "0123456789" not in json.dumps(list(db.payout_recipients.find({}, {"_id": 0})), default=str)


def test_an_account_paystack_cannot_resolve_is_refused_before_anything_is_stored(stack: Stack) -> None:
    owner = new_user(stack)
    with payments_db(stack) as db:
        recipients_before = db.payout_recipients.count_documents({"userId": owner.id})
        keys_before = db.idempotency_keys.count_documents({"key": {"$regex": f"^recipient:{owner.id}:"}})
    rejected = recipient(stack, owner, "0000000000", key="rcp-unresolvable")
    assert (rejected.status_code, reason_of(rejected)) == (400, "ACCOUNT_NOT_RESOLVED")
    assert "Could not resolve account name" in rejected.json()["message"]
    [info] = [d for d in rejected.json()["details"] if d["@type"].endswith("ErrorInfo")]
    assert info["metadata"] == {"paystack_code": "unresolvable_account"}
    with payments_db(stack) as db:
        assert db.payout_recipients.count_documents({"userId": owner.id}) == recipients_before
        assert db.idempotency_keys.count_documents({"key": {"$regex": f"^recipient:{owner.id}:"}}) == keys_before
    # Nothing was kept, so the same key with a good account is a first attempt, not a reuse.
    created = ok(recipient(stack, owner, "0123456789", key="rcp-unresolvable"))["recipient"]
    assert created["account_number_last4"] == "6789"


def test_banks_are_listed_for_a_bank_picker_without_logging_in(stack: Stack) -> None:
    banks = ok(api(stack, "GET", "/v1/banks?currency=NGN"))["banks"]
    assert {"name": "Guaranty Trust Bank", "code": "058", "currency": "NGN"} in banks
    assert {b["currency"] for b in banks} == {"NGN"}
    ghana = ok(api(stack, "GET", "/v1/banks?currency=GHS"))["banks"]
    assert ghana
    assert {b["currency"] for b in ghana} == {"GHS"}
    refused = api(stack, "GET", "/v1/banks?currency=XYZ")
    assert (refused.status_code, reason_of(refused)) == (400, "UNSUPPORTED_CURRENCY")


def test_webhook_events_are_listed_for_payments_admins_only(stack: Stack) -> None:
    member = new_user(stack)
    denied = api(stack, "GET", "/v1/webhook-events", member)
    assert (denied.status_code, reason_of(denied)) == (403, "MISSING_PERMISSION")
    admin = new_user(stack)
    make_admin(stack, admin)
    listed = eventually_sync(
        lambda: (r := api(stack, "GET", "/v1/webhook-events?page_size=2", admin)).status_code == 200 and r.json(),
        what="the admin role to reach the payments service's cache",
    )
    assert len(listed["events"]) <= 2
    assert all(e["status"].startswith("WEBHOOK_EVENT_STATUS_") for e in listed["events"])
    missing = api(stack, "POST", "/v1/webhook-events/nope:retry", admin, json={})
    assert (missing.status_code, reason_of(missing)) == (404, "WEBHOOK_EVENT_NOT_FOUND")
