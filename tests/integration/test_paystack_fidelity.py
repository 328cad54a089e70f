"""The simulator's answers against Paystack's own published samples, key by key and type by type.

Each file in tests/fixtures/paystack/ is one published sample (its README names them all). Each case
below makes the simulator answer the same call, creating what it needs through the simulator's API and
its checkout and /_sim controls, and lists every path where the simulator's JSON lacks a key the sample
has or holds another JSON type there, plus a different HTTP status. A `null` in the sample matches
anything; every item of a list is compared with the sample's first item.
"""

from __future__ import annotations

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
from services.paystack_sim.main import start

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "paystack"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return {str: "str", list: "list", dict: "dict"}[type(value)]


def divergences(sample: Any, actual: Any, path: str = "$") -> list[str]:
    """Every path where `actual` lacks a key of `sample` or holds another JSON type."""
    if sample is None:
        return []
    if _kind(sample) != _kind(actual):
        return [f"{path}: {_kind(sample)} in the sample, {_kind(actual)} here"]
    found: list[str] = []
    if isinstance(sample, dict):
        for key, value in sample.items():
            found += (
                [f"{path}.{key}: missing"] if key not in actual else divergences(value, actual[key], f"{path}.{key}")
            )
    elif isinstance(sample, list) and sample:
        if not actual:
            return [f"{path}: empty, the sample has items"]
        found = [d for item in actual for d in divergences(sample[0], item, f"{path}[*]")]
    return list(dict.fromkeys(found))


def new_reference() -> str:
    return "gofund-" + uuid.uuid4().hex[:16]


class Sim:
    """The simulator's API with the secret key, with a wrong one, and its keyless checkout and /_sim controls."""

    def __init__(self, base_url: str, secret_key: str) -> None:
        self.api = httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {secret_key}"})
        self.wrong_key = httpx.AsyncClient(base_url=base_url, headers={"Authorization": "Bearer sk_test_wrong"})
        self.browser = httpx.AsyncClient(base_url=base_url)

    async def close(self) -> None:
        for client in (self.api, self.wrong_key, self.browser):
            await client.aclose()

    async def data(self, response: Awaitable[httpx.Response]) -> dict[str, Any]:
        answered = await response
        assert answered.status_code == 200, answered.text
        data: dict[str, Any] = answered.json()["data"]
        return data

    def initialize(self, **fields: Any) -> Awaitable[httpx.Response]:
        body = {"email": "ada@example.com", "amount": 500_000, "currency": "NGN", "reference": new_reference()}
        return self.api.post("/transaction/initialize", json={**body, **fields})

    async def paid(self) -> dict[str, Any]:
        """A transaction initialized and paid at the checkout, as verify prints it."""
        started = await self.data(self.initialize())
        await self.data(self.browser.post(f"/checkout/{started['access_code']}/pay", json={"outcome": "success"}))
        return await self.data(self.api.get(f"/transaction/verify/{started['reference']}"))

    async def processed_refund(self) -> dict[str, Any]:
        refund = await self.data(self.api.post("/refund", json={"transaction": (await self.paid())["reference"]}))
        return await self.data(self.browser.post(f"/_sim/refunds/{refund['id']}/settle", json={"outcome": "success"}))

    def recipient(self) -> Awaitable[httpx.Response]:
        body = {"type": "nuban", "name": "Ada Obi", "account_number": "0123456789", "bank_code": "058"}
        return self.api.post("/transferrecipient", json=body)

    async def transfer(self, recipient: str | None = None) -> httpx.Response:
        code = recipient or (await self.data(self.recipient()))["recipient_code"]
        body = {"source": "balance", "amount": 300_000, "recipient": code, "reason": "Goal payout"}
        return await self.api.post("/transfer", json={**body, "reference": new_reference()})

    async def successful_transfer(self) -> dict[str, Any]:
        transfer = await self.data(self.transfer())
        await self.data(self.browser.post(f"/_sim/transfers/{transfer['transfer_code']}/settle", json={}))
        return transfer


async def _verify(s: Sim) -> httpx.Response:
    return await s.api.get(f"/transaction/verify/{(await s.paid())['reference']}")


async def _fetch_transaction(s: Sim) -> httpx.Response:
    return await s.api.get(f"/transaction/{(await s.paid())['id']}")


async def _list_transactions(s: Sim) -> httpx.Response:
    await s.paid()
    return await s.api.get("/transaction")


async def _create_refund(s: Sim) -> httpx.Response:
    return await s.api.post("/refund", json={"transaction": (await s.paid())["reference"]})


async def _fetch_refund(s: Sim) -> httpx.Response:
    return await s.api.get(f"/refund/{(await s.processed_refund())['id']}")


async def _list_refunds(s: Sim) -> httpx.Response:
    await s.processed_refund()
    return await s.api.get("/refund")


async def _verify_transfer(s: Sim) -> httpx.Response:
    return await s.api.get(f"/transfer/verify/{(await s.successful_transfer())['reference']}")


async def _list_transfers(s: Sim) -> httpx.Response:
    await s.successful_transfer()
    return await s.api.get("/transfer")


async def _duplicate_reference(s: Sim) -> httpx.Response:
    reference = new_reference()
    await s.data(s.initialize(reference=reference))
    return await s.initialize(reference=reference)


