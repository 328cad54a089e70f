"""Prometheus metrics over real servers: RPC counts by code, latencies, open
streams, the payments webhook backlog, and the metrics port's rules."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from gofund.ledger.v1 import ledger_service_pb2, ledger_service_pb2_grpc
from gofund.payments.v1 import payments_service_pb2, payments_service_pb2_grpc
from google.api import httpbody_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from services.common.config import Settings, StartupError
from services.common.errors import ErrorTable
from services.common.server import Service, ServiceRunner
from services.payments import main as payments_main
from services.payments.domain import sign
from services.stack import embedded
from tests.conftest import settings_with, unique_name
from tests.helpers import eventually
from tests.integration.fixtures.ledger import LedgerUnderTest, open_account

pytestmark = pytest.mark.asyncio

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

LEDGER_PUBLIC = "/gofund.ledger.v1.LedgerService/"
LEDGER_INTERNAL = "/gofund.ledger.v1.LedgerInternalService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_OK = {"method": HEALTH_CHECK, "code": "OK"}
WATCH_BALANCE = LEDGER_PUBLIC + "WatchBalance"
PROBE_ERRORS = ErrorTable(domain="probe.gofund", entries={})


async def scrape(runner: ServiceRunner) -> Samples:
    return await scrape_port(runner.metrics_port)


async def scrape_port(port: int) -> Samples:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape_until(runner: ServiceRunner, done: Callable[[Samples], bool], timeout_s: float = 15.0) -> Samples:
    """Scrape until `done` holds: gauges refreshed in the background move on their own time."""

    async def scraped() -> Samples | None:
        samples = await scrape(runner)
        return samples if done(samples) else None

    found: Samples = await eventually(scraped, timeout_s, "the metrics to show it", interval_s=0.05)
    return found


# -- the ledger: unary calls, health checks, balance watchers ---------------------------------


async def test_unary_calls_are_counted_by_final_code_and_timed(ledger: LedgerUnderTest) -> None:
    open_method, get_method = LEDGER_INTERNAL + "OpenAccount", LEDGER_PUBLIC + "GetAccount"
    before = await scrape(ledger.runner)
    await open_account(ledger.internal, "USER")
    await open_account(ledger.internal, "USER")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ledger.public.GetAccount(ledger_service_pb2.GetAccountRequest(account_id="not-a-uuid"))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    after = await scrape(ledger.runner)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, service="ledger", **labels) - value(before, name, service="ledger", **labels)

    assert moved("gofund_rpc_requests_total", method=open_method, code="OK") == 2
    assert moved("gofund_rpc_requests_total", method=get_method, code="INVALID_ARGUMENT") == 1
    assert moved("gofund_rpc_requests_total", method=get_method, code="OK") == 0
    assert moved("gofund_rpc_duration_seconds_count", method=open_method) == 2
    assert moved("gofund_rpc_duration_seconds_bucket", method=open_method, le="+Inf") == 2
    assert moved("gofund_rpc_duration_seconds_bucket", method=open_method, le="10.0") == 2
    assert moved("gofund_rpc_duration_seconds_sum", method=open_method) > 0
    assert moved("gofund_rpc_duration_seconds_count", method=get_method) == 1


async def test_health_checks_are_counted_but_not_timed(ledger: LedgerUnderTest) -> None:
    before = await scrape(ledger.runner)
    health = health_pb2_grpc.HealthStub(ledger.channel)
    await health.Check(health_pb2.HealthCheckRequest(service=""))
    after = await scrape(ledger.runner)
    counted = {"service": "ledger", "method": HEALTH_CHECK, "code": "OK"}
    assert (
        value(after, "gofund_rpc_requests_total", **counted)
        == value(before, "gofund_rpc_requests_total", **counted) + 1
    )
    timed = {"service": "ledger", "method": HEALTH_CHECK}
    assert value(after, "gofund_rpc_duration_seconds_count", **timed) == 0


async def test_a_balance_watcher_is_in_flight_until_its_client_goes_away(ledger: LedgerUnderTest) -> None:
    labels = {"service": "ledger", "method": WATCH_BALANCE}
    cancelled = {**labels, "code": "CANCELLED"}
    before = await scrape(ledger.runner)
    open_before = value(before, "gofund_rpc_in_flight_streams", **labels)
    account = await open_account(ledger.internal, "GOAL")
    stream = ledger.public.WatchBalance(ledger_service_pb2.WatchBalanceRequest(account_id=account))
    await anext(aiter(stream))  # the current balance: the stream is open on the server
    during = await scrape(ledger.runner)
    assert value(during, "gofund_rpc_in_flight_streams", **labels) == open_before + 1
    stream.cancel()
    after = await scrape_until(
        ledger.runner, lambda s: value(s, "gofund_rpc_in_flight_streams", **labels) == open_before
    )
    assert (
        value(after, "gofund_rpc_requests_total", **cancelled)
        == value(before, "gofund_rpc_requests_total", **cancelled) + 1
    )


# -- a probe server and service processes: a stream abandoned while it writes, the port rules ----


class FloodingServicer(ledger_service_pb2_grpc.LedgerServiceServicer):
    """A stream that always has the next message ready, so it is suspended in a
    write (not in the handler's own await) when its client goes away."""

    async def WatchBalance(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        seq = 0
        while True:
            seq += 1
            yield ledger_service_pb2.WatchBalanceResponse(account_id=request.account_id, seq=seq, balance=seq)


def probe_build(name: str) -> Callable[[Settings, AsyncExitStack], Any]:
    async def build(settings: Settings, stack: AsyncExitStack) -> Service:
        return Service(
            name=name,
            errors=PROBE_ERRORS,
            servicers=[(ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server, FloodingServicer())],
            descriptors=[ledger_service_pb2.DESCRIPTOR.services_by_name["LedgerService"]],
        )

    return build


def service_environment(mongodb_port: int, tmp_path: Path, **variables: str) -> dict[str, str]:
    """The environment of a `gofund serve payments` process on the session's Mongo-wire server."""
    return {
        **os.environ,
        "GOFUND_MONGODB_PORT": str(mongodb_port),
        "GOFUND_MONGODB_DATABASE": unique_name("payments"),
        "GOFUND_DATA_DIR": str(tmp_path),
        **variables,
    }


def probe_settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp_path, **overrides)  # type: ignore[arg-type]


async def test_a_stream_abandoned_in_the_middle_of_writing_leaves_the_gauge(tmp_path: Path) -> None:
    runner = ServiceRunner(probe_build("probe"), probe_settings(tmp_path), port=0)
    port = await runner.start()
    labels = {"service": "probe", "method": WATCH_BALANCE}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = ledger_service_pb2_grpc.LedgerServiceStub(channel).WatchBalance(
                ledger_service_pb2.WatchBalanceRequest(account_id="flood")
            )
            await anext(aiter(stream))
            during = await scrape(runner)
            assert value(during, "gofund_rpc_in_flight_streams", **labels) == 1
            stream.cancel()
        after = await scrape_until(runner, lambda s: value(s, "gofund_rpc_in_flight_streams", **labels) == 0)
        assert value(after, "gofund_rpc_requests_total", code="CANCELLED", **labels) == 1
    finally:
        await runner.stop()


async def check_health(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))


