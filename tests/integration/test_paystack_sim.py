"""The Paystack simulator over real HTTP, delivering real signed webhooks to a real receiver.

Each test starts its own simulator in this event loop on a free loopback port,
with its state in the test's temporary directory, and a small aiohttp webhook
receiver that records every request (and can be told to answer 500 first).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from services.common.config import Settings
from services.paystack_sim.banks import UNRESOLVABLE_MESSAGE, account_holder
from services.paystack_sim.main import Simulator, start
from services.paystack_sim.records import DeliveryStatus, TransactionStatus
from services.paystack_sim.state import State
from services.paystack_sim.webhooks import MAX_ATTEMPTS
from tests.helpers import eventually

pytestmark = pytest.mark.asyncio
WAIT_S = 10.0


@dataclass
class Delivery:
    body: bytes
    signature: str | None
    content_type: str
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class WebhookReceiver:
    """Records every POST; answers 500 to the next `failures_left` of them, 200 afterwards.

    After `hold()` it answers nothing until `release()`, so a test can look at
    the simulator while a delivery is on the wire (`waiting` counts those).
    """

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.failures_left = 0
        self.waiting = 0
        self._released: asyncio.Event | None = None
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def hold(self) -> None:
        self._released = asyncio.Event()

    def release(self) -> None:
        if self._released is not None:
            self._released.set()
        self._released = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhooks/paystack", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/webhooks/paystack"

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        released = self._released
        if released is not None:
            async with self._changed:
                self.waiting += 1
                self._changed.notify_all()
            await released.wait()
            async with self._changed:
                self.waiting -= 1
        answer = 200
        if self.failures_left > 0:
            self.failures_left -= 1
            answer = 500
        delivery = Delivery(
            await request.read(), request.headers.get("x-paystack-signature"), request.content_type, answer
        )
        async with self._changed:
            self.deliveries.append(delivery)
            self._changed.notify_all()
        return web.Response(status=answer)

    async def wait_for(self, predicate: Callable[[list[Delivery]], bool]) -> list[Delivery]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.deliveries)), WAIT_S)
        return self.deliveries

    async def wait_for_event(
        self, event: str, reference: str, *, count: int = 1, answered: int = 200
    ) -> list[Delivery]:
        """The deliveries of `event` about `reference` once `count` of them got `answered`."""

        def matching(deliveries: list[Delivery]) -> list[Delivery]:
            return [d for d in deliveries if d.payload["event"] == event and _reference_of(d.payload) == reference]

        await self.wait_for(lambda ds: len([d for d in matching(ds) if d.answered == answered]) >= count)
        return matching(self.deliveries)

    async def wait_until_held(self) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.waiting > 0), WAIT_S)

    def about(self, reference: str) -> list[Delivery]:
        return [d for d in self.deliveries if _reference_of(d.payload) == reference]


def _reference_of(payload: dict[str, Any]) -> str:
    data = payload["data"]
    return str(data.get("transaction_reference") or data["reference"])


class SimulatorUnderTest:
    def __init__(self, simulator: Simulator, secret_key: str) -> None:
        self.simulator = simulator
        self.secret_key = secret_key
        self.api = httpx.AsyncClient(base_url=simulator.base_url, headers={"Authorization": f"Bearer {secret_key}"})
        # The customer's browser and the /_sim controls present no key.
        self.browser = httpx.AsyncClient(base_url=simulator.base_url)

    async def close(self) -> None:
        await self.api.aclose()
        await self.browser.aclose()
        await self.simulator.stop()

    async def initialize(self, **fields: Any) -> dict[str, Any]:
        body = {"email": "ada@example.com", "amount": 500_000, "currency": "NGN", "reference": new_reference()}
        body.update(fields)
        response = await self.api.post("/transaction/initialize", json=body)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def paid(self, **fields: Any) -> dict[str, Any]:
        """A transaction initialized and paid at the checkout; returns initialize's data."""
        started = await self.initialize(**fields)
        await self.pay(started)
        return started

    async def pay(self, started: dict[str, Any]) -> None:
        response = await self.browser.post(f"/checkout/{started['access_code']}/pay", json={"outcome": "success"})
        assert response.status_code == 200, response.text

    async def drop(self, **body: Any) -> dict[str, Any]:
        response = await self.browser.post("/_sim/webhooks/drop", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["status"] is True
        data: dict[str, Any] = response.json()["data"]
        return data

    async def listed(self, path: str, **query: Any) -> dict[str, Any]:
        """A list route's whole answer: `data` and `meta`."""
        response = await self.api.get(path, params=query)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        assert answer["status"] is True
        return answer

    async def verify(self, reference: str) -> dict[str, Any]:
        response = await self.api.get(f"/transaction/verify/{reference}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def events(self, **filters: str) -> list[dict[str, Any]]:
        response = await self.browser.get("/_sim/events", params=filters)
        assert response.status_code == 200, response.text
        listed: list[dict[str, Any]] = response.json()["data"]
        return listed

    async def recipient(self, **fields: Any) -> dict[str, Any]:
        body = {"type": "nuban", "name": "Ada Obi", "account_number": "0123456789", "bank_code": "058"}
        body.update(fields)
        response = await self.api.post("/transferrecipient", json=body)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def transfer(self, recipient_code: str, **fields: Any) -> dict[str, Any]:
        body = {"source": "balance", "amount": 300_000, "recipient": recipient_code, "reason": "Goal payout"}
        body.update({"reference": new_reference("payout_"), **fields})
        response = await self.api.post("/transfer", json=body)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


def refusal(response: httpx.Response) -> str:
    """The message of a refusal in Paystack's error envelope (`status, message, meta.nextStep, type, code`)."""
    body = response.json()
    assert body["status"] is False
    assert body["type"] == "validation_error"
    assert isinstance(body["code"], str)
    assert isinstance(body["meta"]["nextStep"], str)
    message: str = body["message"]
    return message


def new_reference(prefix: str = "gofund-") -> str:
    return prefix + uuid.uuid4().hex[:16]


def signature_of(secret_key: str, body: bytes) -> str:
    return hmac.new(secret_key.encode(), body, hashlib.sha512).hexdigest()


Launch = Callable[..., Awaitable[SimulatorUnderTest]]


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest_asyncio.fixture
async def launch(tmp_path: Path, receiver: WebhookReceiver) -> AsyncIterator[Launch]:
    """Start a simulator (state in tmp_path, webhooks to `receiver`); every one started is stopped at the end."""
    started: list[SimulatorUnderTest] = []

    async def launch(**overrides: Any) -> SimulatorUnderTest:
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "webhook_url": receiver.url,
            "paystack_sim_retry_base_ms": 50,
            "paystack_sim_settle_ms": 0,
        }
        values.update(overrides)
        settings = Settings(**values)
        under_test = SimulatorUnderTest(await start(settings, port=0), settings.paystack_secret_key)
        started.append(under_test)
        return under_test

    yield launch
    for under_test in started:
        await under_test.close()


@pytest_asyncio.fixture
async def paystack(launch: Launch) -> SimulatorUnderTest:
    return await launch()


# Payments.


async def test_a_paid_checkout_verifies_as_success_and_sends_a_signed_charge_success(
    paystack: SimulatorUnderTest, receiver: WebhookReceiver
) -> None:
    reference = new_reference()
    started = await paystack.initialize(
        email="ada@example.com", amount=750_000, reference=reference, metadata={"goal_id": "g1"}
    )
    assert started["reference"] == reference
    assert started["authorization_url"] == f"{paystack.simulator.base_url}/checkout/{started['access_code']}"

    before = await paystack.verify(reference)
    assert before["status"] == "abandoned"
    assert (before["amount"], before["requested_amount"], before["currency"]) == (750_000, 750_000, "NGN")
    assert before["paid_at"] is None
    assert before["authorization"] == {}
    assert before["customer"]["email"] == "ada@example.com"
    assert before["metadata"] == {"goal_id": "g1"}

    page = await paystack.browser.get(started["authorization_url"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "NGN 7,500.00" in page.text
    assert 'data-amount="750000"' in page.text

    paid = await paystack.browser.post(f"/checkout/{started['access_code']}/pay", json={})
    assert paid.json()["data"]["status"] == "success"

    after = await paystack.verify(reference)
    assert after["status"] == "success"
    assert after["gateway_response"] == "Successful"
    assert after["paid_at"] is not None
    assert after["paidAt"] == after["paid_at"]
    assert after["id"] == before["id"]
    assert after["domain"] == "test"
    assert after["channel"] == "card"
    assert after["fees"] > 0
    assert set(after["customer"]) >= {
        "id",
        "first_name",
        "last_name",
        "email",
        "customer_code",
        "phone",
        "metadata",
        "risk_action",
    }
    assert after["customer"]["customer_code"].startswith("CUS_")
    authorization = after["authorization"]
    assert set(authorization) >= {
        "authorization_code",
        "bin",
        "last4",
        "exp_month",
        "exp_year",
        "channel",
        "card_type",
        "bank",
        "country_code",
        "brand",
        "reusable",
        "signature",
        "account_name",
    }
    assert authorization["authorization_code"].startswith("AUTH_")
    assert (authorization["last4"], authorization["reusable"]) == ("4081", True)

    [delivery] = await receiver.wait_for_event("charge.success", reference)
    assert delivery.content_type == "application/json"
    assert delivery.signature == signature_of(paystack.secret_key, delivery.body)
    assert delivery.payload["data"] == after


async def test_a_declined_checkout_fails_and_sends_no_webhook(paystack: SimulatorUnderTest) -> None:
    started = await paystack.initialize()
    declined = await paystack.browser.post(f"/checkout/{started['access_code']}/pay", json={"outcome": "failed"})
    assert declined.status_code == 200

    verified = await paystack.verify(started["reference"])
    assert (verified["status"], verified["gateway_response"], verified["paid_at"]) == ("failed", "Declined", None)
    assert await paystack.events(reference=started["reference"]) == []


async def test_paying_twice_is_refused_and_sends_no_second_event(paystack: SimulatorUnderTest) -> None:
    started = await paystack.paid()
    again = await paystack.browser.post(f"/checkout/{started['access_code']}/pay", json={"outcome": "success"})
    assert again.status_code == 400
    assert again.json()["status"] is False
    assert len(await paystack.events(event="charge.success", reference=started["reference"])) == 1


async def test_the_amount_control_makes_the_captured_amount_differ_from_the_requested_one(
    paystack: SimulatorUnderTest, receiver: WebhookReceiver
) -> None:
    started = await paystack.initialize(amount=500_000)
    response = await paystack.browser.post(f"/checkout/{started['access_code']}/pay", json={"amount": 100_000})
    assert response.status_code == 200

    verified = await paystack.verify(started["reference"])
    assert (verified["status"], verified["amount"], verified["requested_amount"]) == ("success", 100_000, 500_000)
    [delivery] = await receiver.wait_for_event("charge.success", started["reference"])
    assert delivery.payload["data"]["amount"] == 100_000


async def test_the_checkout_form_returns_the_customer_to_the_callback_url(paystack: SimulatorUnderTest) -> None:
    started = await paystack.initialize(callback_url="http://127.0.0.1:9/payments/return?goal=g1")
    response = await paystack.browser.post(f"/checkout/{started['access_code']}/pay", data={"outcome": "success"})
    assert response.status_code == 303
    reference = started["reference"]
    assert response.headers["location"] == (
        f"http://127.0.0.1:9/payments/return?goal=g1&trxref={reference}&reference={reference}"
    )


async def test_an_unknown_checkout_is_not_found(paystack: SimulatorUnderTest) -> None:
    assert (await paystack.browser.get("/checkout/nosuchcode")).status_code == 404
    assert (await paystack.browser.post("/checkout/nosuchcode/pay", json={})).status_code == 404


# Authentication and validation.


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Bearer sk_test_wrong", "Invalid key"),
        (None, "No Authorization Header was found"),
        ("sk_test_gofund_dev", "Format is Authorization Bearer [secret key]"),
    ],
)
async def test_a_wrong_or_missing_secret_key_is_refused(
    paystack: SimulatorUnderTest, authorization: str | None, message: str
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    body = {"email": "ada@example.com", "amount": 1000}
    for call in (
        paystack.browser.post("/transaction/initialize", json=body, headers=headers),
        paystack.browser.get("/transaction/verify/anything", headers=headers),
        paystack.browser.post("/transfer", json={}, headers=headers),
    ):
        response = await call
        assert response.status_code == 401
        assert response.json() == {"status": False, "message": message}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": ""}, "Email is not allowed to be empty"),
        ({"email": "not-an-email"}, "Invalid Email Address Passed"),
        ({"amount": "five"}, "Invalid Amount Sent"),
        ({"amount": 12.5}, "Invalid Amount Sent"),
        ({"amount": 0}, "You must specify a valid amount"),
        ({"currency": "EUR"}, "Currency not supported by merchant"),
        ({"reference": "has spaces!"}, "Invalid character in transaction reference"),
    ],
)
async def test_initialize_refuses_invalid_fields_with_paystacks_message(
    paystack: SimulatorUnderTest, fields: dict[str, Any], message: str
) -> None:
    body = {"email": "ada@example.com", "amount": 500_000, "currency": "NGN", "reference": new_reference(), **fields}
    response = await paystack.api.post("/transaction/initialize", json=body)
    assert response.status_code == 400
    assert refusal(response) == message


