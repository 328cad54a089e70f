"""The whole platform as `gofund up` runs it: embedded stores, four services, real Envoy.

Reached the ways users reach it: JSON over HTTP through Envoy, native gRPC
through Envoy, and the real `grpcurl` binary against each server.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

from services.common.errors import error_info
from services.stack import embedded
from services.stack.envoy_config import SERVICES
from services.stack.stack import PORT_VARIABLES, Stack, StackError
from tests.conftest import sync_service_channel
from tests.e2e.conftest import BIN, edge, stack_environment
from tests.helpers import eventually_sync, reason


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "grpcurl"), "-plaintext", *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize("service", SERVICES)
def test_grpcurl_lists_each_servers_services_by_reflection(stack: Stack, service: str) -> None:
    port = getattr(stack.settings, f"{service}_port")
    result = grpcurl(f"127.0.0.1:{port}", "list")
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    capitalised = service.capitalize()
    assert {
        f"gofund.{service}.v1.{capitalised}Service",
        f"gofund.{service}.v1.{capitalised}InternalService",
        "grpc.health.v1.Health",
    } <= listed


def test_grpcurl_describes_a_service_by_reflection(stack: Stack) -> None:
    result = grpcurl(f"127.0.0.1:{stack.settings.ledger_port}", "describe", "gofund.ledger.v1.LedgerService")
    assert result.returncode == 0, result.stderr
    assert "rpc WatchBalance ( .gofund.ledger.v1.WatchBalanceRequest ) returns ( stream" in result.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_grpcurl_health_check_is_serving(stack: Stack, service: str) -> None:
    port = getattr(stack.settings, f"{service}_port")
    result = grpcurl(f"127.0.0.1:{port}", "grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


def test_envoy_reports_every_cluster_healthy(stack: Stack) -> None:
    assert stack.unhealthy_clusters() == []
    clusters = httpx.get(f"http://127.0.0.1:{stack.settings.envoy_admin_port}/clusters?format=json").json()
    assert sorted(c["name"] for c in clusters["cluster_statuses"]) == sorted(SERVICES)


def test_envoy_admin_is_on_loopback_only(stack: Stack) -> None:
    listeners = httpx.get(f"http://127.0.0.1:{stack.settings.envoy_admin_port}/server_info").json()
    assert listeners["command_line_options"]["base_id"] == str(stack.settings.envoy_admin_port)
    rendered = (stack.data_dir / "envoy.yaml").read_text()
    assert "address: 127.0.0.1, port_value: " + str(stack.settings.envoy_admin_port) in rendered


def test_json_route_reaches_the_service_and_renders_its_error_as_json(stack: Stack) -> None:
    response = httpx.get(f"{edge(stack)}/v1/accounts/not-a-uuid", timeout=10)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    detail = body["details"][0]
    assert detail["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert (detail["reason"], detail["domain"]) == ("INVALID_ACCOUNT_ID", "ledger.gofund")


def test_path_parameters_are_transcoded_and_not_found_is_404_json(stack: Stack) -> None:
    response = httpx.get(f"{edge(stack)}/v1/accounts/7d0c1c38-0000-4000-8000-000000000000/balance", timeout=10)
    assert response.status_code == 404
    detail = response.json()["details"][0]
    assert (detail["reason"], detail["domain"]) == ("ACCOUNT_NOT_FOUND", "ledger.gofund")


@contextlib.contextmanager
def ledger_internal(stack: Stack) -> Iterator[ledger_service_pb2_grpc.LedgerInternalServiceStub]:
    """The ledger's internal service, reached directly (as another service would)."""
    with sync_service_channel(f"127.0.0.1:{stack.settings.ledger_port}") as channel:
        yield ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)


