"""The shared runtime over real gRPC: error mapping, request ids, deadlines, health, shutdown.

A probe servicer implements one ledger RPC (GetTransaction) whose behaviour is
chosen by the transaction id, and can call itself through the shared client
channels, so both sides of the interceptors are exercised on a real server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import context
from services.common.clients import Channels
from services.common.config import Settings, StartupError
from services.common.errors import (
    DomainError,
    ErrorMapping,
    ErrorTable,
    FieldViolation,
    ValidationFailed,
    error_info,
)
from services.common.server import Service, ServiceRunner
from tests.helpers import eventually

pytestmark = pytest.mark.asyncio

LEDGER_INTERNAL = ledger_service_pb2.DESCRIPTOR.services_by_name["LedgerInternalService"]


class ProbeRefused(DomainError):
    pass


ERRORS = ErrorTable(
    domain="probe.gofund",
    entries={ProbeRefused: ErrorMapping(grpc.StatusCode.FAILED_PRECONDITION, "PROBE_REFUSED")},
)


class ProbeServicer(ledger_service_pb2_grpc.LedgerInternalServiceServicer):
    def __init__(self, channels: Channels, target: list[str]) -> None:
        self.channels = channels
        self.target = target
        self.calls: list[str] = []
        # Calls whose handler has returned (or raised): nothing they do can happen after this.
        self.finished: list[str] = []

    def stub(self) -> ledger_service_pb2_grpc.LedgerInternalServiceStub:
        return ledger_service_pb2_grpc.LedgerInternalServiceStub(self.channels.get(self.target[0], [LEDGER_INTERNAL]))

    async def GetTransaction(self, request: Any, context_: grpc.aio.ServicerContext) -> Any:
        try:
            return await self._answer(request, context_)
        finally:
            self.finished.append(request.transaction_id)

    async def _answer(self, request: Any, context_: grpc.aio.ServicerContext) -> Any:
        self.calls.append(request.transaction_id)
        kind = request.transaction_id
        if kind == "refused":
            raise ProbeRefused("the probe refuses", metadata={"why": "asked to"})
        if kind == "invalid":
            raise ValidationFailed([FieldViolation("transaction_id", "is invalid", "INVALID_TRANSACTION_ID")])
        if kind == "crash":
            raise RuntimeError("internal detail that must not leak")
        if kind == "report":
            metadata = dict(context_.invocation_metadata())
            remaining = context_.time_remaining()
            return reply(f"{metadata.get('x-request-id', '')}|{remaining}|{context.request_id.get()}")
        if kind == "forward":
            return await self.stub().GetTransaction(ledger_service_pb2.GetTransactionRequest(transaction_id="report"))
        if kind == "slow-forward":
            await asyncio.sleep(0.3)
            return await self.stub().GetTransaction(ledger_service_pb2.GetTransactionRequest(transaction_id="report"))
        return reply(kind)

    async def WatchBalances(self, request: Any, context_: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """A stream that never ends on its own (as every watch stream)."""
        try:
            yield ledger_service_pb2.WatchBalancesResponse()
            await asyncio.Event().wait()
        finally:
            self.finished.append("stream")


def reply(text: str) -> ledger_service_pb2.GetTransactionResponse:
    return ledger_service_pb2.GetTransactionResponse(transaction=ledger_pb2.Transaction(id=text))


@pytest_asyncio.fixture
async def probe(tmp_path: Path) -> AsyncIterator[tuple[ProbeServicer, int, ServiceRunner]]:
    settings = Settings(data_dir=tmp_path, call_timeout_ms=2000, deadline_margin_ms=50, shutdown_drain_ms=300)  # type: ignore[call-arg]
    target: list[str] = []
    holder: dict[str, ProbeServicer] = {}

    async def build(settings: Settings, stack: AsyncExitStack) -> Service:
        channels = Channels("probe-token", default_timeout_ms=settings.call_timeout_ms, deadline_margin_ms=50)
        stack.push_async_callback(channels.close)
        holder["servicer"] = servicer = ProbeServicer(channels, target)
        return Service(
            name="probe",
            errors=ERRORS,
            servicers=[(ledger_service_pb2_grpc.add_LedgerInternalServiceServicer_to_server, servicer)],
            descriptors=[LEDGER_INTERNAL],
        )

    runner = ServiceRunner(build, settings, port=0)
    port = await runner.start()
    target.append(f"127.0.0.1:{port}")
    yield holder["servicer"], port, runner
    await runner.stop()


async def call(port: int, transaction_id: str, **kwargs: Any) -> ledger_service_pb2.GetTransactionResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)
        return await stub.GetTransaction(
            ledger_service_pb2.GetTransactionRequest(transaction_id=transaction_id), **kwargs
        )


async def failing_call(port: int, transaction_id: str, **kwargs: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(port, transaction_id, **kwargs)
    return raised.value


async def test_domain_error_is_answered_with_its_code_reason_and_domain(probe: Any) -> None:
    _, port, _ = probe
    error = await failing_call(port, "refused")
    info = error_info(error)
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "the probe refuses"
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "PROBE_REFUSED",
        "probe.gofund",
        {"why": "asked to"},
    )


async def test_validation_error_carries_field_violations(probe: Any) -> None:
    _, port, _ = probe
    error = await failing_call(port, "invalid")
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = dict(error.trailing_metadata())["grpc-status-details-bin"]
    bad_request = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(details).details[1].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "transaction_id"
    assert error_info(error).reason == "INVALID_TRANSACTION_ID"  # type: ignore[union-attr]


async def test_unexpected_exception_is_internal_logged_and_not_leaked(
    probe: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, port, _ = probe
    with caplog.at_level(logging.ERROR, logger="gofund.rpc"):
        error = await failing_call(port, "crash", metadata=(("x-request-id", "req-crash-1"),))
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "internal detail" not in (error.details() or "")
    assert error_info(error).reason == "INTERNAL"  # type: ignore[union-attr]
    logged = [r for r in caplog.records if r.message == "unhandled error"]
    assert logged
    assert logged[0].exc_info is not None


async def test_rpc_not_built_yet_answers_unimplemented(probe: Any) -> None:
    _, port, _ = probe
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Reconcile(ledger_service_pb2.ReconcileRequest())
    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert error_info(raised.value).reason == "NOT_IMPLEMENTED"  # type: ignore[union-attr]


async def test_request_id_is_kept_from_the_caller_and_propagated_downstream(probe: Any) -> None:
    _, port, _ = probe
    response = await call(port, "forward", metadata=(("x-request-id", "req-42"),), timeout=5)
    received, _, seen_in_context = response.transaction.id.split("|")
    assert received == "req-42"
    assert seen_in_context == "req-42"


async def test_request_id_is_generated_when_the_caller_sends_none(probe: Any) -> None:
    _, port, _ = probe
    response = await call(port, "report")
    _, _, generated = response.transaction.id.split("|")
    assert len(generated) == 32


async def test_outgoing_call_deadline_is_capped_by_the_incoming_one(probe: Any) -> None:
    _, port, _ = probe
    response = await call(port, "forward", timeout=1.0)
    remaining = float(response.transaction.id.split("|")[1])
    # Incoming 1 s, minus the 50 ms margin, minus time in flight: below the incoming
    # second, far below the 2 s budget of its own. (Not `<= 0.95`: the grpc-timeout
    # header's encoding rounds the deadline the server sees up a little; a clean-clone
    # run saw 0.957.)
    assert 0 < remaining < 1.0


async def test_outgoing_call_without_incoming_deadline_gets_its_own_budget(probe: Any) -> None:
    _, port, _ = probe
    response = await call(port, "forward")
    remaining = float(response.transaction.id.split("|")[1])
    # GOFUND_CALL_TIMEOUT_MS=2000 in this fixture; grpc-timeout encoding may round up a little.
    assert 1.0 < remaining <= 2.05


async def test_spent_budget_fails_fast_without_calling_downstream(probe: Any) -> None:
    servicer, port, _ = probe
    # The handler sleeps 0.3 s of a 0.32 s deadline: what is left is under the margin.
    error = await failing_call(port, "slow-forward", timeout=0.32)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    # The caller's deadline passes before the handler is done with its budget check.
    await eventually(lambda: asyncio.sleep(0, "slow-forward" in servicer.finished), what="the handler to return")
    assert "report" not in servicer.calls


async def test_health_is_serving_then_not_serving_while_draining(probe: Any) -> None:
    _, port, runner = probe
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", LEDGER_INTERNAL.full_name):
            response = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(runner.stop())

        async def not_serving() -> bool:
            response = await health.Check(health_pb2.HealthCheckRequest(service=""))
            return bool(response.status == health_pb2.HealthCheckResponse.NOT_SERVING)

        # Asked within the 300 ms drain window, while the server still answers.
        await eventually(not_serving, what="health to say NOT_SERVING", interval_s=0.01)
        await stopping


async def test_in_flight_call_finishes_during_graceful_stop(probe: Any) -> None:
    servicer, port, runner = probe
    # The in-flight call's downstream is another server: the draining one is
    # NOT_SERVING, and health-checked channels send it nothing new.
    downstream = grpc.aio.server()
    ledger_service_pb2_grpc.add_LedgerInternalServiceServicer_to_server(
        ProbeServicer(servicer.channels, servicer.target), downstream
    )
    servicer.target[0] = f"127.0.0.1:{downstream.add_insecure_port('127.0.0.1:0')}"
    await downstream.start()
    try:
        in_flight = asyncio.create_task(call(port, "slow-forward", timeout=5))
        await eventually(lambda: asyncio.sleep(0, "slow-forward" in servicer.calls), what="the call to be in flight")
        await runner.stop()
        response = await in_flight
    finally:
        await downstream.stop(0)
    received, remaining, _ = response.transaction.id.split("|")
    assert received  # the downstream call went through while the server drained
    assert float(remaining) > 0


async def test_a_stopping_server_ends_its_open_streams_with_unavailable_at_once(probe: Any) -> None:
    servicer, port, runner = probe
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = ledger_service_pb2_grpc.LedgerInternalServiceStub(channel).WatchBalances(
            ledger_service_pb2.WatchBalancesRequest()
        )
        await stream.read()  # open, and the handler is waiting for changes
        stopping = asyncio.create_task(runner.stop())
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await stream.read()
        await stopping
    # Told, not cut off when the grace ran out (that would be CANCELLED, with no reason):
    # the client knows to reconnect elsewhere, and the handler's clean-up ran.
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
    info = error_info(ended.value)
    assert info is not None
    assert info.reason == "SHUTTING_DOWN"
    assert "stream" in servicer.finished


async def test_port_in_use_is_a_startup_error(probe: Any, tmp_path: Path) -> None:
    _, port, _ = probe

    async def build(settings: Settings, stack: AsyncExitStack) -> Service:
        return Service(name="second", errors=ERRORS, servicers=[], descriptors=[])

    second = ServiceRunner(build, Settings(data_dir=tmp_path), port=port)  # type: ignore[call-arg]
    with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
        await second.start()