async def test_initialize_takes_every_supported_currency_and_amounts_as_digit_strings(
    paystack: SimulatorUnderTest,
) -> None:
    for currency in ("NGN", "GHS", "ZAR", "KES", "USD"):
        started = await paystack.initialize(currency=currency, amount="2500")
        verified = await paystack.verify(started["reference"])
        assert (verified["currency"], verified["amount"]) == (currency, 2500)


async def test_a_duplicate_transaction_reference_is_refused(paystack: SimulatorUnderTest) -> None:
    reference = new_reference()
    await paystack.initialize(reference=reference)
    response = await paystack.api.post(
        "/transaction/initialize", json={"email": "ada@example.com", "amount": 100, "reference": reference}
    )
    assert response.status_code == 400
    assert refusal(response) == "Duplicate Transaction Reference"
    assert response.json()["code"] == "duplicate_reference"


async def test_an_unknown_reference_does_not_verify(paystack: SimulatorUnderTest) -> None:
    response = await paystack.api.get(f"/transaction/verify/{new_reference()}")
    assert response.status_code == 400
    assert refusal(response) == "Transaction reference not found"
    assert response.json()["code"] == "transaction_not_found"


# Refunds.


async def test_a_processed_refund_sends_refund_processed_and_reverses_the_transaction(
    paystack: SimulatorUnderTest, receiver: WebhookReceiver
) -> None:
    started = await paystack.paid(amount=500_000)
    reference = started["reference"]

    created = await paystack.api.post("/refund", json={"transaction": reference})
    assert created.status_code == 200
    assert created.json()["message"] == "Refund has been queued for processing"
    refund = created.json()["data"]
    assert (refund["status"], refund["amount"], refund["currency"]) == ("pending", 500_000, "NGN")
    assert refund["transaction"]["reference"] == reference

    fetched = await paystack.api.get(f"/refund/{refund['id']}")
    assert fetched.json()["data"]["status"] == "pending"

    settled = await paystack.browser.post(f"/_sim/refunds/{refund['id']}/settle", json={"outcome": "success"})
    assert settled.status_code == 200
    assert settled.json()["data"]["status"] == "processed"

    [delivery] = await receiver.wait_for_event("refund.processed", reference)
    assert delivery.signature == signature_of(paystack.secret_key, delivery.body)
    data = delivery.payload["data"]
    assert (data["status"], data["transaction_reference"], data["currency"]) == ("processed", reference, "NGN")
    # As in Paystack's sample, refund.processed prints the amount as a string.
    assert data["amount"] == "500000"
    assert isinstance(data["refund_reference"], str)
    assert data["refund_reference"]
    assert (await paystack.verify(reference))["status"] == "reversed"

    again = await paystack.browser.post(f"/_sim/refunds/{refund['id']}/settle", json={"outcome": "failed"})
    assert again.status_code == 409
    assert len(await paystack.events(reference=reference, event="refund.processed")) == 1
    assert await paystack.events(reference=reference, event="refund.failed") == []

    another = await paystack.api.post("/refund", json={"transaction": reference})
    assert another.status_code == 400
    assert another.json()["message"] == "Transaction has been fully reversed"