def post_from_escrow(stack: Stack, goal: str, amount: int) -> str:
    """Money into a GOAL account from ESCROW, straight in the ledger (no Paystack behind it)."""
    with ledger_internal(stack) as internal:
        escrow = internal.OpenAccount(
            ledger_service_pb2.OpenAccountRequest(
                account_type=ledger_pb2.ACCOUNT_TYPE_ESCROW, entity_id="platform", currency="NGN"
            ),
            timeout=10,
        ).account.id
        transaction_id = f"e2e:{uuid.uuid4()}"
        internal.PostTransaction(
            ledger_service_pb2.PostTransactionRequest(
                transaction_id=transaction_id,
                postings=[
                    ledger_pb2.Posting(
                        account_id=escrow, entry_type=ledger_pb2.ENTRY_TYPE_DEBIT, amount=amount, currency="NGN"
                    ),
                    ledger_pb2.Posting(
                        account_id=goal, entry_type=ledger_pb2.ENTRY_TYPE_CREDIT, amount=amount, currency="NGN"
                    ),
                ],
            ),
            timeout=10,
        )
        return transaction_id


@contextlib.contextmanager
def funded_goal_account(stack: Stack, amount: int) -> Iterator[tuple[str, list[str]]]:
    """A GOAL account with money from nowhere, for ledger reads: the postings (listed, with any
    the test adds) are reversed afterwards, so the shared stack's ESCROW still equals what
    Paystack holds and its reconciliation stays clean."""
    with ledger_internal(stack) as internal:
        goal = str(
            internal.OpenAccount(
                ledger_service_pb2.OpenAccountRequest(
                    account_type=ledger_pb2.ACCOUNT_TYPE_GOAL, entity_id=str(uuid.uuid4()), currency="NGN"
                ),
                timeout=10,
            ).account.id
        )
    posted = [post_from_escrow(stack, goal, amount)]
    try:
        yield goal, posted
    finally:
        with ledger_internal(stack) as internal:
            for transaction_id in reversed(posted):
                internal.ReverseTransaction(
                    ledger_service_pb2.ReverseTransactionRequest(
                        transaction_id=f"{transaction_id}:undo", original_transaction_id=transaction_id,
                        description="the test is over",
                    ),
                    timeout=10,
                )  # fmt: skip


def test_goal_balance_reads_as_json_through_envoy(stack: Stack) -> None:
    with funded_goal_account(stack, 150_000) as (goal, _):
        read_goal_account(stack, goal)


def read_goal_account(stack: Stack, goal: str) -> None:
    account = httpx.get(f"{edge(stack)}/v1/accounts/{goal}", timeout=10).json()["account"]
    assert (account["id"], account["account_type"], account["currency"]) == (goal, "ACCOUNT_TYPE_GOAL", "NGN")
    balance = httpx.get(f"{edge(stack)}/v1/accounts/{goal}/balance", timeout=10).json()["balance"]
    assert (balance["balance"], balance["debits"], balance["credits"]) == ("150000", "0", "150000")
    entries = httpx.get(f"{edge(stack)}/v1/accounts/{goal}/entries", timeout=10).json()
    assert [e["entry_type"] for e in entries["entries"]] == ["ENTRY_TYPE_CREDIT"]
    assert entries["next_page_token"] == ""


WATCH_BALANCE = "/gofund.ledger.v1.LedgerService/WatchBalance"


def open_streams(stack: Stack, service: str, method: str) -> float:
    """The service's in-flight streams gauge for `method`, from its /metrics port (gRPC port + 1000)."""
    port = getattr(stack.settings, f"{service}_port") + 1000
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("gofund_rpc_in_flight_streams{") and f'method="{method}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_balance_watch_streams_ndjson_through_envoy_as_changes_happen(stack: Stack) -> None:
    with funded_goal_account(stack, 10) as (goal, posted):
        before = open_streams(stack, "ledger", WATCH_BALANCE)
        with httpx.stream("GET", f"{edge(stack)}/v1/accounts/{goal}/balance:watch", timeout=30) as response:
            assert response.status_code == 200
            assert open_streams(stack, "ledger", WATCH_BALANCE) == before + 1
            lines = response.iter_lines()
            first = json.loads(next(lines))
            assert (first["account_id"], first["balance"]) == (goal, "10")
            posted.append(post_from_escrow(stack, goal, 5))
            # Arrives while the stream is open, not at its end (heartbeats, which repeat
            # the first state, are skipped).
            second = next(m for m in map(json.loads, lines) if not m["heartbeat"])
            assert second["balance"] == "15"
            assert int(second["seq"]) > int(first["seq"])
        # The client went away: the ledger's watcher is gone with it.
        eventually_sync(
            lambda: open_streams(stack, "ledger", WATCH_BALANCE) == before, 10, "the ledger's watcher to be gone"
        )


