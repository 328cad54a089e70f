"""The Paystack simulator's pure rules: retry schedule, amounts, formats, and its state file."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from services.paystack_sim.checkout import callback_location, display_amount
from services.paystack_sim.domain import fees, parse_amount
from services.paystack_sim.records import (
    Attempt,
    Card,
    Customer,
    DeliveryStatus,
    Event,
    Refund,
    RefundStatus,
    Transaction,
    TransactionStatus,
    iso,
)
from services.paystack_sim.state import State
from services.paystack_sim.webhooks import MAX_ATTEMPTS, encode, retry_delay_ms, sign


def test_retries_come_three_minutes_apart_four_times_then_hourly_for_72_hours() -> None:
    base = 1000
    delays = [retry_delay_ms(failed, base) for failed in range(1, MAX_ATTEMPTS)]
    assert delays[:3] == [base] * 3
    assert delays[3:] == [20 * base] * 72
    assert retry_delay_ms(MAX_ATTEMPTS, base) is None
    assert MAX_ATTEMPTS == 76


def test_the_signature_is_hmac_sha512_of_the_exact_body() -> None:
    body = encode("charge.success", {"reference": "r1", "amount": 100}).encode()
    assert body == b'{"event":"charge.success","data":{"reference":"r1","amount":100}}'
    assert sign("sk_test_x", body) == hmac.new(b"sk_test_x", body, hashlib.sha512).hexdigest()


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (5000, 5000),
        ("5000", 5000),
        (" 12 ", 12),
        (0, 0),
        ("-3", -3),
        (12.5, None),
        ("1e3", None),
        (True, None),
        (None, None),
    ],
)
def test_amounts_are_integers_or_digit_strings(value: object, parsed: int | None) -> None:
    assert parse_amount(value) == parsed


def test_naira_fees_add_a_flat_fee_from_2500_naira_and_stop_at_2000_naira() -> None:
    assert fees(100_000, "NGN") == 1_500
    assert fees(250_000, "NGN") == 3_750 + 10_000
    assert fees(100_000_000, "NGN") == 200_000
    assert fees(100_000, "GHS") == 1_500


def test_times_print_as_paystack_prints_them() -> None:
    assert iso(1_660_054_892_007) == "2022-08-09T14:21:32.007Z"


def test_the_checkout_shows_amounts_in_major_units() -> None:
    assert display_amount(750_050, "NGN") == "NGN 7,500.50"
    assert display_amount(5, "USD") == "USD 0.05"


def _transaction(callback_url: str | None) -> Transaction:
    return Transaction(
        id=1,
        reference="ref-1",
        access_code="code",
        customer_email="ada@example.com",
        requested_amount=100,
        amount=100,
        currency="NGN",
        callback_url=callback_url,
        metadata={"goal_id": "g1"},
        status=TransactionStatus.SUCCESS,
        gateway_response="Successful",
        created_at=1,
        paid_at=2,
        fees=1,
        card=Card(authorization_code="AUTH_x", signature="SIG_x"),
    )


def test_the_callback_url_gets_paystacks_query_parameters() -> None:
    assert callback_location(_transaction(None)) is None
    assert (
        callback_location(_transaction("https://app.test/back")) == "https://app.test/back?trxref=ref-1&reference=ref-1"
    )
    assert callback_location(_transaction("https://app.test/back?x=1")) == (
        "https://app.test/back?x=1&trxref=ref-1&reference=ref-1"
    )


def test_saved_state_loads_back_equal_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "paystack-sim.json"
    state = State(path)
    state.next_id()
    state.customers["ada@example.com"] = Customer(id=5, customer_code="CUS_x", email="ada@example.com")
    state.transactions["ref-1"] = _transaction("https://app.test/back")
    state.refunds[7] = Refund(
        id=7,
        transaction_reference="ref-1",
        amount=100,
        currency="NGN",
        status=RefundStatus.PENDING,
        merchant_note="m",
        customer_note="c",
        created_at=3,
        updated_at=3,
        settle_at=9,
    )
    state.events.append(
        Event(
            index=0,
            event="charge.success",
            reference="ref-1",
            body="{}",
            created_at=4,
            next_attempt_at=8,
            attempts=[Attempt(at=5, http_status=500, error=None), Attempt(at=6, http_status=None, error="timeout")],
        )
    )
    state.save()

    loaded = State.load(path)
    assert loaded.last_id == state.last_id
    assert loaded.customers == state.customers
    assert loaded.transactions == state.transactions
    assert loaded.refunds == state.refunds
    assert loaded.events == state.events
    assert loaded.events[0].status is DeliveryStatus.PENDING
    assert [p.name for p in tmp_path.iterdir()] == ["paystack-sim.json"]
    assert json.loads(path.read_text())["version"] == 1


def test_a_missing_state_file_is_an_empty_state(tmp_path: Path) -> None:
    state = State.load(tmp_path / "absent.json")
    assert (state.transactions, state.events) == ({}, [])