async def test_a_failed_refund_sends_refund_failed_and_the_amount_can_be_refunded_again(
    paystack: SimulatorUnderTest, receiver: WebhookReceiver
) -> None:
    started = await paystack.paid(amount=500_000)
    reference = started["reference"]
    transaction_id = (await paystack.verify(reference))["id"]

    created = await paystack.api.post("/refund", json={"transaction": transaction_id, "amount": "200000"})
    assert created.json()["data"]["amount"] == 200_000
    # The settle control also finds a transaction's pending refund by the transaction's reference.
    settled = await paystack.browser.post(f"/_sim/refunds/{reference}/settle", json={"outcome": "failed"})
    assert settled.json()["data"]["status"] == "failed"

    [delivery] = await receiver.wait_for_event("refund.failed", reference)
    assert (delivery.payload["data"]["status"], delivery.payload["data"]["amount"]) == ("failed", 200_000)
    assert (await paystack.verify(reference))["status"] == "success"

    full = await paystack.api.post("/refund", json={"transaction": reference})
    assert full.json()["data"]["amount"] == 500_000


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"transaction": "no-such-reference"}, "Transaction not found"),
        ({"transaction": "PAID", "amount": 500_001}, None),
        ({"transaction": "PAID", "amount": 0}, "Invalid Amount Sent"),
        ({"transaction": "UNPAID"}, None),
    ],
)
async def test_a_refund_paystack_would_refuse_is_refused(
    paystack: SimulatorUnderTest, body: dict[str, Any], message: str | None
) -> None:
    paid = await paystack.paid(amount=500_000)
    unpaid = await paystack.initialize()
    names = {"PAID": paid["reference"], "UNPAID": unpaid["reference"]}
    body = {**body, "transaction": names.get(body["transaction"], body["transaction"])}
    response = await paystack.api.post("/refund", json=body)
    assert response.status_code == 400
    assert response.json()["status"] is False
    if message is not None:
        assert response.json()["message"] == message


# Transfers.


async def test_a_transfer_recipient_gets_a_code_and_the_same_account_the_same_recipient(
    paystack: SimulatorUnderTest,
) -> None:
    created = await paystack.recipient(name="Ada Obi", account_number="0123456789", bank_code="058")
    assert created["recipient_code"].startswith("RCP_")
    assert (created["type"], created["currency"], created["active"]) == ("nuban", "NGN", True)
    assert created["details"] == {
        "authorization_code": None,
        "account_number": "0123456789",
        # The name the bank holds, as /bank/resolve answers it; `name` is the merchant's own label.
        "account_name": account_holder("0123456789"),
        "bank_code": "058",
        "bank_name": "Guaranty Trust Bank",
    }
    assert created["name"] == "Ada Obi"
    again = await paystack.recipient(name="Ada Obi", account_number="0123456789", bank_code="058")
    assert again["recipient_code"] == created["recipient_code"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"account_number": "0000000000"}, "Cannot resolve account"),
        ({"bank_code": ""}, "bank_code is required"),
        ({"account_number": "01234abc89"}, "Account number should be numeric"),
        ({"account_number": "12345"}, "Account number is invalid"),
        ({"bank_code": "999"}, "Unknown bank code: 999"),
        ({"bank_code": "632005"}, "Unknown bank code: 632005"),  # a South African bank for a nuban account
    ],
)
async def test_a_recipient_paystack_cannot_resolve_is_refused(
    paystack: SimulatorUnderTest, fields: dict[str, Any], message: str
) -> None:
    body = {"type": "nuban", "name": "Ada Obi", "account_number": "0123456789", "bank_code": "058", **fields}
    response = await paystack.api.post("/transferrecipient", json=body)
    assert response.status_code == 400
    assert refusal(response) == message


# Banks.


async def test_list_banks_lists_nigerias_banks_by_default_and_filters_by_country_currency_type_and_flags(
    paystack: SimulatorUnderTest,
) -> None:
    nigeria = (await paystack.listed("/bank"))["data"]
    assert {b["country"] for b in nigeria} == {"Nigeria"}
    guaranty = next(b for b in nigeria if b["code"] == "058")
    assert (guaranty["name"], guaranty["id"], guaranty["currency"]) == ("Guaranty Trust Bank", 9, "NGN")
    assert [b["id"] for b in nigeria] == sorted((b["id"] for b in nigeria), reverse=True)
    ghana = (await paystack.listed("/bank", country="ghana"))["data"]
    assert {b["currency"] for b in ghana} == {"GHS"}
    assert {b["type"] for b in (await paystack.listed("/bank", currency="GHS", type="mobile_money"))["data"]} == {
        "mobile_money"
    }
    # A flag sent false filters nothing (paystackease sends them all); true keeps the banks that have it.
    unfiltered = await paystack.listed("/bank", pay_with_bank="false", enabled_for_verification="false")
    assert len(unfiltered["data"]) == len(nigeria)
    assert {b["code"] for b in (await paystack.listed("/bank", pay_with_bank="true"))["data"]} == {"058", "057"}
    verifying = (await paystack.listed("/bank", currency="ZAR", enabled_for_verification="true"))["data"]
    assert [b["supported_types"] for b in verifying] == [["business", "personal"]] * 5
    refused = await paystack.api.get("/bank", params={"country": "atlantis"})
    assert refused.status_code == 400


