"""Deadline budgets of checkout creation: a lease never outlives the call that took it,
a retry answers within its own deadline, and a store's restart stalls nothing.

A payments process under test talks to Paystack through `GatedPaystack`, which
holds `POST /transaction/initialize` until the test lets it through (a slow
Paystack, made deterministic), then passes it to the simulator.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from gofund.payments.v1 import payments_service_pb2, payments_service_pb2_grpc

from services.common.server import ServiceRunner
from services.payments import main as payments_main
from services.stack import embedded
from tests.conftest import service_channel, unique_name
from tests.helpers import reason, rejected
from tests.integration.fixtures.goals import Platform

pytestmark = pytest.mark.asyncio


class GatedPaystack:
    """Paystack in front of the simulator, with initialize held at a gate."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self._client = httpx.AsyncClient(base_url=upstream, timeout=30)
        self._runner: web.AppRunner | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.arrived = asyncio.Event()
        self.initializes = 0
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _forward(self, request: web.Request) -> web.Response:
        if request.path == "/transaction/initialize":
            self.initializes += 1
            self.arrived.set()
            await self.gate.wait()
        answer = await self._client.request(
            request.method,
            request.path_qs,
            content=await request.read(),
            headers={k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")},
        )
        return web.Response(body=answer.content, status=answer.status_code, content_type="application/json")

    def hold(self) -> None:
        self.gate.clear()
        self.arrived.clear()

    async def stop(self) -> None:
        self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
        await self._client.aclose()


class PaymentsProcess:
    def __init__(self, runner: ServiceRunner, port: int) -> None:
        self.runner = runner
        self.channel = service_channel(f"127.0.0.1:{port}")
        self.internal = payments_service_pb2_grpc.PaymentsInternalServiceStub(self.channel)

    async def stop(self) -> None:
        await self.channel.close()
        await self.runner.stop()


async def start_payments(platform: Platform, **overrides: object) -> PaymentsProcess:
    runner = ServiceRunner(payments_main.build, platform.settings.model_copy(update=overrides), port=0)
    port = await runner.start()
    return PaymentsProcess(runner, port)


@pytest_asyncio.fixture
async def gated(paying_platform: Platform) -> AsyncIterator[tuple[GatedPaystack, PaymentsProcess]]:
    assert paying_platform.simulator is not None
    paystack = GatedPaystack(paying_platform.simulator.base_url)
    await paystack.start()
    payments = await start_payments(paying_platform, paystack_base_url=paystack.url)
    yield paystack, payments
    await payments.stop()
    await paystack.stop()


def initialize(payer_id: str, contribution_id: str) -> Any:
    return payments_service_pb2.InitializePaymentRequest(
        idempotency_key=f"contribution:{contribution_id}",
        user_id=payer_id,
        goal_id=str(uuid.uuid4()),
        contribution_id=contribution_id,
        amount=2500,
        currency="NGN",
    )


async def transactions_at_paystack(platform: Platform, reference_prefix: str) -> list[dict[str, Any]]:
    assert platform.simulator is not None
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{platform.simulator.base_url}/transaction",
            params={"perPage": "100"},
            headers={"authorization": f"Bearer {platform.settings.paystack_secret_key}"},
        )
    return [t for t in response.json()["data"] if str(t["reference"]).startswith(reference_prefix)]


async def test_a_retry_while_another_call_holds_the_lease_answers_within_its_deadline(
    paying_platform: Platform, gated: tuple[GatedPaystack, PaymentsProcess]
) -> None:
    paystack, payments = gated
    payer = await paying_platform.user()
    request = initialize(payer.id, str(uuid.uuid4()))
    paystack.hold()
    first = asyncio.ensure_future(payments.internal.InitializePayment(request, timeout=6))
    async with asyncio.timeout(10):
        await paystack.arrived.wait()
    # The second call cannot get the lease; it answers by itself before its deadline
    # (UNAVAILABLE with a reason, not its deadline passing) so its caller can retry.
    waiting = await rejected(payments.internal.InitializePayment(request, timeout=1.5))
    assert (waiting.code(), reason(waiting)) == (
        grpc.StatusCode.UNAVAILABLE,
        "PAYSTACK_CALL_IN_PROGRESS",
    )
    paystack.gate.set()
    answered = await first
    retry = await payments.internal.InitializePayment(request, timeout=6)
    assert retry.authorization_url == answered.authorization_url
    assert paystack.initializes == 1
    reference = answered.payment.reference
    assert [t["reference"] for t in await transactions_at_paystack(paying_platform, reference)] == [reference]


async def test_a_call_cut_off_mid_initialize_still_leaves_its_checkout_for_the_retry(
    paying_platform: Platform, gated: tuple[GatedPaystack, PaymentsProcess]
) -> None:
    paystack, payments = gated
    payer = await paying_platform.user()
    request = initialize(payer.id, str(uuid.uuid4()))
    paystack.hold()
    call = payments.internal.InitializePayment(request, timeout=6)
    async with asyncio.timeout(10):
        await paystack.arrived.wait()
    call.cancel()  # the caller went away while Paystack was being asked
    paystack.gate.set()
    retry = await payments.internal.InitializePayment(request, timeout=6)
    # The first call's answer was stored: the retry gets it, and Paystack was asked once, under one reference.
    assert paystack.initializes == 1
    assert retry.payment.reference.count("-") == 1  # gf-<hex>, no "-1" of a second attempt
    assert len(await transactions_at_paystack(paying_platform, retry.payment.reference)) == 1


async def test_after_the_mongo_wire_server_restarts_under_a_cut_off_call_the_next_checkout_comes_at_once(
    paying_platform: Platform, tmp_path: Path
) -> None:
    assert paying_platform.simulator is not None
    port = embedded.free_port()
    store = embedded.mongo_wire(tmp_path / "mongodb", port, tmp_path / "mongodb.log")
    await asyncio.to_thread(store.start)
    paystack = GatedPaystack(paying_platform.simulator.base_url)
    await paystack.start()
    payments = await start_payments(
        paying_platform, paystack_base_url=paystack.url, mongodb_port=port, mongodb_database=unique_name("payments")
    )
    try:
        payer = await paying_platform.user()
        request = initialize(payer.id, str(uuid.uuid4()))
        # A call takes the checkout lease and waits on a slow Paystack; it is cut off at
        # its deadline while the store restarts under it.
        paystack.hold()
        cut_off = asyncio.ensure_future(payments.internal.InitializePayment(request, timeout=2))
        async with asyncio.timeout(10):
            await paystack.arrived.wait()
        await asyncio.to_thread(store.stop)
        await asyncio.to_thread(store.start)
        assert (await rejected(cut_off)).code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        paystack.gate.set()
        # The caller retries what it is told to retry, each call with a 5 s deadline.
        failures: list[grpc.StatusCode] = []
        answer = None
        while answer is None and len(failures) < 5:
            try:
                answer = await payments.internal.InitializePayment(request, timeout=5)
            except grpc.aio.AioRpcError as exc:
                failures.append(exc.code())
        # The cut-off call's lease ended with its deadline: no retry waits it out.
        assert set(failures) <= {grpc.StatusCode.UNAVAILABLE}, failures
        assert len(failures) <= 1, failures
        assert answer is not None
        assert answer.authorization_url
    finally:
        await payments.stop()
        await paystack.stop()
        await asyncio.to_thread(store.stop)