def test_gofund_ledger_reconcile_reports_no_differences(stack: Stack) -> None:
    with funded_goal_account(stack, 42):
        env = {"GOFUND_LEDGER_PORT": str(stack.settings.ledger_port)}
        result = subprocess.run(
            [str(BIN / "gofund"), "ledger", "reconcile"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no differences" in result.stdout


def test_unknown_route_is_404_and_unknown_query_parameter_400(stack: Stack) -> None:
    assert httpx.get(f"{edge(stack)}/v1/nothing-here", timeout=10).status_code == 404
    assert httpx.get(f"{edge(stack)}/v1/goals?no_such_parameter=1", timeout=10).status_code == 400


def test_native_grpc_through_envoy_reaches_a_public_service(stack: Stack) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.envoy_port}") as channel:
        stub = ledger_service_pb2_grpc.LedgerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetAccount(ledger_service_pb2.GetAccountRequest(account_id="not-a-uuid"), timeout=10)
    error = raised.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert reason(error, "ledger.gofund") == "INVALID_ACCOUNT_ID"


def test_internal_service_is_not_reachable_through_envoy(stack: Stack) -> None:
    ledger_log = stack.services["ledger"].log_path
    reconciles_before = ledger_log.read_text().count("LedgerInternalService/Reconcile")
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.envoy_port}") as channel:
        stub = ledger_service_pb2_grpc.LedgerInternalServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Reconcile(ledger_service_pb2.ReconcileRequest(), timeout=10)
    # Envoy answers itself (no route); the ledger, which implements Reconcile,
    # never saw the call.
    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    assert error_info(raised.value) is None  # type: ignore[arg-type]
    assert ledger_log.read_text().count("LedgerInternalService/Reconcile") == reconciles_before
    response = httpx.post(f"{edge(stack)}/gofund.ledger.v1.LedgerInternalService/Reconcile", json={}, timeout=10)
    assert response.status_code == 404


def test_service_logs_carry_the_request_id_envoy_returned(stack: Stack) -> None:
    response = httpx.get(f"{edge(stack)}/v1/goals", headers={"x-request-id": "client-chosen"}, timeout=10)
    request_id = response.headers["x-request-id"]
    assert request_id != "client-chosen"  # the edge makes its own

    def logged() -> bool:
        lines = [json.loads(line) for line in stack.services["goals"].log_path.read_text().splitlines() if line]
        return any(
            line.get("method") == "/gofund.goals.v1.GoalsService/ListGoals" and line["request_id"] == request_id
            for line in lines
        )

    # The service writes its log line as the call ends, which may be just after the reply.
    eventually_sync(logged, 5, f"goals' log line for request {request_id}")


def test_second_stack_on_the_same_data_directory_is_refused(stack: Stack) -> None:
    overrides = dict(stack.overrides)
    second = Stack(overrides, durable=False)
    with pytest.raises(StackError, match="already running"):
        second.start()
    assert stack.unhealthy_clusters() == []


def test_stack_on_busy_ports_names_them(tmp_path: Path) -> None:
    overrides = stack_environment(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(overrides["GOFUND_ENVOY_PORT"])))
        holder.listen()
        with pytest.raises(StackError, match=f"GOFUND_ENVOY_PORT={overrides['GOFUND_ENVOY_PORT']}"):
            Stack(overrides, durable=False).start()


def descendants_alive(process: psutil.Process) -> list[psutil.Process]:
    return [child for child in process.children(recursive=True) if child.is_running()]