async def test_list_banks_pages_by_paystacks_cursor_both_ways(paystack: SimulatorUnderTest) -> None:
    everything = [b["code"] for b in (await paystack.listed("/bank"))["data"]]
    first = await paystack.listed("/bank", perPage="4")
    assert [b["code"] for b in first["data"]] == everything[:4]
    assert first["meta"]["previous"] is None
    second = await paystack.listed("/bank", perPage="4", next=first["meta"]["next"])
    assert [b["code"] for b in second["data"]] == everything[4:8]
    back = await paystack.listed("/bank", perPage="4", previous=second["meta"]["previous"])
    assert [b["code"] for b in back["data"]] == everything[:4]
    walked, meta = [], {"next": None}
    while True:
        page = await paystack.listed("/bank", perPage="4", **({"next": meta["next"]} if meta["next"] else {}))
        walked += [b["code"] for b in page["data"]]
        meta = page["meta"]
        if meta["next"] is None:
            break
    assert walked == everything
    refused = await paystack.api.get("/bank", params={"next": "not-a-cursor"})
    assert refused.status_code == 400


async def test_resolve_account_names_the_holder_and_refuses_what_no_bank_holds(paystack: SimulatorUnderTest) -> None:
    response = await paystack.api.get("/bank/resolve", params={"account_number": "0001234567", "bank_code": "058"})
    assert response.status_code == 200
    assert response.json() == {
        "status": True,
        "message": "Account number resolved",
        "data": {"account_number": "0001234567", "account_name": account_holder("0001234567"), "bank_id": 9},
    }
    for query, status, message in (
        ({"account_number": "0000000000", "bank_code": "058"}, 422, UNRESOLVABLE_MESSAGE),
        ({"account_number": "12345", "bank_code": "058"}, 422, UNRESOLVABLE_MESSAGE),
        ({"account_number": "0001234567", "bank_code": "999"}, 422, "Unknown bank code: 999"),
        ({"bank_code": "058"}, 400, "Account number is required"),
    ):
        refused = await paystack.api.get("/bank/resolve", params=query)
        assert refused.status_code == status, query
        assert refusal(refused) == message


async def test_unrouted_paths_and_methods_answer_paystacks_json_envelope(paystack: SimulatorUnderTest) -> None:
    unknown = await paystack.api.get("/no/such/route")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"
    wrong_method = await paystack.api.post("/transfer/verify/some-reference")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "method_not_allowed"
    assert wrong_method.json()["status"] is False


async def test_fetch_transaction_finds_it_by_paystacks_numeric_id(paystack: SimulatorUnderTest) -> None:
    started = await paystack.paid()
    verified = await paystack.verify(started["reference"])
    response = await paystack.api.get(f"/transaction/{verified['id']}")
    assert response.status_code == 200
    fetched = response.json()["data"]
    assert (fetched["reference"], fetched["status"], fetched["amount"]) == (started["reference"], "success", 500_000)
    for missing_id in ("999999999", "not-a-number"):
        absent = await paystack.api.get(f"/transaction/{missing_id}")
        assert absent.status_code == 404
        assert absent.json()["code"] == "transaction_not_found"


async def test_transfers_settle_as_success_failed_or_reversed_with_one_event_each(
    paystack: SimulatorUnderTest, receiver: WebhookReceiver
) -> None:
    recipient = await paystack.recipient()
    code = recipient["recipient_code"]
    succeeding = await paystack.transfer(code, amount=300_000)
    assert succeeding["transfer_code"].startswith("TRF_")
    assert (succeeding["status"], succeeding["amount"], succeeding["recipient"]) == (
        "pending",
        300_000,
        recipient["id"],
    )
    failing = await paystack.transfer(code)
    reversing = await paystack.transfer(code)

    for transfer, outcome in ((succeeding, "success"), (failing, "failed"), (reversing, "success")):
        settled = await paystack.browser.post(
            f"/_sim/transfers/{transfer['transfer_code']}/settle", json={"outcome": outcome}
        )
        assert settled.status_code == 200, settled.text
    # A transfer that went through can still come back.
    reversed_ = await paystack.browser.post(
        f"/_sim/transfers/{reversing['transfer_code']}/settle", json={"outcome": "reversed"}
    )
    assert reversed_.status_code == 200

    [success] = await receiver.wait_for_event("transfer.success", succeeding["reference"])
    data = success.payload["data"]
    assert (data["status"], data["transfer_code"], data["amount"], data["currency"]) == (
        "success",
        succeeding["transfer_code"],
        300_000,
        "NGN",
    )
    assert data["reason"] == "Goal payout"
    assert data["transferred_at"] is not None
    assert data["recipient"]["recipient_code"] == code
    assert data["recipient"]["details"]["account_number"] == "0123456789"
    [failed] = await receiver.wait_for_event("transfer.failed", failing["reference"])
    assert failed.payload["data"]["status"] == "failed"
    [reversed_event] = await receiver.wait_for_event("transfer.reversed", reversing["reference"])
    assert reversed_event.payload["data"]["status"] == "reversed"

    verified = await paystack.api.get(f"/transfer/verify/{reversing['reference']}")
    assert verified.json()["data"]["status"] == "reversed"

    for transfer in (succeeding, failing, reversing):
        again = await paystack.browser.post(
            f"/_sim/transfers/{transfer['transfer_code']}/settle", json={"outcome": "success"}
        )
        assert again.status_code == 409
    assert len(await paystack.events(event="transfer.success", reference=succeeding["reference"])) == 1


async def test_a_transfer_to_an_unknown_recipient_or_with_a_used_reference_is_refused(
    paystack: SimulatorUnderTest,
) -> None:
    unknown = await paystack.api.post(
        "/transfer", json={"source": "balance", "amount": 1000, "recipient": "RCP_nosuchrecipient"}
    )
    assert unknown.status_code == 400
    assert refusal(unknown) == "Recipient specified is invalid"
    assert unknown.json()["code"] == "invalid_transfer_recipient"

    recipient = await paystack.recipient()
    first = await paystack.transfer(recipient["recipient_code"])
    duplicate = await paystack.api.post(
        "/transfer",
        json={
            "source": "balance",
            "amount": 1000,
            "recipient": recipient["recipient_code"],
            "reference": first["reference"],
        },
    )
    assert duplicate.status_code == 400
    assert refusal(duplicate) == "Please provide a unique reference. Reference already exists on a transfer"
    assert duplicate.json()["code"] == "duplicate_reference"


