"""Our Paystack client against Paystack's failures, which the simulator does not produce.

Each test answers the client as Paystack does when it refuses or fails (its
error envelope, 429 with Retry-After, 5xx, a timeout), through httpx's mock
transport: no sockets. What is checked is which calls are repeated, which
errors they become, and that every call ends within its deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from services.payments.domain import (
    AccountNotResolved,
    PaystackNotFound,
    PaystackRejected,
    PaystackUnavailable,
    duplicate_reference,
)
from services.payments.paystack import Paystack

Answer = Callable[[httpx.Request], httpx.Response]

VERIFIED = {"status": True, "message": "Verification successful", "data": {"status": "success", "amount": 100}}
DUPLICATE = {
    "status": False,
    "message": "Duplicate Transaction Reference",
    "meta": {"nextStep": "Try and create the Transaction or Charge with a new reference"},
    "type": "validation_error",
    "code": "duplicate_reference",
}


class Paystackish:
    """Answers requests in turn from `answers` (the last one repeats) and counts them."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return answer(request)


def json_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    return lambda request: httpx.Response(status, json=body, headers=headers)


def timing_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def refusing_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


def run(paystack_answers: Paystackish, call: Callable[[Paystack], Any], *, timeout_s: float = 5.0) -> Any:
    async def go() -> Any:
        client = Paystack(
            "http://paystack.test", "sk_test", timeout_s=timeout_s, transport=httpx.MockTransport(paystack_answers)
        )
        try:
            return await call(client)
        finally:
            await client.close()

    return asyncio.run(go())


def initialize(client: Paystack) -> Any:
    return client.initialize(email="a@b.co", amount=100, currency="NGN", reference="r-1", callback_url="", metadata={})


def refund(client: Paystack) -> Any:
    return client.refund(transaction="r-1", amount=100, merchant_note="n")


def test_a_refusal_keeps_paystacks_message_and_code() -> None:
    with pytest.raises(PaystackRejected) as refused:
        run(Paystackish(json_answer(400, DUPLICATE)), initialize)
    assert (refused.value.message, refused.value.code) == ("Duplicate Transaction Reference", "duplicate_reference")
    assert duplicate_reference(refused.value)


def test_a_404_is_not_found_with_its_code() -> None:
    body = {"status": False, "message": "Transfer not found", "type": "validation_error", "code": "not_found"}
    with pytest.raises(PaystackNotFound) as missing:
        run(Paystackish(json_answer(404, body)), lambda c: c.verify_transfer("t-1"))
    assert missing.value.code == "not_found"


def test_an_unresolvable_account_is_its_own_refusal() -> None:
    body = {"status": False, "message": "Could not resolve account name. Check parameters or try again."}
    with pytest.raises(AccountNotResolved):
        run(Paystackish(json_answer(422, body)), lambda c: c.resolve_account(account_number="1", bank_code="058"))


def test_a_429_is_waited_out_for_its_retry_after_and_then_repeated_even_for_a_refund() -> None:
    refunded = {"status": True, "message": "Refund has been queued for processing", "data": {"id": 7}}
    answers = Paystackish(json_answer(429, {"status": False, "message": "Too many"}, {"Retry-After": "0.1"}),
                          json_answer(200, refunded))  # fmt: skip
    answer = run(answers, refund)
    assert (answer.id, len(answers.requests)) == ("7", 2)


def test_a_retry_after_beyond_the_deadline_is_not_waited_for() -> None:
    answers = Paystackish(json_answer(429, {"status": False, "message": "Too many"}, {"Retry-After": "30"}))
    with pytest.raises(PaystackUnavailable, match="limiting"):
        run(answers, lambda c: c.verify("r-1"), timeout_s=2.0)
    assert len(answers.requests) == 1


@pytest.mark.parametrize("failure", [json_answer(502, {"message": "Bad gateway"}), timing_out])
def test_a_5xx_or_a_timeout_repeats_a_safe_call(failure: Answer) -> None:
    answers = Paystackish(failure, json_answer(200, VERIFIED))
    assert run(answers, lambda c: c.verify("r-1")).status == "success"
    assert len(answers.requests) == 2
    # Initialize carries our reference: a repeat that reached Paystack twice is refused as a duplicate.
    started = {"status": True, "message": "Authorization URL created", "data": {"authorization_url": "u"}}
    answers = Paystackish(failure, json_answer(200, started))
    assert run(answers, initialize).authorization_url == "u"
    assert len(answers.requests) == 2


@pytest.mark.parametrize("failure", [json_answer(502, {"message": "Bad gateway"}), timing_out])
def test_a_5xx_or_a_timeout_never_repeats_a_refund(failure: Answer) -> None:
    answers = Paystackish(failure, json_answer(200, {"status": True, "data": {"id": 7}}))
    with pytest.raises(PaystackUnavailable):
        run(answers, refund)
    assert len(answers.requests) == 1


def test_a_refused_connection_repeats_even_a_refund_since_the_request_never_left() -> None:
    answers = Paystackish(refusing_connection, json_answer(200, {"status": True, "data": {"id": 7}}))
    assert run(answers, refund).id == "7"
    assert len(answers.requests) == 2


def test_a_safe_call_gives_up_after_three_attempts() -> None:
    answers = Paystackish(json_answer(503, {"message": "Unavailable"}))
    with pytest.raises(PaystackUnavailable, match="503"):
        run(answers, lambda c: c.verify("r-1"))
    assert len(answers.requests) == 3


def test_a_refused_secret_key_is_an_outage_not_a_refusal() -> None:
    with pytest.raises(PaystackUnavailable, match="secret key"):
        run(Paystackish(json_answer(401, {"status": False, "message": "Invalid key"})), lambda c: c.verify("r-1"))


def test_banks_follow_paystacks_cursor_to_the_last_page() -> None:
    def bank(code: str) -> dict[str, Any]:
        return {"name": f"Bank {code}", "code": code, "currency": "NGN", "active": True}

    answers = Paystackish(
        json_answer(200, {"status": True, "data": [bank("1"), bank("2")], "meta": {"next": "YmFuazoy"}}),
        json_answer(200, {"status": True, "data": [bank("3")], "meta": {"next": None}}),
    )
    assert [b.code for b in run(answers, lambda c: c.banks("NGN"))] == ["1", "2", "3"]
    assert answers.requests[1].url.params["next"] == "YmFuazoy"
