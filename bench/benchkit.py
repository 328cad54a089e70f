"""What the whole-platform benchmarks share: a stack on free ports, users, one line per figure."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import psutil
from gofund.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from gofund.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

from services.common.config import Settings
from services.common.headers import SERVICE_CREDENTIAL_HEADER
from services.payments.domain import sign
from services.stack import embedded
from services.stack.stack import Stack, free_port_environment

AMOUNT = 1000  # minor units per contribution
CREDENTIAL = ((SERVICE_CREDENTIAL_HEADER, Settings.model_fields["service_token"].default),)
PASSWORD = "bench password 1"  # noqa: S105 - a throwaway user on a throwaway stack


@contextlib.contextmanager
def platform(name: str, environment: Callable[[Path], dict[str, str]], *, durable: bool) -> Iterator[Stack]:
    """The whole platform on free ports in a temporary directory; stopped and the directory removed after."""
    root = Path(tempfile.mkdtemp(prefix=f"gofund-bench-{name}-"))
    stack = Stack(environment(root), durable=durable)
    print(f"starting the platform in {root} ...", flush=True)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def cpu_s(pid: int) -> float:
    """The CPU time a process has used so far (user and system), in seconds."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def platform_cpu_s(stack: Stack) -> dict[str, float]:
    """The CPU time each of the platform's processes has used so far, by name, a process's
    children included (PostgreSQL's work is done by its backends)."""
    used: dict[str, float] = {}
    for managed in stack.processes:
        if managed.process is None or managed.process.poll() is not None:
            continue
        process = psutil.Process(managed.process.pid)
        total = cpu_s(process.pid)
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):  # a backend that ended meanwhile
                total += cpu_s(child.pid)
        used[managed.name] = used.get(managed.name, 0.0) + total
    return used


def line(name: str, value: str, target: str) -> None:
    print(f"{name}: {value} (target {target})", flush=True)


def stack_overrides(root: Path, **extra: str) -> dict[str, str]:
    """Every server on a free port, data in `root`; BENCH_LOG_LEVEL=INFO keeps the per-call log lines."""
    overrides = free_port_environment(root)
    overrides.update(
        {
            "GOFUND_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "GOFUND_AUTH_RATE_PER_MINUTE": "1000",
            **extra,
        }
    )
    return overrides


def webhook_environment(root: Path) -> dict[str, str]:
    """A stack whose simulator's webhook deliveries fail (nothing listens) and wait an hour to
    retry: the benchmark delivers every event itself, when it chooses."""
    return stack_overrides(
        root,
        GOFUND_WEBHOOK_URL=f"http://127.0.0.1:{embedded.free_port()}/nowhere",
        GOFUND_PAYSTACK_SIM_RETRY_BASE_MS="3600000",
        GOFUND_PAYSTACK_SIM_SETTLE_MS="0",
    )


def user(stack: Stack) -> tuple[str, str]:
    """A registered, logged-in user: (user id, session token)."""
    name = "b" + uuid.uuid4().hex[:12]
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.identity_port}") as channel:
        identity = identity_service_pb2_grpc.IdentityServiceStub(channel)
        created = identity.CreateUser(
            identity_service_pb2.CreateUserRequest(email=f"{name}@example.com", username=name, password=PASSWORD)
        )
        token = identity.CreateSession(identity_service_pb2.CreateSessionRequest(login=name, password=PASSWORD)).token
    return created.user.id, token


def open_goal(stack: Stack, http: httpx.Client) -> tuple[str, str]:
    """A goal far from its target, opened through Envoy: (goal id, a payer's session token)."""
    edge = f"http://127.0.0.1:{stack.settings.envoy_port}"
    _, owner = user(stack)
    _, payer = user(stack)
    deadline = (datetime.now(UTC) + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    goal = http.post(
        f"{edge}/v1/goals",
        json={"title": "Bench goal", "target_amount": str(10**12), "currency": "NGN", "deadline": deadline},
        headers={"authorization": f"Bearer {owner}"},
    ).json()["goal"]
    return str(goal["id"]), payer


def paid_events(stack: Stack, http: httpx.Client, goal_id: str, payer: str, count: int) -> list[tuple[str, bytes]]:
    """`count` contributions of AMOUNT paid at checkout: (payment id, its charge.success body) each.
    The simulator's own delivery goes nowhere (see `webhook_environment`): the bench delivers the bodies."""
    edge = f"http://127.0.0.1:{stack.settings.envoy_port}"

    def one(_: int) -> tuple[str, bytes]:
        started = http.post(
            f"{edge}/v1/goals/{goal_id}/contributions",
            json={"amount": AMOUNT, "currency": "NGN", "idempotency_key": uuid.uuid4().hex},
            headers={"authorization": f"Bearer {payer}"},
        ).json()
        http.post(f"{started['authorization_url']}/pay", json={"outcome": "success"}).raise_for_status()
        events = http.get(
            f"{stack.settings.paystack_url}/_sim/events",
            params={"event": "charge.success", "reference": started["payment_reference"]},
        ).json()["data"]
        return started["contribution"]["payment_id"], json.dumps(events[0]["payload"]).encode()

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def ledger_account(ledger: ledger_service_pb2_grpc.LedgerInternalServiceStub, kind: int, entity_id: str) -> str:
    """The id of the ledger account of `kind` for `entity_id` in NGN (opened if new: OpenAccount is idempotent)."""
    request = ledger_service_pb2.OpenAccountRequest(account_type=kind, entity_id=entity_id, currency="NGN")
    return str(ledger.OpenAccount(request, metadata=CREDENTIAL).account.id)


class GoalBalance:
    """The goal's ledger balance as the internal WatchBalances stream pushes it: waiting for
    captures costs the platform nothing (polling the store or the ledger would load the very
    processes being measured)."""

    def __init__(self, stack: Stack, goal_id: str) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{stack.settings.ledger_port}")
        ledger = ledger_service_pb2_grpc.LedgerInternalServiceStub(self._channel)
        account = ledger_account(ledger, ledger_pb2.ACCOUNT_TYPE_GOAL, goal_id)
        self._changed = threading.Condition()
        self.balance = 0
        self._stream = ledger.WatchBalances(
            ledger_service_pb2.WatchBalancesRequest(account_ids=[account]), metadata=CREDENTIAL
        )
        self._follower = threading.Thread(target=self._follow, daemon=True)
        self._follower.start()

    def _follow(self) -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled by close()
            for change in self._stream:
                with self._changed:
                    self.balance = change.balance
                    self._changed.notify_all()

    def wait_for(self, balance: int, timeout_s: float = 120.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.balance >= balance, timeout=timeout_s):
                raise TimeoutError(f"the goal's balance stayed at {self.balance}, below {balance}")

    def close(self) -> None:
        self._stream.cancel()
        self._follower.join()
        self._channel.close()


def deliver(http: httpx.Client, stack: Stack, body: bytes) -> None:
    response = http.post(
        f"http://127.0.0.1:{stack.settings.envoy_port}/v1/webhooks/paystack",
        content=body,
        headers={
            "content-type": "application/json",
            "x-paystack-signature": sign(stack.settings.paystack_secret_key, body),
        },
    )
    response.raise_for_status()