# Webhook delivery.


async def test_a_webhook_answered_500_is_retried_with_the_same_signed_body_until_it_gets_200(
    paystack: SimulatorUnderTest, receiver: WebhookReceiver
) -> None:
    receiver.failures_left = 3
    started = await paystack.paid()
    reference = started["reference"]

    deliveries = await receiver.wait_for_event("charge.success", reference)
    assert [d.answered for d in deliveries] == [500, 500, 500, 200]
    assert len({d.body for d in deliveries}) == 1
    assert all(d.signature == signature_of(paystack.secret_key, d.body) for d in deliveries)

    async def recorded() -> bool:
        [event] = await paystack.events(reference=reference)
        return bool(event["status"] == "delivered")

    await eventually(recorded)
    [event] = await paystack.events(reference=reference)
    assert (event["attempts"], event["last_http_status"]) == (4, 200)
    assert [a["http_status"] for a in event["attempt_log"]] == [500, 500, 500, 200]


async def test_delivery_stops_after_paystacks_documented_number_of_attempts(
    launch: Launch, receiver: WebhookReceiver
) -> None:
    paystack = await launch(paystack_sim_retry_base_ms=1)
    receiver.failures_left = MAX_ATTEMPTS + 10
    reference = (await paystack.paid())["reference"]

    async def given_up() -> bool:
        [event] = await paystack.events(reference=reference)
        return bool(event["status"] == "failed")

    await eventually(given_up)
    [event] = await paystack.events(reference=reference)
    assert event["attempts"] == MAX_ATTEMPTS == 76
    assert event["next_attempt_at"] is None
    assert len(receiver.deliveries) == MAX_ATTEMPTS


async def test_redelivery_sends_the_same_event_again(paystack: SimulatorUnderTest, receiver: WebhookReceiver) -> None:
    reference = (await paystack.paid())["reference"]
    [original] = await receiver.wait_for_event("charge.success", reference)

    by_reference = await paystack.browser.post("/_sim/webhooks/redeliver", json={"reference": reference})
    assert by_reference.status_code == 200
    assert by_reference.json()["data"]["redelivery_of"] == 0
    latest = await paystack.browser.post("/_sim/webhooks/redeliver", json={})
    assert latest.status_code == 200
    by_index = await paystack.browser.post("/_sim/webhooks/redeliver", json={"event_index": 0})
    assert by_index.status_code == 200

    deliveries = await receiver.wait_for_event("charge.success", reference, count=4)
    assert {d.body for d in deliveries} == {original.body}
    assert all(d.signature == original.signature for d in deliveries)

    missing = await paystack.browser.post("/_sim/webhooks/redeliver", json={"event_index": 99})
    assert missing.status_code == 404


# Restarts and automatic settlement.


async def test_a_paid_transaction_still_verifies_after_a_restart(launch: Launch, receiver: WebhookReceiver) -> None:
    first = await launch()
    started = await first.paid()
    await receiver.wait_for_event("charge.success", started["reference"])
    before = await first.verify(started["reference"])
    await first.close()

    second = await launch()
    assert await second.verify(started["reference"]) == before
    duplicate = await second.api.post(
        "/transaction/initialize",
        json={"email": "ada@example.com", "amount": 100, "reference": started["reference"]},
    )
    assert duplicate.json()["message"] == "Duplicate Transaction Reference"
    assert (await second.verify((await second.initialize())["reference"]))["id"] > before["id"]
    [event] = await second.events()
    assert (event["event"], event["attempts"], event["last_http_status"]) == ("charge.success", 1, 200)


async def test_a_pending_webhook_is_resumed_after_a_restart(launch: Launch, receiver: WebhookReceiver) -> None:
    receiver.failures_left = 1_000
    first = await launch()
    reference = (await first.paid())["reference"]
    [refused, *_] = await receiver.wait_for_event("charge.success", reference, answered=500)
    await first.close()

    receiver.failures_left = 0
    second = await launch()
    deliveries = await receiver.wait_for_event("charge.success", reference)
    assert deliveries[-1].body == refused.body

    async def recorded() -> bool:
        [event] = await second.events(reference=reference)
        return bool(event["status"] == "delivered")

    await eventually(recorded)
    [event] = await second.events(reference=reference)
    *refusals, accepted = [a["http_status"] for a in event["attempt_log"]]
    assert refusals
    assert set(refusals) == {500}
    assert accepted == 200


async def test_refunds_and_transfers_settle_by_themselves_when_settle_ms_is_set(
    launch: Launch, receiver: WebhookReceiver
) -> None:
    paystack = await launch(paystack_sim_settle_ms=50)
    reference = (await paystack.paid())["reference"]
    refund = await paystack.api.post("/refund", json={"transaction": reference})
    assert refund.json()["data"]["status"] == "pending"
    transfer = await paystack.transfer((await paystack.recipient())["recipient_code"])

    await receiver.wait_for_event("refund.processed", reference)
    await receiver.wait_for_event("transfer.success", transfer["reference"])
    settled = await paystack.browser.post(f"/_sim/transfers/{transfer['transfer_code']}/settle", json={})
    assert settled.status_code == 409


# Losing webhooks on purpose (/_sim/webhooks/drop).


async def test_a_drop_armed_for_a_reference_before_paying_loses_that_charge_success_for_good(
    launch: Launch, receiver: WebhookReceiver
) -> None:
    first = await launch()
    lost = await first.initialize()
    armed = await first.drop(reference=lost["reference"])
    assert armed["dropped"] is None
    assert armed["armed"]["reference"] == lost["reference"]

    await first.pay(lost)
    # Another payment's event goes through: the simulator is delivering, just not the dropped one.
    kept = await first.paid()
    await receiver.wait_for_event("charge.success", kept["reference"])
    [event] = await first.events(reference=lost["reference"])
    assert (event["event"], event["status"], event["attempts"]) == ("charge.success", "dropped", 0)
    assert event["dropped_at"] is not None
    assert event["payload"]["data"]["status"] == "success"
    assert (await first.verify(lost["reference"]))["status"] == "success"
    await first.close()

    second = await launch()
    after_restart = await second.paid()
    await receiver.wait_for_event("charge.success", after_restart["reference"])
    [event] = await second.events(reference=lost["reference"])
    assert event["status"] == "dropped"
    assert receiver.about(lost["reference"]) == []


async def test_an_empty_drop_loses_only_the_next_event(paystack: SimulatorUnderTest, receiver: WebhookReceiver) -> None:
    armed = await paystack.drop()
    assert armed["armed"]["reference"] is None
    lost = await paystack.paid()
    kept = await paystack.paid()

    await receiver.wait_for_event("charge.success", kept["reference"])
    assert [e["status"] for e in await paystack.events()] == ["dropped", "delivered"]
    assert receiver.about(lost["reference"]) == []


async def test_an_armed_drop_survives_a_restart(launch: Launch, receiver: WebhookReceiver) -> None:
    first = await launch()
    reference = new_reference()
    await first.drop(reference=reference)
    await first.close()

    second = await launch()
    await second.paid(reference=reference)
    kept = await second.paid()
    await receiver.wait_for_event("charge.success", kept["reference"])
    [event] = await second.events(reference=reference)
    assert event["status"] == "dropped"
    assert receiver.about(reference) == []