def free_port_pair() -> int:
    """A free port whose +1000 is free too."""
    for _ in range(50):
        port = embedded.free_port()
        if port + 1000 <= 65535 and embedded.port_is_free(port + 1000):
            return port
    raise AssertionError("no free port pair")


async def test_a_service_process_serves_metrics_on_its_grpc_port_plus_1000(mongodb_port: int, tmp_path: Path) -> None:
    port = free_port_pair()
    environment = service_environment(mongodb_port, tmp_path, GOFUND_PAYMENTS_PORT=str(port))
    process = embedded.gofund_service("payments", port, environment, tmp_path / "payments.log")
    await asyncio.to_thread(process.start)  # ready once a health check answers SERVING
    try:
        samples = await scrape_port(port + 1000)
        assert value(samples, "gofund_rpc_requests_total", service="payments", **HEALTH_OK) >= 1
    finally:
        await asyncio.to_thread(process.stop)


async def test_a_service_process_whose_metrics_port_is_taken_exits_with_one_line(
    mongodb_port: int, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        environment = service_environment(
            mongodb_port,
            tmp_path,
            GOFUND_PAYMENTS_PORT=str(embedded.free_port()),
            GOFUND_METRICS_PORT=str(busy),
        )
        finished = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.stack.cli", "serve", "payments"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert finished.returncode == 1
    assert finished.stderr.strip() == (
        f"gofund payments: payments: cannot serve metrics on 127.0.0.1:{busy}: the port is in use or not"
        " available; set GOFUND_METRICS_PORT to move it"
    )


async def test_metrics_port_setting_moves_it_and_it_stops_with_the_service(tmp_path: Path) -> None:
    metrics_port = embedded.free_port()
    runner = ServiceRunner(probe_build("probe"), probe_settings(tmp_path, metrics_port=metrics_port), port=0)
    port = await runner.start()
    assert runner.metrics_port == metrics_port
    await check_health(port)
    assert value(await scrape(runner), "gofund_rpc_requests_total", service="probe", **HEALTH_OK) == 1
    await runner.stop()
    with pytest.raises(httpx.ConnectError):
        await scrape(runner)


async def test_metrics_port_in_use_is_one_startup_error_naming_the_variable(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        runner = ServiceRunner(probe_build("probe"), probe_settings(tmp_path, metrics_port=busy), port=0)
        with pytest.raises(StartupError) as raised:
            await runner.start()
    message = str(raised.value)
    assert f"cannot serve metrics on 127.0.0.1:{busy}" in message
    assert "GOFUND_METRICS_PORT" in message
    assert "\n" not in message


async def test_a_second_copy_of_a_running_service_is_told_its_grpc_port_is_taken(tmp_path: Path) -> None:
    port = free_port_pair()
    first = ServiceRunner(probe_build("probe"), probe_settings(tmp_path), port=port, metrics_port=port + 1000)
    await first.start()
    try:
        second = ServiceRunner(probe_build("probe"), probe_settings(tmp_path), port=port, metrics_port=port + 1000)
        with pytest.raises(StartupError) as raised:
            await second.start()
        assert str(raised.value) == f"probe: cannot listen on 127.0.0.1:{port}: the port is in use or not available"
    finally:
        await first.stop()


async def test_services_in_one_process_keep_their_own_metrics(tmp_path: Path) -> None:
    first = ServiceRunner(probe_build("first"), probe_settings(tmp_path), port=0)
    second = ServiceRunner(probe_build("second"), probe_settings(tmp_path), port=0)
    first_port = await first.start()
    await second.start()
    try:
        await check_health(first_port)
        first_samples, second_samples = await scrape(first), await scrape(second)
        assert value(first_samples, "gofund_rpc_requests_total", service="first", **HEALTH_OK) == 1
        assert value(second_samples, "gofund_rpc_requests_total", service="second", **HEALTH_OK) == 0
        assert not any(dict(labels).get("service") == "first" for _, labels in second_samples)
    finally:
        await first.stop()
        await second.stop()


# -- payments: the webhook backlog ----------------------------------------------------------------


async def test_payments_backlog_counts_a_webhook_event_it_cannot_apply_yet(
    postgres_port: int, mongodb_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(payments_main, "BACKLOG_REFRESH_S", 0.1)
    unreachable = f"127.0.0.1:{embedded.free_port()}"
    # Paystack and the other services are away: the event stays pending, retried.
    settings = settings_with(
        postgres_port,
        mongodb_port,
        tmp_path,
        paystack_base_url=f"http://{unreachable}",
        ledger_target=unreachable,
        goals_target=unreachable,
        identity_target=unreachable,
    )
    reference = f"ref_{uuid.uuid4().hex[:12]}"
    await insert_pending_payment(settings, reference)
    runner = ServiceRunner(payments_main.build, settings, port=0)
    port = await runner.start()
    try:
        empty = await scrape(runner)
        assert value(empty, "gofund_webhook_events", status="pending") == 0
        body = json.dumps(
            {"event": "charge.success", "data": {"reference": reference, "amount": 5000, "currency": "NGN"}}
        ).encode()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await payments_service_pb2_grpc.PaymentsServiceStub(channel).HandlePaystackWebhook(
                payments_service_pb2.HandlePaystackWebhookRequest(
                    body=httpbody_pb2.HttpBody(content_type="application/json", data=body)
                ),
                metadata=(("x-paystack-signature", sign(settings.paystack_secret_key, body)),),
            )
        samples = await scrape_until(
            runner,
            lambda s: (
                value(s, "gofund_webhook_events", status="pending") == 1
                and value(s, "gofund_webhook_oldest_pending_seconds") > 0
            ),
        )
        assert value(samples, "gofund_webhook_events", status="parked") == 0
        webhook = "/gofund.payments.v1.PaymentsService/HandlePaystackWebhook"
        assert value(samples, "gofund_rpc_requests_total", service="payments", method=webhook, code="OK") == 1
    finally:
        await runner.stop()


async def insert_pending_payment(settings: Settings, reference: str) -> None:
    """A payment awaiting its charge, as CreatePayment leaves it (the factory
    skips goals and Paystack, which this test keeps away)."""
    stamp = datetime.now(UTC)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    try:
        await client[settings.mongodb_database]["payments"].insert_one(
            {
                "paymentId": str(uuid.uuid4()),
                "paystackReference": reference,
                "userId": str(uuid.uuid4()),
                "goalId": str(uuid.uuid4()),
                "contributionId": str(uuid.uuid4()),
                "amount": 5000,
                "currency": "NGN",
                "status": "PENDING",
                "fingerprint": "test",
                "createdAt": stamp,
                "updatedAt": stamp,
            }
        )
    finally:
        await client.close()