@contextlib.contextmanager
def gofund_up(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`gofund up` as a user runs it; stopped (and its children with it) whatever the test's outcome."""
    process = subprocess.Popen(
        [str(BIN / "gofund"), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
                process.kill()
                process.wait()


def test_gofund_up_starts_everything_runs_the_demo_and_ctrl_c_stops_it_cleanly(tmp_path: Path) -> None:
    overrides = stack_environment(tmp_path / "data")
    overrides["GOFUND_PAYSTACK_SIM_SETTLE_MS"] = "300"  # as on a laptop: transfers settle by themselves
    env = {**os.environ, **overrides}
    with gofund_up(env) as process:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "GoFund is up" in line or not line:
                break
        output = "".join(lines)
        # The first thing it says is the address a person opens.
        assert f"GoFund is up: open http://127.0.0.1:{overrides['GOFUND_ENVOY_PORT']}/ in a browser." in output, output
        children = psutil.Process(process.pid).children(recursive=True)
        # postgres, mongodb, smtp sink, Paystack simulator, four services, envoy (+ postgres workers)
        assert len(children) >= 9
        response = httpx.get(f"http://127.0.0.1:{overrides['GOFUND_ENVOY_PORT']}/v1/accounts/not-a-uuid", timeout=10)
        assert response.status_code == 400
        demo = subprocess.run(
            [str(BIN / "gofund"), "demo"], env=env, capture_output=True, text=True, timeout=180, check=False
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "[live] FUNDED" in demo.stdout
        assert "goal WITHDRAWN" in demo.stdout
        assert re.search(r"platform fees \(REVENUE\) +NGN 75\.00", demo.stdout)  # 5% of NGN 1,500.00
        assert re.search(r"goal \(GOAL\) +NGN 0\.00", demo.stdout)

        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, rest
        assert "Stopped." in rest
        assert [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []
        for name in PORT_VARIABLES:
            assert embedded.port_is_free(int(overrides[name])), name
        assert not (tmp_path / "data" / "stack.pid").exists()


def run_serve(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "gofund"), "serve", service],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_serve_in_production_without_configuration_fails_with_one_line() -> None:
    result = run_serve("ledger", {"GOFUND_ENV": "production"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "GOFUND_LEDGER_DATABASE_URL" in result.stderr


def test_serve_on_a_port_in_use_fails_with_one_line(stack: Stack) -> None:
    env = {
        "GOFUND_POSTGRES_PORT": str(stack.settings.postgres_port),
        "GOFUND_LEDGER_PORT": str(stack.settings.ledger_port),  # the running ledger holds it
    }
    result = run_serve("ledger", env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert errors == [
        f"gofund ledger: ledger: cannot listen on 127.0.0.1:{stack.settings.ledger_port}: "
        "the port is in use or not available"
    ]


def test_serve_in_production_with_an_unreachable_database_fails_with_one_line() -> None:
    closed = embedded.free_port()
    env = {
        "GOFUND_ENV": "production",
        "GOFUND_IDENTITY_TARGET": "127.0.0.1:1",
        "GOFUND_GOALS_TARGET": "127.0.0.1:1",
        "GOFUND_LEDGER_TARGET": "127.0.0.1:1",
        "GOFUND_PAYMENTS_TARGET": "127.0.0.1:1",
        "GOFUND_IDENTITY_DATABASE_URL": f"postgresql+psycopg://u:p@127.0.0.1:{closed}/identity",
        "GOFUND_GOALS_DATABASE_URL": f"postgresql+psycopg://u:p@127.0.0.1:{closed}/goals",
        "GOFUND_LEDGER_DATABASE_URL": f"postgresql+psycopg://u:p@127.0.0.1:{closed}/ledger",
        "GOFUND_MONGODB_URI": f"mongodb://127.0.0.1:{closed}/",
        "GOFUND_SERVICE_TOKEN": "t",
        "GOFUND_IDENTITY_SECRET": "k",
        "PAYSTACK_BASE_URL": "http://127.0.0.1:1",
        "PAYSTACK_SECRET_KEY": "sk",
        "GOFUND_SMTP_HOST": "127.0.0.1",
        "GOFUND_LEDGER_PORT": str(embedded.free_port()),
    }
    result = run_serve("ledger", env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(errors) == 1
    assert f"ledger: cannot reach the database at postgresql+psycopg://u:***@127.0.0.1:{closed}/ledger" in errors[0]