async def test_dropping_a_pending_event_ends_its_retries(launch: Launch, receiver: WebhookReceiver) -> None:
    # Retries 200 ms apart: once an attempt is recorded, the next is far enough off not to be on the wire.
    paystack = await launch(paystack_sim_retry_base_ms=200)
    receiver.failures_left = 1_000
    by_index = await paystack.paid()
    by_reference = await paystack.paid()

    async def refused_once() -> bool:
        events = await paystack.events()
        return all(e["attempts"] >= 1 for e in events)

    await eventually(refused_once)
    [pending] = await paystack.events(reference=by_index["reference"])
    dropped = await paystack.drop(event_index=pending["index"])
    assert dropped["armed"] is None
    assert (dropped["dropped"]["index"], dropped["dropped"]["status"]) == (pending["index"], "dropped")
    # A pending event about the reference is dropped at once, not a later one.
    dropped = await paystack.drop(reference=by_reference["reference"])
    assert dropped["dropped"]["reference"] == by_reference["reference"]

    # A later event, refused once: its retry is due a retry period after an attempt made
    # after the drops, so after any retry of the dropped events would have been due.
    receiver.failures_left = 1
    kept = await paystack.paid()
    await receiver.wait_for_event("charge.success", kept["reference"], answered=500)
    attempts = {r: len(receiver.about(r)) for r in (by_index["reference"], by_reference["reference"])}
    await receiver.wait_for_event("charge.success", kept["reference"])
    assert {r: len(receiver.about(r)) for r in attempts} == attempts
    for reference in attempts:
        [event] = await paystack.events(reference=reference)
        assert (event["status"], event["next_attempt_at"]) == ("dropped", None)
        assert {d.answered for d in receiver.about(reference)} == {500}


async def test_a_drop_naming_no_pending_event_is_not_found(
    paystack: SimulatorUnderTest, receiver: WebhookReceiver
) -> None:
    delivered = await paystack.paid()
    await receiver.wait_for_event("charge.success", delivered["reference"])

    async def recorded() -> bool:
        [event] = await paystack.events(reference=delivered["reference"])
        return bool(event["status"] == "delivered")

    await eventually(recorded)
    for index in (0, 99, -1):
        response = await paystack.browser.post("/_sim/webhooks/drop", json={"event_index": index})
        assert response.status_code == 404, index
        assert response.json()["status"] is False
    bad: list[dict[str, Any]] = [{"event_index": "0"}, {"reference": 5}, {"reference": ""}]
    for body in bad:
        response = await paystack.browser.post("/_sim/webhooks/drop", json=body)
        assert response.status_code == 400, body
    # A reference with nothing pending arms a drop (its next event), it is never "not found".
    armed = await paystack.drop(reference=delivered["reference"])
    assert armed["armed"]["reference"] == delivered["reference"]


async def test_an_event_on_the_wire_cannot_be_dropped(paystack: SimulatorUnderTest, receiver: WebhookReceiver) -> None:
    receiver.hold()
    started = await paystack.paid()
    await receiver.wait_until_held()

    response = await paystack.browser.post("/_sim/webhooks/drop", json={"event_index": 0})
    assert response.status_code == 409
    assert response.json()["status"] is False
    receiver.release()
    await receiver.wait_for_event("charge.success", started["reference"])


# One write per change.


async def test_the_state_file_right_after_a_pay_holds_the_charge_and_its_queued_event(
    paystack: SimulatorUnderTest, receiver: WebhookReceiver
) -> None:
    # The receiver holds the delivery, so nothing after the pay has touched the file.
    receiver.hold()
    started = await paystack.paid()
    await receiver.wait_until_held()

    saved = State.load(paystack.simulator.state_path)
    transaction = saved.transactions[started["reference"]]
    [event] = saved.events
    assert transaction.status is TransactionStatus.SUCCESS
    assert (event.event, event.reference, event.status, event.attempts) == (
        "charge.success",
        started["reference"],
        DeliveryStatus.PENDING,
        [],
    )
    assert json.loads(event.body)["data"]["status"] == "success"
    receiver.release()


# Lists.

# The fields of one item of Paystack's List Transactions sample (doc-code-snippets
# dist/api/transactions/list/response.json).
LISTED_TRANSACTION_FIELDS = {
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
}
PAGINATION_META = {"total", "skipped", "perPage", "page", "pageCount"}


async def test_transactions_list_newest_first_in_pages_with_paystacks_meta(paystack: SimulatorUnderTest) -> None:
    oldest = await paystack.paid(amount=100_000)
    unpaid = await paystack.initialize(amount=200_000)
    newest = await paystack.paid(amount=300_000)

    first = await paystack.listed("/transaction", perPage=2)
    assert first["message"] == "Transactions retrieved"
    assert [t["reference"] for t in first["data"]] == [newest["reference"], unpaid["reference"]]
    assert first["meta"] == {
        "total": 3,
        "total_volume": 600_000,
        "skipped": 0,
        "perPage": 2,
        "page": 1,
        "pageCount": 2,
    }
    second = await paystack.listed("/transaction", perPage=2, page=2)
    assert [t["reference"] for t in second["data"]] == [oldest["reference"]]
    assert (second["meta"]["skipped"], second["meta"]["page"]) == (2, 2)
    beyond = await paystack.listed("/transaction", perPage=2, page=3)
    assert (beyond["data"], beyond["meta"]["total"]) == ([], 3)

    item = first["data"][0]
    assert set(item) == LISTED_TRANSACTION_FIELDS
    verified = await paystack.verify(newest["reference"])
    assert {k: item[k] for k in ("id", "status", "amount", "paid_at", "customer", "authorization")} == {
        k: verified[k] for k in ("id", "status", "amount", "paid_at", "customer", "authorization")
    }
    assert item["source"]["entry_point"] == "transaction_initialize"
    defaults = (await paystack.listed("/transaction"))["meta"]
    assert (defaults["perPage"], defaults["page"], defaults["pageCount"]) == (50, 1, 1)

    paid = await paystack.listed("/transaction", status="success")
    assert [t["reference"] for t in paid["data"]] == [newest["reference"], oldest["reference"]]
    assert (await paystack.listed("/transaction", status="abandoned"))["meta"]["total"] == 1


async def test_transactions_list_within_from_and_to(paystack: SimulatorUnderTest) -> None:
    started = await paystack.paid()
    created_at = (await paystack.verify(started["reference"]))["created_at"]
    today = created_at[:10]

    assert (await paystack.listed("/transaction", **{"from": today, "to": today}))["meta"]["total"] == 1
    assert (await paystack.listed("/transaction", **{"from": created_at, "to": created_at}))["meta"]["total"] == 1
    assert (await paystack.listed("/transaction", **{"from": "2999-01-01"}))["meta"]["total"] == 0
    assert (await paystack.listed("/transaction", to="2000-01-01T00:00:00.000Z"))["meta"]["total"] == 0