# Where another Paystack source for the same route disagrees with the sample, the simulator may follow it:
# these divergences are accepted, each with its source.
# PaystackOSS/openapi src/assets/openapi/components/responses/Unauthorized.yaml (and Paystack's status table).
_BAD_KEY_IS_401 = ("HTTP 401, not 400",)
# PaystackOSS/openapi dist/paystack.yaml TransactionListResponse(Array): offset `meta` only
# (additionalProperties: false), customer.metadata nullable.
_TRANSACTION_LIST = (
    "$.data[*].customer.metadata: dict in the sample, null here",
    "$.meta.next: missing",
    "$.meta.previous: missing",
)
# PaystackOSS/openapi dist/paystack.yaml RefundListResponseArray: dispute nullable.
_REFUND_LIST = ("$.data[*].dispute: number in the sample, null here",)
# The fetch sample's customer has metadata of its own (custom fields a checkout collected); ours have none.
_TRANSACTION_FETCH = ("$.data.customer.metadata.custom_fields: missing",)


@dataclass(frozen=True)
class Case:
    fixture: str
    call: Callable[[Sim], Awaitable[httpx.Response]]
    accepted: tuple[str, ...] = ()


CASES = [
    Case("transaction_initialize", lambda s: s.initialize()),
    Case("transaction_verify", _verify),
    Case("transaction_fetch", _fetch_transaction, _TRANSACTION_FETCH),
    Case("transaction_list", _list_transactions, _TRANSACTION_LIST),
    Case("refund_create", _create_refund),
    Case("refund_fetch", _fetch_refund),
    Case("refund_list", _list_refunds, _REFUND_LIST),
    Case("transferrecipient_create", Sim.recipient),
    Case("transfer_initiate", Sim.transfer),
    Case("transfer_verify", _verify_transfer),
    Case("transfer_list", _list_transfers),
    # The sample is a page of five with more to come.
    Case("bank_list", lambda s: s.api.get("/bank", params={"perPage": "5"})),
    Case(
        "bank_list_za_verification",
        lambda s: s.api.get("/bank", params={"currency": "ZAR", "enabled_for_verification": "true"}),
    ),
    Case(
        "bank_resolve",
        lambda s: s.api.get("/bank/resolve", params={"account_number": "0022728151", "bank_code": "063"}),
    ),
    Case(
        "bank_resolve_guide",
        lambda s: s.api.get("/bank/resolve", params={"account_number": "0001234567", "bank_code": "058"}),
    ),
    Case("error_transaction_verify_invalid_key", lambda s: s.wrong_key.get("/transaction/verify/x"), _BAD_KEY_IS_401),
    Case("error_transaction_fetch_invalid_key", lambda s: s.wrong_key.get("/transaction/1"), _BAD_KEY_IS_401),
    Case("error_unauthorized", lambda s: s.wrong_key.get("/transaction/verify/x")),
    Case("error_not_found", lambda s: s.api.get("/transaction/999999999")),
    Case("error_transaction_initialize_duplicate_reference", _duplicate_reference),
    Case("error_sample_missing_params", lambda s: s.initialize(email="")),
    Case("error_transfer_initiate_invalid_recipient", lambda s: s.transfer("RCP_doesnotexist")),
    Case("error_transfer_verify_not_found", lambda s: s.api.get("/transfer/verify/unknown-reference")),
]


@pytest_asyncio.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    receiver = web.AppRunner(web.Application(), access_log=None)  # webhooks land here and get a 404
    await receiver.setup()
    site = web.TCPSite(receiver, "127.0.0.1", 0)
    await site.start()
    settings = Settings(
        data_dir=tmp_path,
        webhook_url=f"http://127.0.0.1:{receiver.addresses[0][1]}/webhooks/paystack",
        paystack_sim_retry_base_ms=60_000,
        paystack_sim_settle_ms=0,
    )
    simulator = await start(settings, port=0)
    under_test = Sim(simulator.base_url, settings.paystack_secret_key)
    yield under_test
    await under_test.close()
    await simulator.stop()
    await receiver.cleanup()


@pytest.mark.asyncio
@pytest.mark.parametrize("case", CASES, ids=[case.fixture for case in CASES])
async def test_the_simulator_answers_with_paystacks_published_shape(sim: Sim, case: Case) -> None:
    fixture = json.loads((FIXTURES / f"{case.fixture}.json").read_text())
    response = await case.call(sim)
    status = response.status_code
    found = [] if status == fixture["http_status"] else [f"HTTP {status}, not {fixture['http_status']}"]
    try:
        answer = response.json()
    except ValueError:
        found.append(f"$: not JSON: {response.text[:80]!r}")
    else:
        found += divergences(fixture["response"], answer)
    found = [line for line in found if line not in case.accepted]
    assert not found, f"{fixture['route']} vs {fixture['source']}:\n" + "\n".join(found)


def test_divergences_reports_missing_keys_other_types_and_list_items_but_not_samples_nulls() -> None:
    sample = {"a": 1, "b": None, "c": [{"d": "x"}], "e": {"f": True}, "g": []}
    assert divergences(sample, {"a": 2, "b": "any", "c": [{"d": "y"}], "e": {"f": False, "z": 0}, "g": [1]}) == []
    assert divergences(sample, {"a": "1", "c": [{"d": 1}, {}], "e": {"f": 1}, "g": {}}) == [
        "$.a: number in the sample, str here",
        "$.b: missing",
        "$.c[*].d: str in the sample, number here",
        "$.c[*].d: missing",
        "$.e.f: bool in the sample, number here",
        "$.g: list in the sample, dict here",
    ]
