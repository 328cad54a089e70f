"""The production front on a stack of its own: two replicas of every service, a short
route deadline, configured web origins and a small webhook bucket, so the edge's behaviours
can be seen: CORS, body limits, JSON local replies, deadlines the services obey,
replicas that die mid-traffic, the access log, and grpcurl through Envoy."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
from gofund.goals.v1 import goals_service_pb2, goals_service_pb2_grpc
from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from gofund.ledger.v1 import ledger_service_pb2, ledger_service_pb2_grpc
from gofund.payments.v1 import payments_service_pb2, payments_service_pb2_grpc

from services.common.db import psycopg_dsn
from services.stack.envoy_config import DESCRIPTOR, SERVICES
from services.stack.stack import Stack
from tests.e2e.conftest import BIN, edge, stack_environment
from tests.e2e.money import api, deliver, new_user, open_goal
from tests.helpers import eventually_sync, reason, reason_of

WEB_ORIGIN = "https://app.gofund.test"
ROUTE_DEADLINE_MS = 1500


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    overrides = stack_environment(tmp_path_factory.mktemp("edge"))
    overrides.update(
        {
            "GOFUND_EDGE_TIMEOUT_MS": str(ROUTE_DEADLINE_MS),
            "GOFUND_WEB_ORIGINS": f"{WEB_ORIGIN},https://admin.gofund.test",
            "GOFUND_WEBHOOK_RATE_PER_MINUTE": "5",
        }
    )
    platform = Stack(overrides, durable=False, replicas=2)
    platform.start()
    yield platform
    platform.stop()


def test_a_preflight_from_the_web_origin_is_allowed_and_others_are_not(front: Stack) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{edge(front)}/v1/goals",
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
            timeout=10,
        )

    allowed = preflight(WEB_ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == WEB_ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"]
    assert "access-control-allow-origin" not in preflight("https://evil.example").headers
    read = httpx.get(f"{edge(front)}/v1/goals", headers={"origin": WEB_ORIGIN}, timeout=10)
    assert read.headers["access-control-allow-origin"] == WEB_ORIGIN
    assert "x-request-id" in read.headers["access-control-expose-headers"]


def test_a_body_over_the_limit_is_413_json(front: Stack) -> None:
    response = httpx.post(
        f"{edge(front)}/v1/goals",
        content=json.dumps({"title": "x", "description": "d" * (2 * 1024 * 1024)}),
        headers={"content-type": "application/json"},
        timeout=20,
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert (response.json()["code"], reason_of(response)) == (3, "REQUEST_TOO_LARGE")


@pytest.mark.parametrize(
    "path",
    [
        "/gofund.ledger.v1.LedgerInternalService/PostTransaction",
        "/gofund.identity.v1.IdentityInternalService/Authenticate",
        "/gofund.goals.v1.GoalsInternalService/ListGoalBooks",
        "/gofund.payments.v1.PaymentsInternalService/InitializePayment",
    ],
)
def test_internal_services_are_404_json_at_the_edge(front: Stack, path: str) -> None:
    response = httpx.post(f"{edge(front)}{path}", json={}, timeout=10)
    assert response.status_code == 404
    assert reason_of(response) == "ROUTE_NOT_FOUND"


Metadata = tuple[tuple[str, str], ...]
INTERNAL_CALLS = {
    "identity": lambda c, m: identity_service_pb2_grpc.IdentityInternalServiceStub(c).GetUser(
        identity_service_pb2.GetUserRequest(user_id=str(uuid.uuid4())), metadata=m, timeout=10
    ),
    "goals": lambda c, m: goals_service_pb2_grpc.GoalsInternalServiceStub(c).ListGoalBooks(
        goals_service_pb2.ListGoalBooksRequest(page_size=1), metadata=m, timeout=10
    ),
    "ledger": lambda c, m: ledger_service_pb2_grpc.LedgerInternalServiceStub(c).Reconcile(
        ledger_service_pb2.ReconcileRequest(), metadata=m, timeout=10
    ),
    "payments": lambda c, m: payments_service_pb2_grpc.PaymentsInternalServiceStub(c).GetPayout(
        payments_service_pb2.GetPayoutRequest(payout_id=str(uuid.uuid4())), metadata=m, timeout=10
    ),
}


@pytest.mark.parametrize("service", SERVICES)
def test_a_user_token_on_an_internal_port_is_403(front: Stack, service: str) -> None:
    bearer: Metadata = (("authorization", f"Bearer {new_user(front).token}"),)
    port = getattr(front.settings, f"{service}_port")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as refused:
        INTERNAL_CALLS[service](channel, bearer)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(refused.value) == "USER_TOKEN_ON_INTERNAL_SERVICE"


def test_webhooks_beyond_their_bucket_get_a_json_429(front: Stack) -> None:
    answers = [deliver(front, b'{"data": {}}') for _ in range(8)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert reason_of(limited[0]) == "RATE_LIMITED"
    assert {a.status_code for a in answers} <= {400, 429}  # the others reached payments (malformed)


def logged_calls(front: Stack, service: str, method: str) -> list[dict[str, object]]:
    calls = []
    for path in sorted(front.logs_dir.glob(f"{service}*.log")):
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("message") == "rpc" and record.get("method") == method:
                    calls.append(record)
    return calls


def test_a_call_past_its_route_deadline_is_504_json_and_the_service_stopped_at_the_deadline(front: Stack) -> None:
    owner = new_user(front)
    goal = open_goal(front, owner, target=1000)
    # A lock the goal's read must wait for: the service hangs past the route's deadline.
    get_goal = "/gofund.goals.v1.GoalsService/GetGoal"
    with psycopg.connect(psycopg_dsn(front.settings.database_url("goals"))) as blocker:
        blocker.execute("LOCK TABLE goals IN ACCESS EXCLUSIVE MODE")
        response = api(front, "GET", f"/v1/goals/{goal['id']}")
        # Still holding the lock: the service can only have ended the call because
        # it saw the route's deadline (grpc-timeout), not because the read finished.
        eventually_sync(
            lambda: [
                c for c in logged_calls(front, "goals", get_goal) if c["code"] in ("CANCELLED", "DEADLINE_EXCEEDED")
            ],
            what="the goals service to end the call at the deadline",
        )
        blocker.rollback()
    assert response.status_code == 504, response.text
    assert response.headers["content-type"] == "application/json"
    # The service stops at the deadline it was given and answers DEADLINE_EXCEEDED
    # itself (an answer from upstream, which the edge never rewrites), rendered by the
    # transcoder; Envoy's own timeout (UPSTREAM_TIMEOUT) would come only after it.
    assert response.json() == {"code": 4, "message": "Deadline Exceeded", "details": []}


def test_killing_one_replica_of_each_service_loses_no_retried_request(front: Stack) -> None:
    owner = new_user(front)
    goal = open_goal(front, owner, target=100_000)
    paths = [f"/v1/goals/{goal['id']}", f"/v1/accounts/{goal['account_id']}/balance", "/v1/users/me"]
    results: list[tuple[float, int, int]] = []  # (time, attempts, final status)
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=10, headers=owner.auth) as client:
            while not stop.is_set():
                for path in paths:
                    attempts, status = 0, 0
                    while attempts < 3 and status != 200:  # a client that retries what failed, as ours do
                        if attempts:
                            time.sleep(0.1)
                        attempts += 1
                        status = client.get(f"{edge(front)}{path}").status_code
                    results.append((time.monotonic(), attempts, status))

    def killed_replicas_failed() -> bool:
        clusters = httpx.get(f"http://127.0.0.1:{front.settings.envoy_admin_port}/clusters?format=json", timeout=10)
        return all(
            sorted(h["health_status"].get("failed_active_health_check", False) for h in cluster["host_statuses"])
            == [False, True]
            for cluster in clusters.json()["cluster_statuses"]
        )

    def answered_since(count: int) -> int:
        return len(results) - count

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        eventually_sync(lambda: answered_since(0) >= len(paths), what="traffic through both replicas")
        killed_at = time.monotonic()
        for name in SERVICES:
            front.replica_processes[name][1].kill()
        # Envoy's active health check marks each killed replica failed; a round of requests
        # later, none started before that is still in flight.
        eventually_sync(killed_replicas_failed, 30, "Envoy to mark the killed replicas failed", interval_s=0.2)
        marked = len(results)
        eventually_sync(lambda: answered_since(marked) > len(paths), what="a round of requests after the marking")
        settled_at, settled = time.monotonic(), len(results)
        eventually_sync(lambda: answered_since(settled) >= 2 * len(paths), what="requests once settled")
    finally:
        stop.set()
        worker.join()
    assert results
    assert all(status == 200 for _, _, status in results), [r for r in results if r[2] != 200]
    after = [attempts for at, attempts, _ in results if at > settled_at]
    assert after
    assert set(after) == {1}  # Envoy no longer routes to the dead replicas
    assert any(at > killed_at for at, _, _ in results)
    clusters = httpx.get(f"http://127.0.0.1:{front.settings.envoy_admin_port}/clusters?format=json", timeout=10).json()
    for cluster in clusters["cluster_statuses"]:
        health = [h["health_status"].get("failed_active_health_check", False) for h in cluster["host_statuses"]]
        assert sorted(health) == [False, True], json.dumps(cluster["host_statuses"])
    for name in SERVICES:
        front.start_service(name, replica=1)
    front.wait_edge_healthy()


def test_the_access_log_is_json_lines_with_the_request_id_envoy_made(front: Stack) -> None:
    response = httpx.get(f"{edge(front)}/v1/goals?page_size=1", timeout=10)
    request_id = response.headers["x-request-id"]
    log_path: Path = front.logs_dir / "envoy.log"

    def logged() -> dict[str, object] | None:
        for line in log_path.read_text().splitlines():
            if request_id in line and line.startswith("{"):
                found: dict[str, object] = json.loads(line)
                return found
        return None

    entry = eventually_sync(logged, 10, f"the edge's access log line for request {request_id}")
    assert (entry["status"], entry["path"]) == (200, "/v1/goals?page_size=1")
    assert entry["grpc_method"] == "/gofund.goals.v1.GoalsService/ListGoals"


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "grpcurl"), *args], capture_output=True, text=True, timeout=30, check=False, env=os.environ
    )


def test_grpcurl_through_envoy_calls_with_a_token_and_follows_a_balance_stream(front: Stack) -> None:
    owner = new_user(front)
    goal = open_goal(front, owner, target=100_000)
    address = f"127.0.0.1:{front.settings.envoy_port}"
    me = grpcurl(
        "-plaintext", "-protoset", str(DESCRIPTOR), "-H", f"authorization: Bearer {owner.token}",
        address, "gofund.identity.v1.IdentityService/GetCurrentUser",
    )  # fmt: skip
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["user"]["id"] == owner.id
    watch = grpcurl(
        "-plaintext", "-emit-defaults", "-protoset", str(DESCRIPTOR), "-max-time", "2",
        "-d", json.dumps({"account_id": goal["account_id"]}),
        address, "gofund.ledger.v1.LedgerService/WatchBalance",
    )  # fmt: skip
    # The stream stays open until -max-time ends it; its first message is the current balance.
    decoder = json.JSONDecoder()
    first, _ = decoder.raw_decode(watch.stdout.lstrip())
    assert (first["accountId"], first["balance"]) == (goal["account_id"], "0")
    assert "DeadlineExceeded" in watch.stderr