@pytest.mark.parametrize(
    "query", [{"perPage": "0"}, {"perPage": "ten"}, {"page": "-1"}, {"from": "yesterday"}, {"to": "2024-13-01"}]
)
async def test_a_list_query_paystack_cannot_read_is_refused(
    paystack: SimulatorUnderTest, query: dict[str, str]
) -> None:
    for path in ("/transaction", "/refund", "/transfer"):
        response = await paystack.api.get(path, params=query)
        assert response.status_code == 400, (path, query)
        assert response.json()["status"] is False


async def test_the_list_routes_need_the_secret_key(paystack: SimulatorUnderTest) -> None:
    for path in ("/transaction", "/refund", "/transfer"):
        response = await paystack.browser.get(path)
        assert response.status_code == 401
        assert response.json() == {"status": False, "message": "No Authorization Header was found"}


# The fields of one item of Paystack's List Refunds sample (dist/api/refunds/list/response.json),
# plus `createdAt`, the spelling of Paystack's OpenAPI spec (RefundListResponseArray).
LISTED_REFUND_FIELDS = {
    "id",
    "integration",
    "domain",
    "transaction",
    "dispute",
    "amount",
    "deducted_amount",
    "currency",
    "channel",
    "fully_deducted",
    "refunded_by",
    "refunded_at",
    "expected_at",
    "settlement",
    "customer_note",
    "merchant_note",
    "created_at",
    "updated_at",
    "createdAt",
    "status",
}


async def test_refunds_list_newest_first_and_by_transaction(paystack: SimulatorUnderTest) -> None:
    one = await paystack.paid(amount=500_000)
    other = await paystack.paid(amount=400_000)
    one_id = (await paystack.verify(one["reference"]))["id"]
    failed = (await paystack.api.post("/refund", json={"transaction": one["reference"], "amount": 100_000})).json()
    await paystack.browser.post(f"/_sim/refunds/{failed['data']['id']}/settle", json={"outcome": "failed"})
    processed = (await paystack.api.post("/refund", json={"transaction": one_id, "amount": 200_000})).json()
    await paystack.browser.post(f"/_sim/refunds/{processed['data']['id']}/settle", json={"outcome": "success"})
    pending = (await paystack.api.post("/refund", json={"transaction": other["reference"]})).json()

    everything = await paystack.listed("/refund")
    assert everything["message"] == "Refunds retrieved"
    assert [r["id"] for r in everything["data"]] == [
        pending["data"]["id"],
        processed["data"]["id"],
        failed["data"]["id"],
    ]
    assert set(everything["meta"]) == PAGINATION_META | {"failedRefundCount"}
    assert (everything["meta"]["total"], everything["meta"]["failedRefundCount"]) == (3, 1)

    for key in (one["reference"], str(one_id)):
        of_one = await paystack.listed("/refund", transaction=key)
        assert [r["id"] for r in of_one["data"]] == [processed["data"]["id"], failed["data"]["id"]]
    assert (await paystack.listed("/refund", transaction="no-such-transaction"))["data"] == []

    paged = await paystack.listed("/refund", perPage=1, page=2)
    assert [r["id"] for r in paged["data"]] == [processed["data"]["id"]]
    assert {k: paged["meta"][k] for k in PAGINATION_META} == {
        "total": 3,
        "skipped": 1,
        "perPage": 1,
        "page": 2,
        "pageCount": 3,
    }

    item = paged["data"][0]
    assert set(item) == LISTED_REFUND_FIELDS
    assert (item["transaction"], item["amount"], item["status"]) == (one_id, 200_000, "processed")
    assert (item["deducted_amount"], item["fully_deducted"], item["dispute"], item["settlement"]) == (
        200_000,
        1,
        None,
        None,
    )
    assert item["refunded_at"] is not None
    waiting = everything["data"][0]
    assert (waiting["status"], waiting["deducted_amount"], waiting["fully_deducted"]) == ("pending", None, None)


# Verify Transfer's `data` in Paystack's sample (dist/api/transfers/verify/response.json).
VERIFIED_TRANSFER_FIELDS = {
    "amount",
    "createdAt",
    "currency",
    "domain",
    "failures",
    "id",
    "integration",
    "reason",
    "reference",
    "source",
    "source_details",
    "status",
    "titan_code",
    "transfer_code",
    "request",
    "transferred_at",
    "updatedAt",
    "recipient",
    "session",
    "fee_charged",
    "fees_breakdown",
    "gateway_response",
}
VERIFIED_RECIPIENT_FIELDS = {
    "active",
    "createdAt",
    "currency",
    "description",
    "domain",
    "email",
    "id",
    "integration",
    "metadata",
    "name",
    "recipient_code",
    "type",
    "updatedAt",
    "is_deleted",
    "isDeleted",
    "details",
}


async def test_transfers_list_newest_first_by_status_and_recipient(paystack: SimulatorUnderTest) -> None:
    ada = (await paystack.recipient())["recipient_code"]
    bola = (await paystack.recipient(name="Bola Ade", account_number="0987654321"))["recipient_code"]
    succeeded = await paystack.transfer(ada)
    await paystack.browser.post(f"/_sim/transfers/{succeeded['transfer_code']}/settle", json={"outcome": "success"})
    waiting = await paystack.transfer(bola)
    newest = await paystack.transfer(ada)

    everything = await paystack.listed("/transfer")
    assert everything["message"] == "Transfers retrieved"
    assert [t["reference"] for t in everything["data"]] == [
        newest["reference"],
        waiting["reference"],
        succeeded["reference"],
    ]
    assert everything["meta"] == {"total": 3, "skipped": 0, "perPage": 50, "page": 1, "pageCount": 1}
    pending = await paystack.listed("/transfer", status="pending")
    assert [t["reference"] for t in pending["data"]] == [newest["reference"], waiting["reference"]]
    to_ada = await paystack.listed("/transfer", recipient=ada, perPage=1)
    assert [t["reference"] for t in to_ada["data"]] == [newest["reference"]]
    assert (to_ada["meta"]["total"], to_ada["meta"]["pageCount"]) == (2, 2)

    item = everything["data"][2]
    assert set(item) == VERIFIED_TRANSFER_FIELDS - {"gateway_response"}
    verified = (await paystack.api.get(f"/transfer/verify/{succeeded['reference']}")).json()["data"]
    assert item == {k: v for k, v in verified.items() if k != "gateway_response"}


# Fetch Refund, Create Refund and Verify Transfer as Paystack's samples print them.

# Fetch Refund's `data` in Paystack's sample (dist/api/refunds/fetch/response.json).
FETCHED_REFUND_FIELDS = {
    "integration",
    "transaction",
    "dispute",
    "settlement",
    "domain",
    "amount",
    "deducted_amount",
    "fully_deducted",
    "currency",
    "channel",
    "status",
    "refunded_by",
    "refunded_at",
    "expected_at",
    "customer_note",
    "merchant_note",
    "id",
    "createdAt",
    "updatedAt",
}
# Create Refund's `data` and its embedded transaction (dist/api/refunds/create/response.json).
CREATED_REFUND_FIELDS = FETCHED_REFUND_FIELDS - {"dispute", "settlement", "refunded_at"}
REFUNDED_TRANSACTION_FIELDS = {
    "id",
    "domain",
    "reference",
    "amount",
    "paid_at",
    "channel",
    "currency",
    "authorization",
    "customer",
    "plan",
    "subaccount",
    "split",
    "order_id",
    "paidAt",
    "pos_transaction_data",
    "source",
    "fees_breakdown",
}


async def test_fetch_refund_names_the_transaction_by_its_id_and_create_refund_embeds_it(
    paystack: SimulatorUnderTest,
) -> None:
    started = await paystack.paid(amount=500_000)
    transaction_id = (await paystack.verify(started["reference"]))["id"]
    created = (await paystack.api.post("/refund", json={"transaction": started["reference"]})).json()["data"]
    assert set(created) == CREATED_REFUND_FIELDS
    assert set(created["transaction"]) == REFUNDED_TRANSACTION_FIELDS
    assert (created["transaction"]["id"], created["transaction"]["reference"]) == (transaction_id, started["reference"])
    assert (created["deducted_amount"], created["fully_deducted"], created["channel"]) == (0, False, None)
    assert created["refunded_by"] == "owner@gofund.test"
    assert created["merchant_note"] == f"Refund for transaction {started['reference']} by owner@gofund.test"
    assert created["customer_note"] == f"Refund for transaction {started['reference']}"

    response = await paystack.api.get(f"/refund/{created['id']}")
    assert response.json()["message"] == "Refund retrieved"
    fetched = response.json()["data"]
    assert set(fetched) == FETCHED_REFUND_FIELDS
    assert (fetched["transaction"], fetched["dispute"], fetched["settlement"]) == (transaction_id, None, None)
    assert (fetched["status"], fetched["refunded_at"], fetched["deducted_amount"]) == ("pending", None, 0)
    assert {k: fetched[k] for k in CREATED_REFUND_FIELDS - {"transaction"}} == {
        k: created[k] for k in CREATED_REFUND_FIELDS - {"transaction"}
    }

    await paystack.browser.post(f"/_sim/refunds/{created['id']}/settle", json={"outcome": "success"})
    settled = (await paystack.api.get(f"/refund/{created['id']}")).json()["data"]
    assert (settled["status"], settled["deducted_amount"], settled["fully_deducted"]) == ("processed", 500_000, True)
    assert settled["refunded_at"] is not None
    assert settled["channel"] is not None

    for missing in ("999999999", "not-a-number", started["reference"]):
        response = await paystack.api.get(f"/refund/{missing}")
        assert response.status_code == 404, missing
        assert response.json()["status"] is False


async def test_verify_transfer_prints_paystacks_verify_transfer_and_webhooks_keep_theirs(
    paystack: SimulatorUnderTest, receiver: WebhookReceiver
) -> None:
    recipient = await paystack.recipient()
    transfer = await paystack.transfer(recipient["recipient_code"], amount=100_000)
    await paystack.browser.post(f"/_sim/transfers/{transfer['transfer_code']}/settle", json={"outcome": "success"})

    response = await paystack.api.get(f"/transfer/verify/{transfer['reference']}")
    assert response.json()["message"] == "Transfer retrieved"
    verified = response.json()["data"]
    assert set(verified) == VERIFIED_TRANSFER_FIELDS
    assert set(verified["recipient"]) == VERIFIED_RECIPIENT_FIELDS
    assert isinstance(verified["integration"], int)
    assert (verified["status"], verified["amount"], verified["transfer_code"]) == (
        "success",
        100_000,
        transfer["transfer_code"],
    )
    assert (verified["request"], verified["fee_charged"], verified["fees_breakdown"]) == (transfer["id"], 1_000, None)
    assert (verified["recipient"]["id"], verified["recipient"]["isDeleted"]) == (recipient["id"], False)
    assert verified["recipient"]["createdAt"] == recipient["createdAt"]
    assert verified["session"]["id"] is not None

    [delivery] = await receiver.wait_for_event("transfer.success", transfer["reference"])
    event = delivery.payload["data"]
    assert set(event["integration"]) == {"id", "is_live", "business_name"}
    assert {"created_at", "updated_at"} <= set(event)
    assert "createdAt" not in event
    assert "created_at" in event["recipient"]

    for unknown in (new_reference("payout_"), transfer["transfer_code"]):
        missing = await paystack.api.get(f"/transfer/verify/{unknown}")
        assert missing.status_code == 404
        assert refusal(missing) == "Transfer not found"


# Refunds issued on Paystack's dashboard (/_sim/refunds).


async def test_a_dashboard_refund_settles_like_any_other_and_can_be_partial(
    launch: Launch, receiver: WebhookReceiver
) -> None:
    paystack = await launch(paystack_sim_settle_ms=50)
    started = await paystack.paid(amount=500_000)
    reference = started["reference"]

    partial = await paystack.browser.post("/_sim/refunds", json={"transaction": reference, "amount": 200_000})
    assert partial.status_code == 200, partial.text
    assert partial.json()["message"] == "Refund has been queued for processing"
    assert (partial.json()["data"]["status"], partial.json()["data"]["amount"]) == ("pending", 200_000)
    [processed] = await receiver.wait_for_event("refund.processed", reference)
    assert (processed.payload["data"]["amount"], processed.payload["data"]["status"]) == ("200000", "processed")
    assert (await paystack.verify(reference))["status"] == "success"

    transaction_id = (await paystack.verify(reference))["id"]
    rest = await paystack.browser.post("/_sim/refunds", json={"transaction": transaction_id})
    assert rest.json()["data"]["amount"] == 300_000
    await receiver.wait_for_event("refund.processed", reference, count=2)
    assert (await paystack.verify(reference))["status"] == "reversed"
    listed = await paystack.listed("/refund", transaction=reference)
    assert [r["amount"] for r in listed["data"]] == [300_000, 200_000]

    again = await paystack.browser.post("/_sim/refunds", json={"transaction": reference})
    assert again.status_code == 400
    assert again.json()["message"] == "Transaction has been fully reversed"


async def test_a_dashboard_refund_can_be_settled_by_hand_and_refuses_what_paystack_refuses(
    paystack: SimulatorUnderTest, receiver: WebhookReceiver
) -> None:
    started = await paystack.paid(amount=500_000)
    created = await paystack.browser.post("/_sim/refunds", json={"transaction": started["reference"]})
    refund_id = created.json()["data"]["id"]
    settled = await paystack.browser.post(f"/_sim/refunds/{refund_id}/settle", json={"outcome": "failed"})
    assert settled.json()["data"]["status"] == "failed"
    await receiver.wait_for_event("refund.failed", started["reference"])

    for body, message in (
        ({"transaction": "no-such-reference"}, "Transaction not found"),
        ({"transaction": started["reference"], "amount": 0}, "Invalid Amount Sent"),
        ({}, None),
    ):
        response = await paystack.browser.post("/_sim/refunds", json=body)
        assert response.status_code == 400, body
        if message is not None:
            assert refusal(response) == message
